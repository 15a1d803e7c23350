"""ONNX graph transforms used by the INT8 ladders (pure functions over ``onnx.ModelProto``).

* :func:`quantize_embeddings` — word-embedding table to int8 with one scale per row; the
  dequantisation happens after the Gather, so only the looked-up rows are touched. This is
  what brings an INT8 bundle under 30% of the FP32 one (the table is half of MiniLM).
* :func:`smooth_quant` — SmoothQuant (Xiao et al. 2022): divide activation channels by ``s``
  and multiply the matching weight rows by ``s``, migrating activation outliers into weights.
* :func:`per_token_int8` — W8A8 with per-channel weights and *per-token* dynamic activation
  scales. Per-tensor dynamic scales are computed over the whole batch tensor, so a query's
  embedding changes with its neighbours and padding; per-token scales make every row
  independent (batch-invariant, hence safe to cache) and far more accurate on outlier tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class WeightMatMul:
    node: str  # node name
    input: str  # activation input name
    weight: str  # initializer name
    shape: tuple[int, int]  # (K, N)


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in model.graph.initializer}


def weight_matmuls(model: onnx.ModelProto) -> list[WeightMatMul]:
    """MatMul nodes whose second input is a 2-D float initializer (the dense layers)."""
    inits = initializers(model)
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        if w.data_type != TensorProto.FLOAT or len(w.dims) != 2:
            continue
        found.append(WeightMatMul(node.name, node.input[0], node.input[1], (w.dims[0], w.dims[1])))
    return found


def _replace_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(array, name))
            return
    raise KeyError(name)


def _prune_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input}
    used |= {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _ensure_opset(model: onnx.ModelProto, domain: str, version: int = 1) -> None:
    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, version))


def _insert_before(nodes: list[onnx.NodeProto], anchor: str, new: list[onnx.NodeProto]) -> None:
    idx = next(i for i, n in enumerate(nodes) if n.name == anchor)
    nodes[idx:idx] = new


def quantize_embeddings(model: onnx.ModelProto, *, min_rows: int = 1000) -> list[str]:
    """Store large Gather tables (word embeddings) as int8 + per-row scale. Returns tables done."""
    inits = initializers(model)
    nodes = list(model.graph.node)
    done: list[str] = []
    for node in list(nodes):
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        table = inits[node.input[0]]
        if table.data_type != TensorProto.FLOAT or len(table.dims) != 2 or table.dims[0] < min_rows:
            continue
        if node.attribute and any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        w = numpy_helper.to_array(table)
        scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
        q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
        base = node.input[0].replace("/", "_").replace(".", "_")
        q_name, s_name = f"{base}_int8", f"{base}_row_scale"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q, q_name),
                numpy_helper.from_array(scale.astype(np.float32), s_name),
                numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{base}_axes"),
            ]
        )
        ids, out = node.input[1], node.output[0]
        new = [
            helper.make_node("Gather", [q_name, ids], [f"{base}_q_rows"], name=f"{base}_gather_q"),
            helper.make_node("Cast", [f"{base}_q_rows"], [f"{base}_f_rows"], to=TensorProto.FLOAT),
            helper.make_node("Gather", [s_name, ids], [f"{base}_scales"], name=f"{base}_gather_s"),
            helper.make_node("Unsqueeze", [f"{base}_scales", f"{base}_axes"], [f"{base}_scales_u"]),
            helper.make_node(
                "Mul", [f"{base}_f_rows", f"{base}_scales_u"], [out], name=f"{base}_dequant"
            ),
        ]
        idx = nodes.index(node)
        nodes[idx : idx + 1] = new
        done.append(node.input[0])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _prune_initializers(model)
    return done


def smoothing_factors(
    act_absmax: np.ndarray, weights: Iterable[np.ndarray], alpha: float
) -> np.ndarray:
    """SmoothQuant's ``s_k = max|X_k|^α / max|W_k|^(1-α)`` over every weight sharing input X."""
    w_absmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    s = np.power(np.maximum(act_absmax, 1e-5), alpha) / np.power(
        np.maximum(w_absmax, 1e-5), 1 - alpha
    )
    return np.clip(s, 1e-3, 1e3).astype(np.float32)


def smooth_quant(
    model: onnx.ModelProto,
    act_absmax: dict[str, np.ndarray],
    alpha: float,
    *,
    exclude: Iterable[str] = (),
) -> int:
    """Apply SmoothQuant to every group of weight MatMuls sharing an input. Returns groups done.

    The activation side becomes one ``Mul(X, 1/s)`` per group (it cannot be folded into a
    preceding LayerNorm: its output also feeds the residual branch).
    """
    exclude = set(exclude)
    inits = initializers(model)
    groups: dict[str, list[WeightMatMul]] = {}
    for mm in weight_matmuls(model):
        if mm.node not in exclude and mm.input in act_absmax:
            groups.setdefault(mm.input, []).append(mm)
    nodes = list(model.graph.node)
    by_name = {n.name: n for n in nodes}
    for x, members in groups.items():
        ws = [numpy_helper.to_array(inits[m.weight]) for m in members]
        s = smoothing_factors(act_absmax[x], ws, alpha)
        inv_name = f"{x}_sq_inv".replace("/", "_")
        out_name = f"{x}_smoothed".replace("/", "_")
        model.graph.initializer.append(
            numpy_helper.from_array((1.0 / s).astype(np.float32), inv_name)
        )
        mul = helper.make_node("Mul", [x, inv_name], [out_name], name=f"{out_name}_mul")
        for m, w in zip(members, ws, strict=True):
            _replace_initializer(model, m.weight, (w * s[:, None]).astype(np.float32))
            by_name[m.node].input[0] = out_name
        _insert_before(nodes, members[0].node, [mul])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(groups)


def quantize_weight_per_channel(w: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per output column: ``w ≈ q * scale``, ``|q| <= 2**(bits-1) - 1``. ``bits=7``
    (reduce-range) keeps u8×s8 pair sums inside int16, so AVX2's saturating kernel is exact."""
    top = float(2 ** (bits - 1) - 1)
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / top
    q = np.clip(np.round(w / scale), -top, top).astype(np.int8)
    return q, scale.astype(np.float32)


def per_token_int8(
    model: onnx.ModelProto, *, exclude: Iterable[str] = (), weight_bits: int = 8
) -> int:
    """Rewrite weight MatMuls to W8A8 with per-token dynamic activation scales. Returns count.

    Activation path per distinct input X (shared by e.g. Q, K, V):
        s = max(|X|, axis=-1) / 127        (via ReduceMax/ReduceMin: no |X| temporary)
        Xq = QuantizeLinear(X * (1/s), scale=1, zero_point=128)   uint8 (U8S8 GEMM kernels)
    per MatMul:  Y = MatMulIntegerToFloat(Xq, Wq, 1, w_scale, 128) * s
    """
    exclude = set(exclude)
    inits = initializers(model)
    targets = [m for m in weight_matmuls(model) if m.node not in exclude]
    if not targets:
        return 0
    g = model.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "ptq_inv127"),
            numpy_helper.from_array(np.array(1e-8, np.float32), "ptq_eps"),
            numpy_helper.from_array(np.array(1.0, np.float32), "ptq_one"),
            numpy_helper.from_array(np.array(128, np.uint8), "ptq_zp"),
        ]
    )
    nodes = list(g.node)
    quantized_inputs: dict[str, str] = {}
    for mm in targets:
        x = mm.input
        p = x.replace("/", "_").replace(".", "_") + "_ptq"
        if x not in quantized_inputs:
            quant = [
                helper.make_node("ReduceMax", [x], [f"{p}_hi"], axes=[-1], keepdims=1),
                helper.make_node("ReduceMin", [x], [f"{p}_lo"], axes=[-1], keepdims=1),
                helper.make_node("Abs", [f"{p}_lo"], [f"{p}_lo_abs"]),
                helper.make_node("Max", [f"{p}_hi", f"{p}_lo_abs", "ptq_eps"], [f"{p}_absmax"]),
                helper.make_node("Mul", [f"{p}_absmax", "ptq_inv127"], [f"{p}_s"]),
                helper.make_node("Reciprocal", [f"{p}_s"], [f"{p}_inv"]),
                helper.make_node("Mul", [x, f"{p}_inv"], [f"{p}_scaled"]),
                helper.make_node(
                    "QuantizeLinear",
                    [f"{p}_scaled", "ptq_one", "ptq_zp"],
                    [f"{p}_q"],
                    name=f"{p}_quant",
                ),
            ]
            _insert_before(nodes, mm.node, quant)
            quantized_inputs[x] = p
        p = quantized_inputs[x]
        w = numpy_helper.to_array(inits[mm.weight])
        wq, ws = quantize_weight_per_channel(w, weight_bits)
        base = mm.node.replace("/", "_").replace(".", "_")
        g.initializer.extend(
            [numpy_helper.from_array(wq, f"{base}_wq"), numpy_helper.from_array(ws, f"{base}_ws")]
        )
        idx = next(i for i, n in enumerate(nodes) if n.name == mm.node)
        original = nodes[idx]
        nodes[idx : idx + 1] = [
            helper.make_node(
                "MatMulIntegerToFloat",
                [f"{p}_q", f"{base}_wq", "ptq_one", f"{base}_ws", "ptq_zp"],
                [f"{base}_acc"],
                name=f"{base}_int8",
                domain=MS_DOMAIN,
            ),
            helper.make_node(
                "Mul", [f"{base}_acc", f"{p}_s"], [original.output[0]], name=f"{base}_rescale"
            ),
        ]
    del g.node[:]
    g.node.extend(nodes)
    _prune_initializers(model)
    _ensure_opset(model, MS_DOMAIN)
    return len(targets)


def expose_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the given intermediate tensors (for calibration)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    for name in names:
        if name not in existing:
            copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return copy

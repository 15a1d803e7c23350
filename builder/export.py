"""Export a clean ONNX master with optimum and bake the task's head into the graph.

For embeddings the pooling (mean / cls / max, as the sentence-transformers config says) and the
L2 normalisation become graph nodes, so every backend returns the final vector and the edge
does no numeric post-processing. The master is validated against torch at batch sizes and
sequence lengths other than the export example (dynamic-axis exports that silently
specialise on the example shape are a known failure).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from builder.errors import ExportError
from builder.source import ModelSource

EMBEDDING_OUTPUT = "sentence_embedding"
LOGITS_OUTPUT = "logits"
OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    path: Path  # model.onnx (FP32 master)
    input_names: list[str]
    output_name: str
    dim: int
    opset: int


def _optimum_task(task: str) -> str:
    return "feature-extraction" if task == "embedding" else "text-classification"


def export_master(source: ModelSource, task: str, out_dir: Path) -> ExportResult:
    """Export with optimum into ``out_dir/model.onnx``; bake pooling+normalise for embeddings."""
    from optimum.exporters.onnx import main_export

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shipyard-export-") as tmp:
        quiet = io.StringIO()
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                main_export(
                    str(source.path),
                    output=tmp,
                    task=_optimum_task(task),
                    library_name="transformers",
                    opset=OPSET,
                    do_validation=False,
                    device="cpu",
                )
        except Exception as exc:
            raise ExportError(
                f"optimum could not export {source.path} for task {task} "
                f"({source.model_type}): {exc}"
            ) from exc
        finally:
            logging.disable(previous)
        exported = Path(tmp) / "model.onnx"
        if not exported.is_file():
            raise ExportError(f"optimum produced no model.onnx for {source.path}")
        model = onnx.load(str(exported))
    input_names = [i.name for i in model.graph.input]
    if task == "embedding":
        model = add_pooling_head(model, source.pooling)
        output_name, dim = EMBEDDING_OUTPUT, source.hidden_size
    else:
        output_name = LOGITS_OUTPUT
        dim = _static_dim(model, LOGITS_OUTPUT)
    dest = out_dir / "model.onnx"
    onnx.save(model, str(dest))
    onnx.checker.check_model(str(dest))
    return ExportResult(
        path=dest, input_names=input_names, output_name=output_name, dim=dim, opset=OPSET
    )


def _static_dim(model: onnx.ModelProto, output: str) -> int:
    for out in model.graph.output:
        if out.name == output:
            dims = out.type.tensor_type.shape.dim
            if dims and dims[-1].HasField("dim_value"):
                return int(dims[-1].dim_value)
    return 0


def add_pooling_head(model: onnx.ModelProto, pooling: str) -> onnx.ModelProto:
    """Replace ``last_hidden_state`` as output with pooled, L2-normalised ``sentence_embedding``."""
    graph = model.graph
    hidden = "last_hidden_state"
    if hidden not in [o.name for o in graph.output]:
        raise ExportError(f"exported graph has no {hidden} output to pool")
    f32 = TensorProto.FLOAT
    nodes = []
    inits = [
        helper.make_tensor("pool_axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("pool_axis_last", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("pool_eps_count", f32, [], [1e-9]),
        helper.make_tensor("pool_eps_norm", f32, [], [1e-12]),
        helper.make_tensor("pool_neg_big", f32, [], [-1e9]),
        helper.make_tensor("pool_one", f32, [], [1.0]),
        helper.make_tensor("pool_cls_index", TensorProto.INT64, [], [0]),
    ]
    if pooling == "cls":
        nodes.append(helper.make_node("Gather", [hidden, "pool_cls_index"], ["pooled"], axis=1))
    else:
        nodes += [
            helper.make_node("Unsqueeze", ["attention_mask", "pool_axis_last"], ["pool_mask_i"]),
            helper.make_node("Cast", ["pool_mask_i"], ["pool_mask"], to=f32),
        ]
        if pooling == "max":
            nodes += [
                helper.make_node("Sub", ["pool_one", "pool_mask"], ["pool_inv"]),
                helper.make_node("Mul", ["pool_inv", "pool_neg_big"], ["pool_bias"]),
                helper.make_node("Add", [hidden, "pool_bias"], ["pool_masked"]),
                helper.make_node(
                    "ReduceMax", ["pool_masked", "pool_axis1"], ["pooled"], keepdims=0
                ),
            ]
        else:
            nodes += [
                helper.make_node("Mul", [hidden, "pool_mask"], ["pool_weighted"]),
                helper.make_node(
                    "ReduceSum", ["pool_weighted", "pool_axis1"], ["pool_sum"], keepdims=0
                ),
                helper.make_node(
                    "ReduceSum", ["pool_mask", "pool_axis1"], ["pool_count_raw"], keepdims=0
                ),
                helper.make_node("Max", ["pool_count_raw", "pool_eps_count"], ["pool_count"]),
                helper.make_node("Div", ["pool_sum", "pool_count"], ["pooled"]),
            ]
    nodes += [
        helper.make_node("Mul", ["pooled", "pooled"], ["pool_sq"]),
        helper.make_node("ReduceSum", ["pool_sq", "pool_axis_last"], ["pool_sqsum"], keepdims=1),
        helper.make_node("Sqrt", ["pool_sqsum"], ["pool_norm_raw"]),
        helper.make_node("Max", ["pool_norm_raw", "pool_eps_norm"], ["pool_norm"]),
        helper.make_node("Div", ["pooled", "pool_norm"], [EMBEDDING_OUTPUT]),
    ]
    graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    graph.initializer.extend(t for t in inits if t.name in used)  # only what this pooling uses
    out_info = helper.make_tensor_value_info(EMBEDDING_OUTPUT, f32, ["batch_size", None])
    kept = [o for o in graph.output if o.name != hidden]
    del graph.output[:]
    graph.output.extend([*kept, out_info])
    return model


def validation_shapes(max_length: int) -> list[tuple[int, int]]:
    """(batch, seq_len) pairs that differ from optimum's export example (2 x 16)."""
    shapes = [(1, 3), (3, 17), (8, 64), (2, min(max_length, 256))]
    return [(b, min(s, max_length)) for b, s in shapes]


def validate_against_torch(
    onnx_path: Path,
    reference_fn,
    input_names: list[str],
    output_name: str,
    max_length: int,
    vocab_size: int,
) -> float:
    """Max abs deviation between ONNX (onnxruntime) and torch on random inputs of several shapes."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, seq in validation_shapes(max_length):
        ids = rng.integers(1000, min(vocab_size, 30000), size=(batch, seq), dtype=np.int64)
        mask = np.ones((batch, seq), dtype=np.int64)
        if batch > 1:  # ragged: the last rows are padded
            for row in range(1, batch):
                keep = max(2, seq - row * seq // (batch + 1))
                mask[row, keep:] = 0
                ids[row, keep:] = 0
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        got = sess.run([output_name], {k: feeds[k] for k in input_names})[0]
        want = reference_fn(feeds)
        if got.shape != want.shape:
            raise ExportError(
                f"ONNX output shape {got.shape} != torch {want.shape} at batch {batch} x seq {seq}: "
                "the export specialised on its example shape"
            )
        worst = max(worst, float(np.abs(got - want).max()))
    if worst > 1e-3:
        raise ExportError(f"ONNX master deviates from torch by {worst:.2e} (> 1e-3)")
    return worst

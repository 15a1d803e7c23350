"""onnx-int8: onnxruntime CPU INT8, a step-down ladder ordered fastest first.

1. ``dynamic-per-channel``: onnxruntime's dynamic quantization (per-channel int8 weights,
   per-tensor uint8 activations computed at run time). Fast, but the activation scale spans
   the whole batch, so results depend on batch neighbours and padding.
2. ``per-token-sq0.5``: SmoothQuant α=0.5 + per-channel int8 weights + per-token dynamic
   activations (batch-invariant).
3. ``per-token-sq0.5+fp-ffn-out-edge``: as 2, with the first and last layers' FFN down
   projections (the outlier-heavy GELU outputs) kept in FP32.
4. ``per-token-sq0.5+fp-ffn-out``: every FFN down projection in FP32.

Every candidate also stores the word-embedding table as int8 rows (size target: <= 30% of FP32).
U8S8 GEMMs need VNNI (x86) or dot-product (arm64) to be exact: without them the AVX2 kernel's
16-bit intermediate sums can saturate, so that is what the bundle requires.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime

from artifacts.manifest import Requires
from artifacts.targets import INT8_DOT_PRODUCT_ISA
from builder.quantize import graph
from builder.runners import OrtRunner
from builder.targets.base import Artifact, BuildContext, Candidate
from builder.targets.onnx_fp32 import ORT_MIN

REQUIRES = Requires(
    onnxruntime=ORT_MIN, cpu_isa_any=list(INT8_DOT_PRODUCT_ISA), arch=["x86_64", "aarch64"]
)


def ffn_down_projections(model: onnx.ModelProto) -> list[str]:
    """Dense layers that project back down (K > N): the FFN outputs of a transformer block."""
    return [m.node for m in graph.weight_matmuls(model) if m.shape[0] > m.shape[1]]


def _artifact(
    ctx: BuildContext, model: onnx.ModelProto, workdir: Path, config: str, precision: str = "int8"
) -> Artifact:
    path = workdir / "model.onnx"
    onnx.save(model, str(path))
    return Artifact(
        files={"model.onnx": path},
        runner=OrtRunner(path, ctx.master.output_name, threads=ctx.threads),
        requires=REQUIRES,
        runtime={
            "graph_optimization": "ORT_ENABLE_ALL",
            "quantization": config,
            "built_with": onnxruntime.__version__,
        },
    )


def _dynamic(ctx: BuildContext):
    def make(workdir: Path) -> Artifact:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        model = onnx.load(str(ctx.master.path))
        graph.quantize_embeddings(model)
        staged = workdir / "embeddings_int8.onnx"
        onnx.save(model, str(staged))
        out = workdir / "dynamic.onnx"
        quantize_dynamic(
            str(staged),
            str(out),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return _artifact(ctx, onnx.load(str(out)), workdir, "dynamic-per-channel")

    return make


def _per_token(ctx: BuildContext, alpha: float, keep_fp: str):
    def make(workdir: Path) -> Artifact:
        model = onnx.load(str(ctx.master.path))
        downs = ffn_down_projections(model)
        exclude = {"none": [], "edge": downs[:1] + downs[-1:], "all": downs}[keep_fp]
        graph.quantize_embeddings(model)
        graph.smooth_quant(model, ctx.activation_stats().absmax, alpha, exclude=exclude)
        graph.per_token_int8(model, exclude=exclude)
        return _artifact(
            ctx, model, workdir, f"per-token-sq{alpha}", "mixed" if exclude else "int8"
        )

    return make


def candidates(ctx: BuildContext) -> list[Candidate]:
    return [
        Candidate("dynamic-per-channel", _dynamic(ctx)),
        Candidate("per-token-sq0.5", _per_token(ctx, 0.5, "none")),
        Candidate("per-token-sq0.5+fp-ffn-out-edge", _per_token(ctx, 0.5, "edge")),
        Candidate("per-token-sq0.5+fp-ffn-out", _per_token(ctx, 0.5, "all")),
    ]

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
16-bit intermediate sums can saturate, so that is what the bundle requires. A build host without
those instructions could not judge such a bundle (its own kernels saturate), so there the ladder
builds *reduce-range* variants instead (``-w7``: 7-bit weights, whose u8×s7 pair sums fit in
int16): exact on every x86_64/arm64 CPU, so they also run on AVX2-only nodes.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime

from artifacts.manifest import Requires
from artifacts.probe import host_cpu_isa
from artifacts.targets import INT8_DOT_PRODUCT_ISA
from builder.quantize import graph
from builder.runners import OrtRunner
from builder.targets.base import Artifact, BuildContext, Candidate
from builder.targets.onnx_fp32 import ORT_MIN

REQUIRES = Requires(
    onnxruntime=ORT_MIN, cpu_isa_any=list(INT8_DOT_PRODUCT_ISA), arch=["x86_64", "aarch64"]
)
# reduce-range bundles: exact without dot-product instructions too
REQUIRES_REDUCE_RANGE = Requires(
    onnxruntime=ORT_MIN,
    cpu_isa_any=[*INT8_DOT_PRODUCT_ISA, "avx2", "asimd"],
    arch=["x86_64", "aarch64"],
)


def host_has_int8_dot_product(isa: list[str] | None = None) -> bool:
    return bool(set(host_cpu_isa() if isa is None else isa) & set(INT8_DOT_PRODUCT_ISA))


def ffn_down_projections(model: onnx.ModelProto) -> list[str]:
    """Dense layers that project back down (K > N): the FFN outputs of a transformer block."""
    return [m.node for m in graph.weight_matmuls(model) if m.shape[0] > m.shape[1]]


def _artifact(
    ctx: BuildContext,
    model: onnx.ModelProto,
    workdir: Path,
    config: str,
    precision: str = "int8",
    *,
    reduce_range: bool = False,
) -> Artifact:
    path = workdir / "model.onnx"
    onnx.save(model, str(path))
    return Artifact(
        files={"model.onnx": path},
        runner=OrtRunner(path, ctx.master.output_name, threads=ctx.threads),
        requires=REQUIRES_REDUCE_RANGE if reduce_range else REQUIRES,
        runtime={
            "graph_optimization": "ORT_ENABLE_ALL",
            "quantization": config,
            "built_with": onnxruntime.__version__,
        },
    )


def _dynamic(ctx: BuildContext, reduce_range: bool = False):
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
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        config = "dynamic-per-channel" + ("-w7" if reduce_range else "")
        return _artifact(ctx, onnx.load(str(out)), workdir, config, reduce_range=reduce_range)

    return make


def _per_token(ctx: BuildContext, alpha: float, keep_fp: str, reduce_range: bool = False):
    def make(workdir: Path) -> Artifact:
        model = onnx.load(str(ctx.master.path))
        downs = ffn_down_projections(model)
        exclude = {"none": [], "edge": downs[:1] + downs[-1:], "all": downs}[keep_fp]
        graph.quantize_embeddings(model)
        graph.smooth_quant(model, ctx.activation_stats().absmax, alpha, exclude=exclude)
        graph.per_token_int8(model, exclude=exclude, weight_bits=7 if reduce_range else 8)
        return _artifact(
            ctx,
            model,
            workdir,
            f"per-token-sq{alpha}" + ("-w7" if reduce_range else ""),
            "mixed" if exclude else "int8",
            reduce_range=reduce_range,
        )

    return make


def candidates(ctx: BuildContext) -> list[Candidate]:
    """The ladder this host can judge: 8-bit weights where it has INT8 dot-product
    instructions, reduce-range (7-bit weights) where it does not."""
    rr = not host_has_int8_dot_product()
    w = "-w7" if rr else ""
    return [
        Candidate(f"dynamic-per-channel{w}", _dynamic(ctx, rr)),
        Candidate(f"per-token-sq0.5{w}", _per_token(ctx, 0.5, "none", rr)),
        Candidate(f"per-token-sq0.5{w}+fp-ffn-out-edge", _per_token(ctx, 0.5, "edge", rr)),
        Candidate(f"per-token-sq0.5{w}+fp-ffn-out", _per_token(ctx, 0.5, "all", rr)),
    ]

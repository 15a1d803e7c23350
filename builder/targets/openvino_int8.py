"""openvino-int8: OpenVINO IR with INT8 weights and INT8 activations; the gate picks the rung.

1. ``nncf-sq0.8``: NNCF static post-training INT8 (transformer preset, SmoothQuant α=0.8, Fast
   Bias Correction) calibrated on the real length mix; the fastest at batch 32. Static
   per-tensor activation scales are batch-invariant but coarse: text unlike the calibration mix
   (non-Latin scripts, one-word queries) falls outside them.
2. ``nncf-weights-int8+dyn-act64``: INT8 weights (NNCF weight compression) and activations
   quantized *at run time* by the CPU plugin, per token in groups of 64 channels
   (``DYNAMIC_QUANTIZATION_GROUP_SIZE``): INT8 GEMMs whose activation scales follow each token,
   so nothing depends on the calibration mix or the batch neighbours. Measured on all-MiniLM-L6-v2
   against the held-out gate splits: recall@10 overlap 0.972 vs 0.955 for rung 3, cosine min
   0.997 vs 0.984, and as fast (faster at batch 1). Group size, measured in one run: 32 is as
   accurate and ~12% slower at batch 32; 128 is ~5% faster but loses 0.008 overlap; a whole
   token (384) fails the gate.
3. ``nncf-sq0.8+fp-ffn-out-edge``: rung 1 with the first and last layers' FFN down projections
   (the outlier-heavy GELU outputs) kept out of INT8 (for models where rung 2 fails).
4. ``weights-only-int8``: INT8 weights, f32 activations (dynamic quantization off): the
   near-lossless last resort, shipped as precision "mixed".

Inference precision is pinned to f32 (OpenVINO would silently run BF16 on CPUs that have it)
and, like the group size, recorded in ``target.runtime``: the gate, the verifying worker and
every edge node compile with exactly these settings (:mod:`artifacts.openvino_config`). On a
build host with native BF16 the passing candidate is also gated compiled in BF16, and
``bf16_gated`` records the verdict: nodes with native BF16 then run it in BF16. The
layers kept out of INT8 store their weights as FP16 (computed in f32) to hold the bundle under
30% of FP32 (the gate runs the saved IR).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path

import onnx

from artifacts.manifest import Requires
from artifacts.openvino_config import (
    BF16_GATED_KEY,
    DYNAMIC_QUANTIZATION_KEY,
    PRECISION_KEY,
    cpu_has_native_bf16,
)
from builder.quantize import graph
from builder.runners import OpenVinoRunner, Runner
from builder.targets.base import Artifact, BuildContext, Candidate
from builder.targets.onnx_int8 import ffn_down_projections

INFERENCE_PRECISION = "f32"
DYNAMIC_GROUP = 64  # channels per run-time activation scale (per token)


def _requires() -> Requires:
    import openvino as ov

    major = ov.get_version().split(".")[0].split("-")[0]
    return Requires(openvino=f">={major}.0", openvino_devices=["CPU"], arch=["x86_64", "aarch64"])


def store_fp_weights_as_fp16(model, min_bytes: int = 1 << 20) -> int:
    """Large FP32 constants left after quantization (the layers kept out of INT8) are stored
    as FP16 + Convert: half the bytes, still computed in f32. ``compress_to_fp16`` skips them
    in quantized models, so this is done explicitly."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    done = 0
    for op in model.get_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() != ov.Type.f32:
            continue
        if op.get_byte_size() < min_bytes:
            continue
        half = ops.convert(ops.constant(op.get_data().astype(np.float16)), "f32")
        for consumer in list(op.output(0).get_target_inputs()):
            consumer.replace_source_output(half.output(0))
        done += 1
    return done


def _nncf(ctx: BuildContext, keep_fp: str, alpha: float = 0.8):
    def make(workdir: Path) -> Artifact:
        import nncf
        import openvino as ov
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

        from artifacts.textproc import collate

        model = onnx.load(str(ctx.master.path))
        graph.quantize_embeddings(model)
        downs = ffn_down_projections(model)
        ignored = {
            "none": [],
            "edge": downs[:1] + downs[-1:],
        }[keep_fp]
        staged = workdir / "embeddings_int8.onnx"
        onnx.save(model, str(staged))
        ov_model = ov.convert_model(str(staged))
        names = [p.get_any_name() for p in ov_model.inputs]
        encoded = ctx.encoder.encode(ctx.calibration)
        dataset = nncf.Dataset([collate([e], names) for e in encoded])
        nncf.set_log_level(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws its own progress bars
            quantized = nncf.quantize(
                ov_model,
                dataset,
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(encoded),
                ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
                advanced_parameters=AdvancedQuantizationParameters(
                    smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)
                ),
            )
        store_fp_weights_as_fp16(quantized)
        xml = workdir / "model.xml"
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
        return _artifact(
            ctx,
            xml,
            f"nncf-transformer-sq{alpha}",
            fp_layers=len(ignored),
            precision="mixed" if ignored else "int8",
        )

    return make


def _artifact(
    ctx: BuildContext,
    xml: Path,
    quantization: str,
    *,
    fp_layers: int,
    precision: str,
    dynamic_group: int | None = None,
) -> Artifact:
    import openvino as ov

    runtime = {
        PRECISION_KEY: INFERENCE_PRECISION,
        "quantization": quantization,
        "fp_layers": str(fp_layers),
        "built_with": ov.get_version(),
    }
    if dynamic_group is not None:
        runtime[DYNAMIC_QUANTIZATION_KEY] = str(dynamic_group)
    alternates: dict[str, Callable[[], Runner]] = {}
    if ctx.bf16 and cpu_has_native_bf16():
        bf16 = runtime | {PRECISION_KEY: "bf16"}
        alternates[BF16_GATED_KEY] = lambda: OpenVinoRunner(
            xml, ctx.master.output_name, threads=ctx.threads, runtime=bf16
        )
    return Artifact(
        files={"model.xml": xml, "model.bin": xml.with_suffix(".bin")},
        runner=OpenVinoRunner(
            xml, ctx.master.output_name, threads=ctx.threads, runtime=dict(runtime)
        ),
        requires=_requires(),
        runtime=runtime,
        precision=precision,
        alternates=alternates,
    )


def _weights_int8(ctx: BuildContext, dynamic_group: int):
    """INT8 weights (NNCF weight compression); activations quantized at run time per token in
    groups of ``dynamic_group`` channels, or kept f32 when 0 (then shipped as "mixed" so nobody
    mistakes it for full INT8)."""

    def make(workdir: Path) -> Artifact:
        import nncf
        import openvino as ov

        model = onnx.load(str(ctx.master.path))
        graph.quantize_embeddings(model)
        staged = workdir / "embeddings_int8.onnx"
        onnx.save(model, str(staged))
        nncf.set_log_level(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):
            compressed = nncf.compress_weights(
                ov.convert_model(str(staged)),
                mode=nncf.CompressWeightsMode.INT8_SYM,
                ignored_scope=nncf.IgnoredScope(types=["Gather"]),  # embeddings: int8 already
            )
        xml = workdir / "model.xml"
        ov.save_model(compressed, str(xml), compress_to_fp16=False)
        return _artifact(
            ctx,
            xml,
            "nncf-weights-int8-sym" + (f"+dynamic-act{dynamic_group}" if dynamic_group else ""),
            fp_layers=0,
            precision="int8" if dynamic_group else "mixed",
            dynamic_group=dynamic_group,
        )

    return make


def candidates(ctx: BuildContext) -> list[Candidate]:
    return [
        Candidate("nncf-sq0.8", _nncf(ctx, "none")),
        Candidate(f"nncf-weights-int8+dyn-act{DYNAMIC_GROUP}", _weights_int8(ctx, DYNAMIC_GROUP)),
        Candidate("nncf-sq0.8+fp-ffn-out-edge", _nncf(ctx, "edge")),
        Candidate("weights-only-int8", _weights_int8(ctx, 0)),
    ]

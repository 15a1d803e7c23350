"""tensorrt-fp16 / tensorrt-int8: TensorRT engines, built only on a GPU worker.

Written against both TensorRT 10 and 11:

* TensorRT 11 removed every precision builder flag (FP16, INT8, ...): networks are always
  strongly typed, so precision lives in the ONNX graph — ModelOpt AutoCast for FP16 and
  ModelOpt explicit Q/DQ for INT8.
* TensorRT 10.12+ deprecates weak typing; we opt into ``STRONGLY_TYPED`` there and use the
  same ONNX pre-steps. TensorRT 10.0–10.11 keep the weak-typing flags (FP16, plus INT8 for
  Q/DQ graphs).

The decisions are the pure function :func:`plan_build` (tested on CPU); the GPU part only
carries them out. Optimisation profiles come from the expected traffic shapes; the timing
cache is reused across builds; hardware/version compatibility is recorded in ``requires``.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from packaging.version import InvalidVersion, Version

from artifacts.manifest import Requires
from builder.errors import TargetBuildError
from builder.targets.base import Artifact, BuildContext, Candidate


@dataclass(frozen=True)
class Profile:
    """One optimisation profile for every [batch, sequence] input."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]


@dataclass(frozen=True)
class TrtPlan:
    tensorrt: str
    precision: str  # fp16 | int8
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # names of trt.BuilderFlag members to set
    autocast_fp16: bool  # ModelOpt AutoCast pre-step (FP32 ONNX -> mixed FP16 ONNX)
    qdq_int8: bool  # ModelOpt explicit Q/DQ pre-step
    hardware_compatibility: str  # none | ampere_plus | same_compute_capability
    version_compatible: bool
    profiles: tuple[Profile, ...]

    def requires(self, compute_capability: str, gpu_memory_mb: int = 0) -> Requires:
        return Requires(
            cuda=True,
            compute_capability=compute_capability,
            hardware_compatibility=self.hardware_compatibility,  # type: ignore[arg-type]
            tensorrt=self.tensorrt,
            tensorrt_version_compatible=self.version_compatible,
            gpu_memory_mb=gpu_memory_mb,
        )


def traffic_profiles(max_batch: int, max_seq: int) -> tuple[Profile, ...]:
    """Search traffic: single short queries (latency) and batches of titles (throughput)."""
    return (
        Profile(min=(1, 1), opt=(1, min(16, max_seq)), max=(max_batch, max_seq)),
        Profile(min=(1, 1), opt=(min(32, max_batch), min(64, max_seq)), max=(max_batch, max_seq)),
    )


def plan_build(  # noqa: PLR0913 - an engine's build coordinates, by keyword
    tensorrt_version: str,
    precision: str,
    *,
    compute_capability: str,
    max_batch: int,
    max_seq: int,
    hardware_compatible: bool = False,
    version_compatible: bool = False,
) -> TrtPlan:
    """Decide how to build an engine with this TensorRT version. Pure; raises on the impossible."""
    if precision not in ("fp16", "int8"):
        raise TargetBuildError(f"TensorRT precision {precision!r} is not supported (fp16, int8)")
    try:
        version = Version(tensorrt_version)
    except InvalidVersion as exc:
        raise TargetBuildError(f"cannot parse TensorRT version {tensorrt_version!r}") from exc
    if version.major < 10:
        raise TargetBuildError(
            f"TensorRT {tensorrt_version} is too old: Shipyard builds with TensorRT 10 or 11"
        )
    major, minor = (int(p) for p in compute_capability.split(".")[:2])
    hw = "none"
    if hardware_compatible:
        if (major, minor) < (8, 0):
            raise TargetBuildError(
                f"hardware-compatible (Ampere+) engines must be built on sm_80 or newer, not sm_{major}{minor}"
            )
        hw = "ampere_plus"
    strongly_typed = version >= Version("10.12")
    flags: list[str] = []
    if not strongly_typed:  # TensorRT 10.0-10.11: weak typing
        flags.append("FP16")
        if precision == "int8":
            flags.append("INT8")
    if version_compatible:
        flags.append("VERSION_COMPATIBLE")
    return TrtPlan(
        tensorrt=str(tensorrt_version),
        precision=precision,
        strongly_typed=strongly_typed,
        builder_flags=tuple(flags),
        autocast_fp16=strongly_typed and precision == "fp16",
        qdq_int8=precision == "int8",
        hardware_compatibility=hw,
        version_compatible=version_compatible,
        profiles=traffic_profiles(max_batch, max_seq),
    )


def preflight() -> str | None:
    """None if this host can build engines, else why not (shown as the target's reason)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed on this build host (pip install 'shipyard[gpu]'); TensorRT targets build only on a GPU worker"
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this build host; TensorRT targets build only on a GPU worker"
    try:
        import torch

        if not torch.cuda.is_available():
            return "CUDA is not available to torch on this build host"
    except ImportError:
        return "torch is not installed"
    return None


def _gpu() -> tuple[str, str, int]:
    import torch

    props = torch.cuda.get_device_properties(0)
    return props.name, f"{props.major}.{props.minor}", int(props.total_memory // (1 << 20))


def _prepare_onnx(ctx: BuildContext, plan: TrtPlan, workdir: Path) -> Path:
    """Move precision into the graph (TensorRT 11 / strongly typed)."""
    import onnx

    if plan.qdq_int8:
        from modelopt.onnx.quantization import quantize

        from artifacts.textproc import collate

        names = ctx.master.input_names
        encoded = ctx.encoder.encode(ctx.calibration[:256])
        seq = max(len(e) for e in encoded)
        feeds = collate(encoded, names)
        pad = {k: np.pad(v, ((0, 0), (0, seq - v.shape[1]))) for k, v in feeds.items()}
        out = workdir / "model_qdq.onnx"
        quantize(
            str(ctx.master.path),
            quantize_mode="int8",
            calibration_data=pad,
            calibration_method="entropy",
            high_precision_dtype="fp16",
            output_path=str(out),
        )
        return out
    if plan.autocast_fp16:
        from modelopt.onnx import autocast

        converted = autocast.convert_to_mixed_precision(
            onnx_path=str(ctx.master.path), low_precision_type="fp16", keep_io_types=True
        )
        out = workdir / "model_fp16.onnx"
        onnx.save(converted, str(out))
        return out
    return ctx.master.path


def build_engine(
    onnx_path: Path, plan: TrtPlan, input_names: list[str], timing_cache: Path
) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TargetBuildError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.hardware_compatibility == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    for prof in plan.profiles:
        profile = builder.create_optimization_profile()
        for name in input_names:
            profile.set_shape(name, prof.min, prof.opt, prof.max)
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TargetBuildError("TensorRT failed to build the engine (see the worker log)")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


class TensorRTRunner:
    """Runs an engine with torch-allocated CUDA buffers (the builder host has torch)."""

    def __init__(self, plan_bytes: bytes, output: str, input_names: list[str]) -> None:
        import tensorrt as trt
        import torch

        self._torch = torch
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan_bytes)
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self.input_names = input_names
        self._output = output

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        ctx = self._context
        keep = []
        for name in self.input_names:
            t = torch.from_numpy(feeds[name]).to(device="cuda", dtype=torch.int64).contiguous()
            keep.append(t)
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        shape = tuple(ctx.get_tensor_shape(self._output))
        out = torch.empty(shape, dtype=torch.float32, device="cuda")
        ctx.set_tensor_address(self._output, out.data_ptr())
        ctx.execute_async_v3(self._stream.cuda_stream)
        self._stream.synchronize()
        return out.cpu().numpy()


def _engine_candidate(ctx: BuildContext, precision: str, label: str) -> Candidate:
    def make(workdir: Path) -> Artifact:
        import tensorrt as trt

        _name, cc, mem = _gpu()
        plan = plan_build(
            trt.__version__,
            precision,
            compute_capability=cc,
            max_batch=ctx.max_batch,
            max_seq=ctx.source.max_length,
        )
        onnx_path = _prepare_onnx(ctx, plan, workdir)
        engine = build_engine(
            onnx_path, plan, ctx.master.input_names, ctx.workdir.parent / "trt-timing.cache"
        )
        path = workdir / "model.plan"
        path.write_bytes(engine)
        return Artifact(
            files={"model.plan": path},
            runner=TensorRTRunner(engine, ctx.master.output_name, ctx.master.input_names),
            requires=plan.requires(cc, gpu_memory_mb=min(mem, 2048)),
            runtime={
                "strongly_typed": str(plan.strongly_typed),
                "flags": ",".join(plan.builder_flags),
            },
            precision=precision,
        )

    return Candidate(label, make)


def candidates_fp16(ctx: BuildContext) -> list[Candidate]:
    return [_engine_candidate(ctx, "fp16", "fp16 (AutoCast, strongly typed)")]


def candidates_int8(ctx: BuildContext) -> list[Candidate]:
    return [_engine_candidate(ctx, "int8", "int8 Q/DQ (ModelOpt entropy calibration)")]

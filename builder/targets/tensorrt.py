"""tensorrt-fp16 / tensorrt-int8: TensorRT engines, built only on a GPU worker.

Written against both TensorRT 10 and 11:

* TensorRT 11 removed every precision builder flag (FP16, INT8, ...): networks are always
  strongly typed, so precision lives in the ONNX graph — ModelOpt AutoCast for FP16 and
  ModelOpt explicit Q/DQ for INT8.
* TensorRT 10.12+ deprecates weak typing; we opt into ``STRONGLY_TYPED`` there and use the
  same ONNX pre-steps. TensorRT 10.0–10.11 keep the weak-typing flags (FP16, plus INT8 for
  Q/DQ graphs).

The decisions are pure functions (:func:`plan_build`, :func:`timing_cache_path`,
:func:`artifacts.trt_session.choose_profile`, tested on CPU); the GPU part only carries them
out, and checks the result of every TensorRT call (an error names the call and the shapes).
Optimisation profiles come from the expected traffic shapes and are selected per request by
shape; the timing cache is kept per (GPU model, compute capability, TensorRT version), merged
under a file lock and written atomically; ``--trt-compat`` builds version- and/or
hardware-compatible engines and records it, with the build platform and GPU, in ``requires``.
Calibration (INT8 Q/DQ) and AutoCast's reference data are the same token-id batches the CPU
targets calibrate on (:func:`builder.quantize.calibration.calibration_batches`).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import platform
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from packaging.version import InvalidVersion, Version

from artifacts import atomic
from artifacts.manifest import Requires
from artifacts.probe import cpu_arch
from artifacts.targets import INTEGRATED_GPU_CC, parse_trt_compat
from artifacts.trt_session import (
    Profile,
    TrtCallError,
    bind_inputs,
    engine_profiles,
    open_engine,
    traffic_profiles,
)
from builder.errors import TargetBuildError
from builder.targets.base import Artifact, BuildContext, Candidate

__all__ = ["Profile", "TrtPlan", "plan_build", "timing_cache_path", "traffic_profiles"]

HW_LEVEL = {"hardware": "ampere_plus", "same-cc": "same_compute_capability"}


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

    def requires(
        self,
        compute_capability: str,
        gpu_name: str = "",
        gpu_memory_mb: int = 0,
        *,
        os: str = "",
        arch: str = "",
    ) -> Requires:
        """What a node needs to run the engine: the build platform (engines are not portable
        across platforms), the GPU, the TensorRT version and the compatibility built in."""
        return Requires(
            cuda=True,
            compute_capability=compute_capability,
            gpu_name=gpu_name or None,
            hardware_compatibility=self.hardware_compatibility,  # type: ignore[arg-type]
            tensorrt=self.tensorrt,
            tensorrt_version_compatible=self.version_compatible,
            gpu_memory_mb=gpu_memory_mb,
            os=[os] if os else [],
            arch=[arch] if arch else [],
        )


def plan_build(
    tensorrt_version: str,
    precision: str,
    *,
    compute_capability: str,
    max_batch: int,
    max_seq: int,
    compat: Sequence[str] = (),
) -> TrtPlan:
    """Decide how to build an engine with this TensorRT version. Pure; raises on the impossible."""
    if precision not in ("fp16", "int8"):
        raise TargetBuildError(f"TensorRT precision {precision!r} is not supported (fp16, int8)")
    try:
        version = Version(tensorrt_version)
        wanted = parse_trt_compat(compat)
    except InvalidVersion as exc:
        raise TargetBuildError(f"cannot parse TensorRT version {tensorrt_version!r}") from exc
    except ValueError as exc:
        raise TargetBuildError(str(exc)) from exc
    if version.major < 10:
        raise TargetBuildError(
            f"TensorRT {tensorrt_version} is too old: Shipyard builds with TensorRT 10 or 11"
        )
    major, minor = (int(p) for p in compute_capability.split(".")[:2])
    hw = next((HW_LEVEL[w] for w in wanted if w in HW_LEVEL), "none")
    if hw == "ampere_plus" and ((major, minor) < (8, 0) or compute_capability in INTEGRATED_GPU_CC):
        raise TargetBuildError(
            "hardware-compatible (Ampere+) engines must be built on a discrete sm_80 or newer "
            f"GPU, not sm_{major}{minor}"
        )
    strongly_typed = version >= Version("10.12")
    flags: list[str] = []
    if not strongly_typed:  # TensorRT 10.0-10.11: weak typing
        flags.append("FP16")
        if precision == "int8":
            flags.append("INT8")
    if "version" in wanted:
        flags.append("VERSION_COMPATIBLE")
    return TrtPlan(
        tensorrt=str(tensorrt_version),
        precision=precision,
        strongly_typed=strongly_typed,
        builder_flags=tuple(flags),
        autocast_fp16=strongly_typed and precision == "fp16",
        qdq_int8=precision == "int8",
        hardware_compatibility=hw,
        version_compatible="version" in wanted,
        profiles=traffic_profiles(max_batch, max_seq),
    )


def timing_cache_path(directory: Path, gpu_name: str, compute_capability: str, trt: str) -> Path:
    """One timing cache per (GPU model, compute capability, TensorRT version): timings from
    another GPU or TensorRT release are worthless or refused."""
    key = f"{gpu_name}-sm{compute_capability}-trt{trt}".lower()
    return Path(directory) / f"trt-timing-{re.sub(r'[^a-z0-9.]+', '-', key).strip('-')}.cache"


def timing_cache_dir() -> Path:
    """Kept across builds on this worker (``$SHIPYARD_TRT_CACHE``, else the user's cache
    directory), private to its user."""
    base = (
        os.environ.get("SHIPYARD_TRT_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "shipyard"
        / "trt-timing"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def save_timing_cache(path: Path, ours: bytes, merge: Callable[[bytes, bytes], bytes]) -> None:
    """Merge this build's timings into the file under an exclusive lock and replace it
    atomically: concurrent builds each add theirs, and a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = path.read_bytes() if path.exists() else b""
            atomic.write_bytes(path, merge(current, ours) if current else ours)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def preflight() -> str | None:
    """None if this host can build engines, else why not (shown as the target's reason)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed on this build host (pip install 'shipyard[gpu-builder]'); TensorRT targets build only on a GPU worker"
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


class _Batches:
    """An onnxruntime CalibrationDataReader over the CPU targets' calibration batches."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def _prepare_onnx(ctx: BuildContext, plan: TrtPlan, workdir: Path) -> Path:
    """Move precision into the graph (TensorRT 11 / strongly typed), fed with the same
    representative token-id batches (length mix, real vocabulary) as the CPU targets."""
    import onnx

    from builder.quantize.calibration import calibration_batches

    batches = calibration_batches(ctx.encoder, ctx.calibration, ctx.master.input_names)
    if plan.qdq_int8:
        from modelopt.onnx.quantization import quantize

        out = workdir / "model_qdq.onnx"
        quantize(
            str(ctx.master.path),
            quantize_mode="int8",
            calibration_data_reader=_Batches(batches),
            calibration_method="entropy",
            high_precision_dtype="fp16",
            output_path=str(out),
        )
        return out
    if plan.autocast_fp16:
        from modelopt.onnx import autocast

        reference = workdir / "autocast-reference"  # a directory of .npz: one per batch
        reference.mkdir(exist_ok=True)
        for i, feeds in enumerate(batches):
            np.savez(reference / f"{i:04d}.npz", **feeds)  # type: ignore[arg-type]
        converted = autocast.convert_to_mixed_precision(
            onnx_path=str(ctx.master.path),
            low_precision_type="fp16",
            keep_io_types=True,
            calibration_data=str(reference),
        )
        out = workdir / "model_fp16.onnx"
        onnx.save(converted, str(out))
        return out
    return ctx.master.path


def _hardware_level(trt, plan: TrtPlan):
    name = {"ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
    level = getattr(trt.HardwareCompatibilityLevel, name[plan.hardware_compatibility], None)
    if level is None:
        raise TargetBuildError(
            f"TensorRT {trt.__version__} has no HardwareCompatibilityLevel."
            f"{name[plan.hardware_compatibility]}"
        )
    return level


def _configure(trt, builder, config, plan: TrtPlan, input_names: list[str]) -> None:
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.hardware_compatibility != "none":
        config.hardware_compatibility_level = _hardware_level(trt, plan)
    for prof in plan.profiles:
        profile = builder.create_optimization_profile()
        for name in input_names:
            profile.set_shape(name, prof.min, prof.opt, prof.max)
        if config.add_optimization_profile(profile) < 0:
            raise TargetBuildError(
                f"TensorRT add_optimization_profile refused {prof.min}/{prof.opt}/{prof.max}"
            )


def _timing_cache(config, cached: bytes) -> None:
    """Use the stored timings if TensorRT accepts them (same GPU and version), else start empty."""
    if cached and config.set_timing_cache(
        config.create_timing_cache(cached), ignore_mismatch=False
    ):
        return
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise TargetBuildError("TensorRT set_timing_cache refused an empty timing cache")


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
    _configure(trt, builder, config, plan, input_names)
    _timing_cache(config, timing_cache.read_bytes() if timing_cache.exists() else b"")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TargetBuildError("TensorRT build_serialized_network failed (see the worker log)")

    def merge(current: bytes, ours: bytes) -> bytes:
        merged = config.create_timing_cache(current)
        if merged is None or not merged.combine(config.create_timing_cache(ours), False):
            return ours  # the stored file is corrupt or from elsewhere: ours replaces it
        return bytes(merged.serialize())

    save_timing_cache(timing_cache, bytes(config.get_timing_cache().serialize()), merge)
    return bytes(serialized)


class TensorRTRunner:
    """Runs an engine with torch-allocated CUDA buffers (the builder host has torch)."""

    def __init__(
        self, plan_bytes: bytes, output: str, input_names: list[str], *, version_compatible: bool
    ) -> None:
        import tensorrt as trt
        import torch

        self._torch = torch
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        try:
            self._engine, self._context = open_engine(
                trt, self._runtime, plan_bytes, version_compatible=version_compatible
            )
        except TrtCallError as exc:
            raise TargetBuildError(str(exc)) from exc
        self._profiles = engine_profiles(self._engine, input_names[0])
        self._stream = torch.cuda.Stream()
        self.input_names = input_names
        self._output = output

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._torch.cuda.stream(self._stream):  # copies and the engine on one stream
            return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        tensors = {
            n: torch.from_numpy(feeds[n]).to(device="cuda", dtype=torch.int64).contiguous()
            for n in self.input_names
        }
        out = None
        try:
            _, shape = bind_inputs(
                self._context,
                self._profiles,
                [(n, tuple(t.shape), t.data_ptr()) for n, t in tensors.items()],
                self._stream.cuda_stream,
                self._output,
            )
            out = torch.empty(shape, dtype=torch.float32, device="cuda")
            if not self._context.set_tensor_address(self._output, out.data_ptr()):
                raise TrtCallError(f"TensorRT set_tensor_address({self._output!r}) failed")
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise TrtCallError(f"TensorRT execute_async_v3 failed for input shape {shape}")
        except TrtCallError as exc:
            raise TargetBuildError(str(exc)) from exc
        self._stream.synchronize()
        return out.cpu().numpy()


def _engine_candidate(ctx: BuildContext, precision: str, label: str) -> Candidate:
    def make(workdir: Path) -> Artifact:
        import tensorrt as trt

        name, cc, mem = _gpu()
        plan = plan_build(
            trt.__version__,
            precision,
            compute_capability=cc,
            max_batch=ctx.max_batch,
            max_seq=ctx.source.max_length,
            compat=ctx.trt_compat,
        )
        onnx_path = _prepare_onnx(ctx, plan, workdir)
        cache = timing_cache_path(timing_cache_dir(), name, cc, trt.__version__)
        engine = build_engine(onnx_path, plan, ctx.master.input_names, cache)
        path = workdir / "model.plan"
        path.write_bytes(engine)
        return Artifact(
            files={"model.plan": path},
            runner=TensorRTRunner(
                engine,
                ctx.master.output_name,
                ctx.master.input_names,
                version_compatible=plan.version_compatible,
            ),
            requires=plan.requires(
                cc, name, min(mem, 2048), os=platform.system().lower(), arch=cpu_arch()
            ),
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

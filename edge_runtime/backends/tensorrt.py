"""TensorRT engines (``model.plan``) with the TensorRT Python runtime and cuda-python buffers.

Written against the TensorRT 10/11 runtime API (named I/O tensors, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), every call's result checked
(:mod:`artifacts.trt_session`); the optimisation profile is chosen per request by its shape, and
version-compatible engines (which embed a lean runtime) are opened with host code allowed —
the bundle's signature was verified before this runs. Where TensorRT, cuda-python or a GPU is
missing, opening refuses with the reason, and the selector moves on to the next candidate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from artifacts.digests import sha256_bytes
from artifacts.trt_session import TrtCallError, bind_inputs, engine_profiles, open_engine
from edge_runtime.backends.base import BackendSettings
from edge_runtime.errors import BackendFailure, BackendUnavailable


def _check(err) -> None:
    code = err[0] if isinstance(err, tuple) else err
    if int(code) != 0:
        raise BackendFailure(f"CUDA error {int(code)}")


def _verified_plan(bundle_dir: Path, manifest) -> bytes:
    """The plan's bytes, checked against the signed manifest's digest *after* reading them:
    the bytes TensorRT deserializes (with host code allowed, for version-compatible engines)
    are the verified ones, even if the file changed since the bundle was verified."""
    name = manifest.model_file()
    data = (bundle_dir / name).read_bytes()
    listed = next((f.sha256 for f in manifest.files if f.path == name), None)
    if listed is None or sha256_bytes(data) != listed:
        raise BackendUnavailable(f"{name} does not match the signed manifest's digest")
    return data


class TensorRTBackend:
    def __init__(self, bundle_dir: Path, manifest, settings: BackendSettings) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable(
                "TensorRT is not installed on this node (pip install 'shipyard[gpu-edge]')"
            ) from exc
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python
            except ImportError as exc:
                raise BackendUnavailable(
                    "cuda-python is not installed (pip install 'shipyard[gpu-edge]')"
                ) from exc
        self._trt, self._cudart = trt, cudart
        self.target = manifest.bundle_key()
        self.seq_multiple = 1
        self.device = "gpu"
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count == 0:
            raise BackendUnavailable("no CUDA device is visible to this process")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        try:
            engine, self._context = open_engine(
                trt,
                self._runtime,
                _verified_plan(bundle_dir, manifest),
                version_compatible=manifest.target.requires.tensorrt_version_compatible,
            )
        except TrtCallError as exc:
            raise BackendUnavailable(str(exc)) from exc
        self._engine = engine
        err, self._stream = cudart.cudaStreamCreate()
        _check(err)
        self.input_names = [
            n
            for n in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
            if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        ]
        self._output = manifest.io.output
        self._profiles = engine_profiles(engine, self.input_names[0])
        self._info = {"engine": "tensorrt", "version": trt.__version__, "device": "cuda:0"}

    def _malloc(self, nbytes: int) -> int:
        err, ptr = self._cudart.cudaMalloc(max(1, nbytes))
        _check(err)
        return ptr

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ptrs: list[int] = []
        try:
            bindings = []
            for name in self.input_names:
                arr = np.ascontiguousarray(feeds[name], dtype=np.int64)
                ptr = self._malloc(arr.nbytes)
                ptrs.append(ptr)
                _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream))
                bindings.append((name, tuple(arr.shape), ptr))
            _, shape = bind_inputs(
                self._context, self._profiles, bindings, self._stream, self._output
            )
            out = np.empty(shape, dtype=np.float32)
            optr = self._malloc(out.nbytes)
            ptrs.append(optr)
            if not self._context.set_tensor_address(self._output, optr):
                raise BackendFailure(f"TensorRT set_tensor_address({self._output!r}) failed")
            if not self._context.execute_async_v3(self._stream):
                raise BackendFailure(f"TensorRT execute_async_v3 failed for input shape {shape}")
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, optr, out.nbytes, d2h, self._stream))
            _check(cudart.cudaStreamSynchronize(self._stream))
            return out
        except TrtCallError as exc:
            raise BackendFailure(str(exc)) from exc
        finally:
            cudart.cudaStreamSynchronize(self._stream)  # nothing in flight on freed memory
            for p in ptrs:
                cudart.cudaFree(p)

    def describe(self) -> dict[str, str]:
        return dict(self._info)

    def close(self) -> None:
        self._context = None
        self._engine = None


def open_backend(bundle_dir, manifest, settings: BackendSettings) -> TensorRTBackend:
    return TensorRTBackend(Path(bundle_dir), manifest, settings)

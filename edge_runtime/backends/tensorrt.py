"""TensorRT engines (``model.plan``) with the TensorRT Python runtime and cuda-python buffers.

Written against the TensorRT 10/11 runtime API (named I/O tensors, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). Where TensorRT, cuda-python or a GPU is missing,
opening refuses with the reason, and the selector moves on to the next candidate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.backends.base import BackendSettings
from edge_runtime.errors import BackendFailure, BackendUnavailable


def _check(err) -> None:
    code = err[0] if isinstance(err, tuple) else err
    if int(code) != 0:
        raise BackendFailure(f"CUDA error {int(code)}")


class TensorRTBackend:
    def __init__(self, bundle_dir: Path, manifest, settings: BackendSettings) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable(
                "TensorRT is not installed on this node (pip install 'shipyard[gpu]')"
            ) from exc
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python
            except ImportError as exc:
                raise BackendUnavailable(
                    "cuda-python is not installed (pip install cuda-python)"
                ) from exc
        self._trt, self._cudart = trt, cudart
        self.target = manifest.target.id
        self.seq_multiple = 1
        self.device = "gpu"
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count == 0:
            raise BackendUnavailable("no CUDA device is visible to this process")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = self._runtime.deserialize_cuda_engine(
            (bundle_dir / manifest.model_file()).read_bytes()
        )
        if engine is None:
            raise BackendUnavailable(
                "TensorRT refused the engine (built for another GPU or TensorRT version than this node has)"
            )
        self._engine = engine
        self._context = engine.create_execution_context()
        err, self._stream = cudart.cudaStreamCreate()
        _check(err)
        self.input_names = [
            n
            for n in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
            if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        ]
        self._output = manifest.io.output
        self._info = {"engine": "tensorrt", "version": trt.__version__, "device": "cuda:0"}

    def _malloc(self, nbytes: int) -> int:
        err, ptr = self._cudart.cudaMalloc(max(1, nbytes))
        _check(err)
        return ptr

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ptrs = []
        try:
            for name in self.input_names:
                arr = np.ascontiguousarray(feeds[name], dtype=np.int64)
                ptr = self._malloc(arr.nbytes)
                ptrs.append(ptr)
                _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream))
                self._context.set_input_shape(name, arr.shape)
                self._context.set_tensor_address(name, ptr)
            shape = tuple(self._context.get_tensor_shape(self._output))
            out = np.empty(shape, dtype=np.float32)
            optr = self._malloc(out.nbytes)
            ptrs.append(optr)
            self._context.set_tensor_address(self._output, optr)
            if not self._context.execute_async_v3(self._stream):
                raise BackendFailure("TensorRT execution failed")
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, optr, out.nbytes, d2h, self._stream))
            _check(cudart.cudaStreamSynchronize(self._stream))
            return out
        finally:
            for p in ptrs:
                cudart.cudaFree(p)

    def describe(self) -> dict[str, str]:
        return dict(self._info)

    def close(self) -> None:
        self._context = None
        self._engine = None


def open_backend(bundle_dir, manifest, settings: BackendSettings) -> TensorRTBackend:
    return TensorRTBackend(Path(bundle_dir), manifest, settings)

"""OpenVINO: CPU (or GPU/NPU when present) with the bundle's pinned inference precision.

OpenVINO runs FP32 IRs in BF16 by default on CPUs that have it; the manifest records the
precision the gate measured and we apply exactly that — BF16 only where the build gated it too
(``bf16_gated``) and this CPU runs it natively (:mod:`artifacts.openvino_config`). One infer request per concurrent
caller (requests are not thread-safe; the compiled model is).

With dynamic shapes the CPU plugin prepares kernels per input shape: measured here on MiniLM,
a batch-1 query of a length never seen before takes ~12 ms, a repeated one ~2.4 ms. So
sequence lengths are rounded up to a multiple of ``SEQ_MULTIPLE`` (masked padding does not
change outputs: the builder's gate checks batch/padding invariance) and the common shapes are
prepared at load.
"""

from __future__ import annotations

import os
import queue
from pathlib import Path

import numpy as np

from artifacts.openvino_config import compile_config, cpu_has_native_bf16
from edge_runtime.backends.base import BackendSettings
from edge_runtime.errors import BackendUnavailable

SEQ_MULTIPLE = 16


class OpenVinoBackend:
    def __init__(self, bundle_dir: Path, manifest, settings: BackendSettings) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable("OpenVINO is not installed (pip install openvino)") from exc
        self.target = manifest.bundle_key()
        self.device = "cpu"
        self.seq_multiple = SEQ_MULTIPLE
        core = ov.Core()
        device = "CPU"
        threads = settings.threads or (os.cpu_count() or 1)
        config = compile_config(
            manifest.target.runtime,
            threads=threads,
            streams=settings.streams,
            native_bf16=cpu_has_native_bf16(core),
        )
        precision = str(config["INFERENCE_PRECISION_HINT"])
        self._compiled = core.compile_model(str(bundle_dir / manifest.model_file()), device, config)
        self.input_names = [p.get_any_name() for p in self._compiled.inputs]
        self._output = self._compiled.output(manifest.io.output)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(max(1, settings.streams)):
            self._requests.put(self._compiled.create_infer_request())
        self._info = {
            "engine": "openvino",
            "version": ov.get_version(),
            "device": device,
            "inference_precision": precision,
            "threads": str(threads),
            "streams": str(max(1, settings.streams)),
        }

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = self._requests.get()
        try:
            result = request.infer({k: feeds[k] for k in self.input_names})
            return np.array(result[self._output], copy=True)
        finally:
            self._requests.put(request)

    def prepare_shapes(self, max_seq: int) -> None:
        """Run batch-1 inputs of every bucketed length up to 128 so live queries hit ready kernels."""
        for length in range(SEQ_MULTIPLE, min(max_seq, 128) + 1, SEQ_MULTIPLE):
            ones = np.ones((1, length), dtype=np.int64)
            self.infer(
                {"input_ids": ones, "attention_mask": ones, "token_type_ids": np.zeros_like(ones)}
            )

    def describe(self) -> dict[str, str]:
        return dict(self._info)

    def close(self) -> None:
        self._compiled = None


def open_backend(bundle_dir, manifest, settings: BackendSettings) -> OpenVinoBackend:
    return OpenVinoBackend(Path(bundle_dir), manifest, settings)

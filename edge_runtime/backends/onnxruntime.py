"""onnxruntime: CPU EP by default; CUDA / TensorRT EPs for GPU targets when available."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge_runtime.backends.base import BackendSettings
from edge_runtime.errors import BackendUnavailable

LEVELS = {"ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_BASIC", "ORT_DISABLE_ALL"}


class OrtBackend:
    def __init__(self, bundle_dir: Path, manifest, settings: BackendSettings) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                "onnxruntime is not installed (pip install 'shipyard[edge]')"
            ) from exc
        self.target = manifest.target.id
        self.seq_multiple = 1
        self.device = manifest.target.device
        so = ort.SessionOptions()
        so.intra_op_num_threads = settings.threads or (os.cpu_count() or 1)
        so.inter_op_num_threads = 1
        so.enable_cpu_mem_arena = True
        so.enable_mem_pattern = True
        level = manifest.target.runtime.get("graph_optimization", "ORT_ENABLE_ALL")
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, level if level in LEVELS else "ORT_ENABLE_ALL"
        )
        so.log_severity_level = 3
        available = ort.get_available_providers()
        if self.device == "gpu":
            wanted = [
                p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available
            ]
            if not wanted:
                raise BackendUnavailable(
                    f"{self.target} needs the CUDA execution provider; this onnxruntime has {available}"
                )
            providers = [*wanted, "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self._sess = ort.InferenceSession(
            str(bundle_dir / manifest.model_file()), so, providers=providers
        )
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self._output = [manifest.io.output]
        self._info = {
            "engine": "onnxruntime",
            "version": ort.__version__,
            "providers": ",".join(self._sess.get_providers()),
            "threads": str(so.intra_op_num_threads),
            "graph_optimization": level,
        }

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._sess.run(self._output, {k: feeds[k] for k in self.input_names})[0]

    def describe(self) -> dict[str, str]:
        return dict(self._info)

    def close(self) -> None:
        self._sess = None


def open_backend(bundle_dir, manifest, settings: BackendSettings) -> OrtBackend:
    return OrtBackend(Path(bundle_dir), manifest, settings)

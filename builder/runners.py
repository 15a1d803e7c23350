"""Build-host inference for the gate and the benchmark: one callable per backend.

Deliberately minimal (the edge has its own backends with fallback and threading policy); here
we only need ``feeds -> output`` with the thread count and precision recorded in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Runner(Protocol):
    input_names: list[str]

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


class OrtRunner:
    def __init__(self, model: Path | bytes, output: str, *, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        source = model if isinstance(model, bytes) else str(model)
        self._sess = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self._output = [output]

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._sess.run(self._output, {k: feeds[k] for k in self.input_names})[0]


class OpenVinoRunner:
    """Compiled for CPU with the settings the bundle records (``runtime``): an explicit inference
    precision (OpenVINO defaults to BF16 on CPUs that have it, which would make the gate measure
    something other than what ships) and, where set, the dynamic-quantization group size."""

    def __init__(self, model, output: str, *, threads: int, runtime: dict[str, str]) -> None:
        import openvino as ov

        from artifacts.openvino_config import compile_config

        core = ov.Core()
        config = compile_config(runtime, threads=threads)
        source = str(model) if isinstance(model, Path) else model
        self._compiled = core.compile_model(source, "CPU", config)
        self.input_names = [p.get_any_name() for p in self._compiled.inputs]
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(output)

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = self._request.infer({k: feeds[k] for k in self.input_names}, share_inputs=True)
        return np.array(result[self._output], copy=True)


def bundle_runner(bundle_dir: Path, manifest, threads: int) -> Runner:
    """A bundle's model as the build host runs it for the gate (same runtime settings)."""
    path = bundle_dir / manifest.model_file()
    if manifest.target.backend == "onnxruntime":
        return OrtRunner(path, manifest.io.output, threads=threads)
    if manifest.target.backend == "openvino":
        return OpenVinoRunner(
            path, manifest.io.output, threads=threads, runtime=manifest.target.runtime
        )
    raise NotImplementedError(f"running {manifest.target.backend} bundles needs that runtime here")

"""onnxruntime: CPU EP by default; CUDA / TensorRT EPs for GPU targets when available.

Tuned for serving on a few cores, as measured on all-MiniLM-L6-v2 INT8 (2 vCPUs):
* intra-op threads do not spin-wait after a run — spinning threads stole the cores from the
  event loop and the HTTP stack (+3 ms per request at c=1);
* a second, single-threaded session serves small batches (<= ``SMALL_BATCH_TOKENS`` padded
  tokens, i.e. single queries): waking sleeping pool threads costs more than it saves there
  (1.6 ms vs 2.2 ms for an 8-token query), while large batches still use every core;
* the CPU memory arena stays on (without it, glibc fragmentation took the c=64 peak higher and
  a 64 x 64-token batch ran 1.2-2x slower), but it would keep the largest batch ever seen
  resident, so ``release_memory`` (called between bursts) runs one token with arena shrinkage;
* the memory pattern planner is off: it lays every intermediate tensor of a shape out in one
  block planned for that shape, which serving's ever-changing batch shapes rarely reuse, and
  it doubled a batch's activation memory (a 16 x 256-token batch: +257 vs +130 MB; the edge's
  peak RSS under c=64 product traffic and a flood: 401 vs 313 MB) at the same speed
  (``python -m bench.ort_memory``). ``[backends] memory_pattern = true`` turns it back on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge_runtime.backends.base import BackendSettings
from edge_runtime.errors import BackendUnavailable

LEVELS = {"ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_BASIC", "ORT_DISABLE_ALL"}
SMALL_BATCH_TOKENS = 48


class OrtBackend:
    def __init__(self, bundle_dir: Path, manifest, settings: BackendSettings) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                "onnxruntime is not installed (pip install 'shipyard[edge]')"
            ) from exc
        self._ort = ort
        self.target = manifest.bundle_key()
        self.seq_multiple = 1
        self.device = manifest.target.device
        threads = settings.threads or (os.cpu_count() or 1)
        level = manifest.target.runtime.get("graph_optimization", "ORT_ENABLE_ALL")
        self._level = getattr(
            ort.GraphOptimizationLevel, level if level in LEVELS else "ORT_ENABLE_ALL"
        )
        available = ort.get_available_providers()
        if self.device == "gpu":
            wanted = [
                p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available
            ]
            if not wanted:
                raise BackendUnavailable(
                    f"{self.target} needs the CUDA execution provider; this onnxruntime has {available}"
                )
            self._providers = [*wanted, "CPUExecutionProvider"]
        else:
            self._providers = ["CPUExecutionProvider"]
        self._path = str(bundle_dir / manifest.model_file())
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._pattern = settings.memory_pattern
        self._sess = self._session(threads)
        self._small = self._session(1) if threads > 1 and self.device == "cpu" else None
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self._output = [manifest.io.output]
        self._info = {
            "engine": "onnxruntime",
            "version": ort.__version__,
            "providers": ",".join(self._sess.get_providers()),
            "threads": f"{threads} (1 for batches <= {SMALL_BATCH_TOKENS} tokens)"
            if self._small
            else str(threads),
            "graph_optimization": level,
            "memory_pattern": "on" if self._pattern else "off",
        }

    def _session(self, threads: int):
        ort = self._ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.enable_cpu_mem_arena = True
        so.enable_mem_pattern = self._pattern
        so.graph_optimization_level = self._level
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return ort.InferenceSession(self._path, so, providers=self._providers)

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        ids = feeds["input_ids"]
        sess = (
            self._small
            if self._small is not None and ids.size <= SMALL_BATCH_TOKENS
            else self._sess
        )
        return sess.run(self._output, {k: feeds[k] for k in self.input_names})[0]

    def release_memory(self) -> None:
        """Free the arena chunks the last burst grew (a one-token run with shrinkage)."""
        feeds = {
            name: np.ones((1, 1), np.int64)
            if name == "attention_mask"
            else np.zeros((1, 1), np.int64)
            for name in self.input_names
        }
        for sess in (self._sess, self._small):
            if sess is not None:
                sess.run(self._output, feeds, self._shrink)

    def describe(self) -> dict[str, str]:
        return dict(self._info)

    def close(self) -> None:
        self._sess = None
        self._small = None


def open_backend(bundle_dir, manifest, settings: BackendSettings) -> OrtBackend:
    return OrtBackend(Path(bundle_dir), manifest, settings)

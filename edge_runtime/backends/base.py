"""The backend interface: load a verified bundle, run a padded batch, close."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class BackendSettings:
    threads: int  # intra-op threads (0: every core)
    streams: int = 1  # concurrent inferences the engine should be ready for
    # onnxruntime's per-shape memory planner: off by default (see backends/onnxruntime.py)
    memory_pattern: bool = False


class Backend(Protocol):
    target: str
    device: str  # "cpu" | "gpu"
    input_names: list[str]
    seq_multiple: int  # pad sequence length up to a multiple of this (1: no bucketing)

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one padded batch (int64 [batch, seq] inputs); return the manifest's output."""
        ...

    def describe(self) -> dict[str, str]:
        """Engine, version, device and settings, for /v1/status."""
        ...

    def close(self) -> None: ...

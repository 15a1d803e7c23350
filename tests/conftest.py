"""Shared test setup: gpu skip with a printed reason, offline Hugging Face, temp homes."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _gpu_reason() -> str | None:
    """None when an NVIDIA GPU is usable, else why not."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU: nvidia-smi not found on this machine"
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            return "no NVIDIA GPU: NVML reports 0 devices"
    except Exception as exc:
        return f"no NVIDIA GPU: NVML unavailable ({exc})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _gpu_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

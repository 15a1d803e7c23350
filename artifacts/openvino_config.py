"""OpenVINO CPU compile settings from a bundle's recorded runtime: one function, so the gate
on the build host, the verifying worker and every edge node run the same numerics.

A manifest records what the gate measured under (``target.runtime``); anything OpenVINO would
otherwise pick per CPU or per release (BF16 inference on CPUs that have it, the dynamic
activation-quantization group size of weight-compressed layers) is pinned here from it.
"""

from __future__ import annotations

from collections.abc import Mapping

PRECISION_KEY = "inference_precision"
DYNAMIC_QUANTIZATION_KEY = "dynamic_quantization_group_size"


def compile_config(runtime: Mapping[str, str], *, threads: int, streams: int = 1) -> dict:
    """``core.compile_model(..., "CPU", config)`` settings for a bundle's ``runtime`` dict."""
    config: dict[str, object] = {
        "INFERENCE_PRECISION_HINT": runtime.get(PRECISION_KEY, "f32"),
        "PERFORMANCE_HINT": "LATENCY" if streams <= 1 else "THROUGHPUT",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": max(1, streams),
    }
    group = runtime.get(DYNAMIC_QUANTIZATION_KEY)
    if group is not None:
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = int(group)
    return config

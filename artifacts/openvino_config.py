"""OpenVINO CPU compile settings from a bundle's recorded runtime: one function, so the gate
on the build host, the verifying worker and every edge node run the same numerics.

A manifest records what the gate measured under (``target.runtime``); anything OpenVINO would
otherwise pick per CPU or per release (BF16 inference on CPUs that have it, the dynamic
activation-quantization group size of weight-compressed layers) is pinned here from it.
"""

from __future__ import annotations

from collections.abc import Mapping

from artifacts.errors import InputError

PRECISIONS = frozenset({"f32", "bf16", "f16"})
MAX_GROUP = 4096

PRECISION_KEY = "inference_precision"
DYNAMIC_QUANTIZATION_KEY = "dynamic_quantization_group_size"


def compile_config(runtime: Mapping[str, str], *, threads: int, streams: int = 1) -> dict:
    """``core.compile_model(..., "CPU", config)`` settings for a bundle's ``runtime`` dict."""
    precision = runtime.get(PRECISION_KEY, "f32")
    if precision not in PRECISIONS:
        raise InputError(
            f"target.runtime.{PRECISION_KEY}={precision!r}: expected one of {sorted(PRECISIONS)}"
        )
    config: dict[str, object] = {
        "INFERENCE_PRECISION_HINT": precision,
        "PERFORMANCE_HINT": "LATENCY" if streams <= 1 else "THROUGHPUT",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": max(1, streams),
    }
    group = runtime.get(DYNAMIC_QUANTIZATION_KEY)
    if group is not None:
        if not (isinstance(group, str) and group.isascii() and group.isdigit()) or not (
            0 <= int(group) <= MAX_GROUP
        ):
            raise InputError(
                f"target.runtime.{DYNAMIC_QUANTIZATION_KEY}={group!r}: expected 0-{MAX_GROUP}"
            )
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = int(group)
    return config

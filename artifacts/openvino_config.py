"""OpenVINO CPU compile settings from a bundle's recorded runtime: one function, so the gate
on the build host, the verifying worker and every edge node run the same numerics.

A manifest records what the gate measured under (``target.runtime``); anything OpenVINO would
otherwise pick per CPU or per release (BF16 inference on CPUs that have it, the dynamic
activation-quantization group size of weight-compressed layers) is pinned here from it.

BF16 is taken only where the build gated it too: a bundle whose runtime says
``bf16_gated = "true"`` passed the gate (and its golden check) compiled in BF16 as well as in
its pinned f32, so a node whose CPU runs BF16 natively (AVX-512 BF16, AMX) compiles it in BF16
(measured 1.15x on the product mix, same cosine: ``bench/openvino_precision.py``); every
other node, and every bundle without the flag, runs the pinned precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from artifacts.errors import InputError

PRECISIONS = frozenset({"f32", "bf16", "f16"})
MAX_GROUP = 4096

PRECISION_KEY = "inference_precision"
DYNAMIC_QUANTIZATION_KEY = "dynamic_quantization_group_size"
BF16_GATED_KEY = "bf16_gated"


def has_native_bf16(capabilities: Sequence[str]) -> bool:
    """Whether OpenVINO's CPU plugin runs BF16 in hardware here (its
    ``OPTIMIZATION_CAPABILITIES``); elsewhere a BF16 hint silently runs f32."""
    return "BF16" in capabilities


def cpu_has_native_bf16(core: Any = None) -> bool:
    """:func:`has_native_bf16` for this host's CPU plugin (``core``: an ``openvino.Core``
    already at hand; else one is made — OpenVINO is imported only here)."""
    if core is None:
        import openvino as ov

        core = ov.Core()
    return has_native_bf16(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def node_precision(runtime: Mapping[str, str], *, native_bf16: bool) -> str:
    """The inference precision this node compiles a bundle with: the pinned one, or BF16 where
    the build gated BF16 too and this CPU runs it natively."""
    precision = runtime.get(PRECISION_KEY, "f32")
    if precision not in PRECISIONS:
        raise InputError(
            f"target.runtime.{PRECISION_KEY}={precision!r}: expected one of {sorted(PRECISIONS)}"
        )
    gated = runtime.get(BF16_GATED_KEY, "false")
    if gated not in ("true", "false"):
        raise InputError(f"target.runtime.{BF16_GATED_KEY}={gated!r}: expected 'true' or 'false'")
    return "bf16" if native_bf16 and gated == "true" and precision == "f32" else precision


def compile_config(
    runtime: Mapping[str, str], *, threads: int, streams: int = 1, native_bf16: bool = False
) -> dict:
    """``core.compile_model(..., "CPU", config)`` settings for a bundle's ``runtime`` dict.
    ``native_bf16``: this CPU runs BF16 in hardware (:func:`has_native_bf16`)."""
    precision = node_precision(runtime, native_bf16=native_bf16)
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

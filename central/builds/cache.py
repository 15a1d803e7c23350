"""Build-cache keys: identical inputs + the worker's toolchain → the same bundle, built once."""

from __future__ import annotations

import msgspec

from artifacts.digests import sha256_bytes, sha256_json
from artifacts.wire import BuildRequest


def cache_prefix(req: BuildRequest, target: str) -> str:
    """Everything about a job that determines its bundle, except the builder's toolchain."""
    return sha256_json(
        {
            "source": req.source_blob,
            "task": req.task,
            "target": target,
            "calibration": req.calibration_blob,
            "eval": req.eval_blob,
            "thresholds": sorted(req.thresholds.items()),
            "max_batch": req.max_batch,
            "model": req.model,
        }
        | ({"trt_compat": sorted(req.trt_compat)} if req.trt_compat else {})
        | ({"prune": req.prune} if req.prune else {})
        | ({"index": msgspec.to_builtins(req.index)} if req.index is not None else {})
    )


def cache_key(prefix: str, toolchain: dict[str, str]) -> str:
    return sha256_bytes(prefix.encode() + sha256_json(toolchain).encode())

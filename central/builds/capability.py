"""Which live workers can build or verify a job, and why none can: shown while a job waits,
and the reason a job ends ``no-capable-worker`` when it waits past its deadline."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.targets import target_spec
from central.db import utcnow
from central.workers.models import Worker


def capability_gap(target: str, workers: list[Worker], *, besides: str | None = None) -> str:
    """Why no live worker can build ``target`` (or, with ``besides``, verify what that worker
    built: it takes a different one). Empty: one can."""
    if any(target in w.targets and w.name != besides for w in workers):
        return ""
    spec = target_spec(target)
    described = ", ".join(f"{w.name} ({describe_worker(w)})" for w in workers) or "none"
    need = (
        "an NVIDIA GPU with TensorRT"
        if spec.backend == "tensorrt"
        else f"a worker that builds {target}"
    )
    if besides is not None:
        return (
            f"built by {besides}; verifying it needs {need} other than {besides} "
            f"(live workers: {described})"
        )
    return f"no live worker can build {target}: it needs {need} (live workers: {described})"


def describe_worker(w: Worker) -> str:
    caps = w.capabilities or {}
    gpus = caps.get("gpus") or []
    gpu = (
        f"{gpus[0]['name']} sm_{gpus[0]['compute_capability'].replace('.', '')}"
        if gpus
        else "no GPU"
    )
    trt = f"TensorRT {caps['tensorrt']}" if caps.get("tensorrt") else "no TensorRT"
    return f"{caps.get('arch', '?')}, {gpu}, {trt}"


async def live_workers(s: AsyncSession, lease_seconds: float) -> list[Worker]:
    """Enrolled, enabled workers with a registered key, seen recently."""
    horizon = utcnow() - dt.timedelta(seconds=max(30.0, 3 * lease_seconds))
    q = select(Worker).where(
        Worker.last_seen >= horizon,
        Worker.enrolled_at.is_not(None),
        Worker.disabled_at.is_(None),
        Worker.public_key.is_not(None),
    )
    return list((await s.execute(q)).scalars())

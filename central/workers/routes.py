"""Enrolled workers: enrol (admin), register a key (the worker), hello, list, reset a key,
disable (admin: revokes its credentials and quarantines what it built)."""

from __future__ import annotations

from litestar import Request, get, post, put

from artifacts.wire import (
    DisableWorker,
    EnrollWorker,
    WorkerEnrolled,
    WorkerHello,
    WorkerInfo,
    WorkerKey,
)
from central.auth.guard import needs, principal_of
from central.settings import CentralConfig
from central.workers.service import WorkerService

WORKER = "/v1/workers/{name:str}"


@post("/v1/workers/enroll", status_code=201, **needs("admin"))
async def enroll(workers: WorkerService, request: Request, data: EnrollWorker) -> WorkerEnrolled:
    """Enrol a worker: the targets it may build (and the host it must run on); returns its
    credential (shown once; earlier credentials of this name are revoked)."""
    caps = None
    if data.capabilities is not None:
        import msgspec

        caps = msgspec.to_builtins(data.capabilities)
    token = await workers.enroll(data.name, data.targets, caps, principal_of(request).name)
    return WorkerEnrolled(name=data.name, token=token)


@get("/v1/workers", **needs("admin", body=None))
async def list_workers(workers: WorkerService) -> list[WorkerInfo]:
    return await workers.list()


@put(f"{WORKER}/key", status_code=200, **needs("build", workers=True))
async def register_key(
    workers: WorkerService, request: Request, name: str, data: WorkerKey
) -> WorkerInfo:
    """The worker registers the public half of the key it generated (only its own credential
    may; a different key than the registered one needs an admin's reset first)."""
    return await workers.register_key(name, data.public_key, principal_of(request))


@post(f"{WORKER}/reset-key", status_code=200, **needs("admin", body=None))
async def reset_key(workers: WorkerService, request: Request, name: str) -> WorkerInfo:
    """Forget the worker's key (rotation: it registers a new one on its next start)."""
    return await workers.reset_key(name, principal_of(request).name)


@post(f"{WORKER}/disable", status_code=200, **needs("admin"))
async def disable(
    workers: WorkerService, request: Request, name: str, data: DisableWorker
) -> WorkerInfo:
    return await workers.disable(name, data.reason, principal_of(request))


@post("/v1/workers", status_code=200, **needs("build", workers=True))
async def hello(
    workers: WorkerService, config: CentralConfig, request: Request, data: WorkerHello
) -> dict[str, str]:
    """A worker (re)registers its host's capabilities, toolchain and the targets it builds
    (kept: those it was enrolled for)."""
    info = await workers.hello(data, principal_of(request))
    return {
        "status": "registered",
        "lease_seconds": str(config.lease_seconds),
        "targets": ",".join(info.targets),
    }


handlers = [enroll, list_workers, register_key, reset_key, disable, hello]

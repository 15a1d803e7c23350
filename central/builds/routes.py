"""Builds (submit, status, logs, cancel) and the worker protocol (hello, lease, heartbeat,
logs, complete, fail). Workers authenticate with a ``build`` token."""

from __future__ import annotations

from litestar import Request, Response, delete, get, post, put
from litestar.params import Parameter

from artifacts.wire import (
    BuildCreated,
    BuildInfo,
    BuildRequest,
    HeartbeatReply,
    IndexBuildRequest,
    IndexItems,
    JobDone,
    JobLogs,
    Lease,
    LeaseRef,
    LogLine,
)
from central.auth.guard import needs, principal_of, pull
from central.builds.index_jobs import IndexService
from central.builds.leases import LeaseService
from central.builds.service import BuildService
from central.catalogs.service import CatalogService


@post("/v1/builds", status_code=201, **needs("build"))
async def submit(builds: BuildService, request: Request, data: BuildRequest) -> BuildCreated:
    """Submit a build: the source tarball (and optional calibration/eval JSONL) were uploaded
    as blobs first. One job per target; the response lists them."""
    return await builds.submit(data, principal_of(request))


@get("/v1/builds", **pull())
async def list_builds(
    builds: BuildService,
    catalog_service: CatalogService,
    request: Request,
    limit: int = Parameter(default=50, ge=1, le=500),
) -> list[BuildInfo]:
    """The newest builds (a catalog-bound token: without other catalogs' index builds)."""
    hidden = await catalog_service.unreadable(principal_of(request))
    return [b for b in await builds.recent(limit) if b.model not in hidden]


@get("/v1/builds/{build_id:int}", **pull())
async def get_build(
    builds: BuildService, catalog_service: CatalogService, request: Request, build_id: int
) -> BuildInfo:
    """Per job: queued / waiting-for-capable-worker (and which capability is missing) /
    running on a worker / passed / failed with the reason / cancelled."""
    build = await builds.get(build_id)
    await catalog_service.require_readable(principal_of(request), build.model)
    return build


@get("/v1/builds/{build_id:int}/logs", **pull())
async def build_logs(
    builds: BuildService,
    catalog_service: CatalogService,
    request: Request,
    build_id: int,
    after: int = Parameter(default=0, ge=0),
    limit: int = Parameter(default=500, ge=1, le=5000),
) -> list[LogLine]:
    """Log lines after id ``after`` (page with the last id you saw)."""
    principal = principal_of(request)
    if principal.catalogs is not None:  # a bound token reads no other catalog's index build
        await catalog_service.require_readable(principal, (await builds.get(build_id)).model)
    return await builds.logs(build_id, after, limit)


@post("/v1/builds/{build_id:int}/cancel", status_code=200, **needs("build", body=None))
async def cancel(builds: BuildService, request: Request, build_id: int) -> BuildInfo:
    return await builds.cancel(build_id, principal_of(request))


@post("/v1/workers/{name:str}/lease", status_code=200, **needs("build", body=None, workers=True))
async def lease(
    leases: LeaseService,
    request: Request,
    name: str,
    wait: float = Parameter(default=20.0, ge=0, le=60),
) -> Response[Lease | None]:
    """Long-poll for a job this worker can build or verify; 204 when none came within
    ``wait`` s. Only the credential enrolled as ``name`` may ask (403 otherwise)."""
    got = await leases.lease(name, wait, principal_of(request))
    if got is None:
        return Response(None, status_code=204)
    return Response(got)


@post("/v1/jobs/{job_id:int}/heartbeat", status_code=200, **needs("build", workers=True))
async def heartbeat(
    leases: LeaseService, request: Request, job_id: int, data: LeaseRef
) -> HeartbeatReply:
    """Extend the lease; ``cancelled: true`` tells the worker to stop. 409: lease lost."""
    return await leases.heartbeat(job_id, data.lease_token, principal_of(request))


@post("/v1/jobs/{job_id:int}/logs", status_code=204, **needs("build", workers=True))
async def job_logs(leases: LeaseService, request: Request, job_id: int, data: JobLogs) -> None:
    await leases.append_logs(job_id, data.lease_token, data.lines, principal_of(request))


@post("/v1/jobs/{job_id:int}/complete", status_code=204, **needs("build", workers=True))
async def complete(leases: LeaseService, request: Request, job_id: int, data: JobDone) -> None:
    """Build: the bundle's files are uploaded as blobs; this hands over its manifest and its
    OMS signature (the worker's key; provenance inside). Verify: the verifier's signed
    attestation. Checked against the job before anything is registered."""
    await leases.complete(job_id, data, principal_of(request))


@post("/v1/jobs/{job_id:int}/fail", status_code=204, **needs("build", workers=True))
async def fail(leases: LeaseService, request: Request, job_id: int, data: JobDone) -> None:
    """``retry: true`` for transient failures (crash, timeout): requeued within the attempt limit."""
    await leases.fail(job_id, data, principal_of(request))


@post("/v1/indexes", status_code=201, **needs("build"))
async def submit_index(
    indexes: IndexService, request: Request, data: IndexBuildRequest
) -> BuildCreated:
    """Embed a catalog (uploaded as a blob) with one registered embedding bundle and build its
    signed usearch index on a worker, re-checked by another: a build of task ``index``."""
    return await indexes.create(data, principal_of(request))


@put("/v1/indexes/{name:str}/items", status_code=201, **needs("build"))
async def put_index_items(
    indexes: IndexService, request: Request, name: str, data: IndexItems
) -> BuildCreated:
    """Upsert products (a field left out keeps its value): a cumulative delta over the index,
    built and verified like a build, registered as the index's next version."""
    return await indexes.change(name, data, principal_of(request), delete=False)


@delete("/v1/indexes/{name:str}/items", status_code=201, **needs("build"))
async def delete_index_items(
    indexes: IndexService, request: Request, name: str, data: IndexItems
) -> BuildCreated:
    """Remove products by id: a cumulative delta, like PUT."""
    return await indexes.change(name, data, principal_of(request), delete=True)


handlers = [
    submit_index,
    put_index_items,
    delete_index_items,
    submit,
    list_builds,
    get_build,
    build_logs,
    cancel,
    lease,
    heartbeat,
    job_logs,
    complete,
    fail,
]

"""Builds as their submitters see them: submit, status, logs, cancel.

A build is split into one job per target; workers lease the jobs (:mod:`.leases`); when every
job has ended the passed ones become one version (:mod:`.finalize`).
"""

from __future__ import annotations

import datetime as dt

import anyio
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts import sourcetar
from artifacts.digests import is_digest
from artifacts.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ShipyardError,
    Unprocessable,
)
from artifacts.manifest import decode
from artifacts.names import check_name
from artifacts.quality import TASKS, thresholds_for
from artifacts.states import BuildState, JobState
from artifacts.targets import BUILDABLE_TARGETS, TARGETS, parse_trt_compat, target_spec
from artifacts.wire import BuildCreated, BuildInfo, BuildRequest, JobInfo, LogLine
from central.auth.service import Principal
from central.blobs.service import BlobService
from central.builds.cache import cache_key, cache_prefix
from central.builds.finalize import Finalizer
from central.builds.models import Build, BuildCache, Job, JobLog
from central.builds.signal import JobsChanged
from central.db import Database, iso, utcnow
from central.registry.service import RegistryService
from central.workers.models import Worker

# ---- views ---------------------------------------------------------------------------------


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


def job_info(j: Job, workers: list[Worker]) -> JobInfo:
    state, reason = JobState(j.state), j.reason
    if state is JobState.QUEUED:
        gap = capability_gap(j.target, workers)
        if gap:
            state, reason = JobState.WAITING, gap
    elif state is JobState.BUILT:
        reason = capability_gap(j.target, workers, besides=j.builder) or reason
    manifest = (
        msgspec.to_builtins(decode(j.result_manifest))
        if j.result_manifest and state in (JobState.BUILT, JobState.VERIFYING, JobState.PASSED)
        else None
    )
    return JobInfo(
        id=j.id,
        target=j.target,
        state=state,
        worker=j.worker,
        attempts=j.attempts,
        reason=reason,
        cached=j.cached,
        history=list(j.history),
        manifest=manifest,
    )


def build_info(b: Build, jobs: list[Job], workers: list[Worker]) -> BuildInfo:
    return BuildInfo(
        id=b.id,
        model=b.model,
        task=b.task,
        state=BuildState(b.state),
        created_at=iso(b.created_at),
        finished_at=iso(b.finished_at),
        version=b.version,
        promoted_to=b.promoted_to,
        detail=b.detail,
        jobs=[job_info(j, workers) for j in jobs],
    )


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


# ---- the service ---------------------------------------------------------------------------


def _check_trt_compat(values: list[str]) -> None:
    try:
        if parse_trt_compat(values) != values:
            raise ValueError("trt_compat must list each of version, hardware, same-cc once, sorted")
    except ValueError as exc:
        raise Unprocessable(str(exc)) from exc


class BuildService:
    def __init__(
        self,
        db: Database,
        blobs: BlobService,
        registry: RegistryService,
        finalizer: Finalizer,
        jobs_changed: JobsChanged,
        lease_seconds: float,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.registry = registry
        self.finalizer = finalizer
        self.audit = registry.audit
        self.jobs_changed = jobs_changed
        self.lease_seconds = lease_seconds

    def _validate(self, req: BuildRequest) -> None:
        check_name(req.model, "model name")
        if req.task not in TASKS:
            raise Unprocessable(f"unknown task {req.task!r}; choose one of {', '.join(TASKS)}")
        if not req.targets:
            raise Unprocessable("no targets requested")
        for t in req.targets:
            if t not in TARGETS:
                raise Unprocessable(f"unknown target {t!r}; known: {', '.join(TARGETS)}")
            if t not in BUILDABLE_TARGETS:
                raise Unprocessable(
                    f"target {t!r} has no builder yet; buildable: {', '.join(BUILDABLE_TARGETS)}"
                )
        if len(set(req.targets)) != len(req.targets):
            raise Unprocessable("targets are listed twice")
        if req.promote_to is not None:
            check_name(req.promote_to, "channel name")
        if not 1 <= req.max_batch <= 4096:
            raise Unprocessable("max_batch must be between 1 and 4096")
        _check_trt_compat(req.trt_compat)
        thresholds_for(req.task, req.thresholds)
        for what, digest in (
            ("source", req.source_blob),
            ("calibration", req.calibration_blob),
            ("eval", req.eval_blob),
        ):
            if digest is None:
                continue
            if not is_digest(digest):
                raise Unprocessable(f"{what}_blob {digest!r} is not a sha256 digest")
            self.blobs.require(digest, what)

    async def _cached_version(self, req: BuildRequest) -> tuple[int, dict[str, bytes]] | None:
        """The version an identical, verified build already produced for every requested target
        (keyed on a currently enabled worker's *registered* toolchain), else None."""
        async with self.db.session() as s:
            workers = (
                await s.execute(
                    select(Worker).where(
                        Worker.disabled_at.is_(None), Worker.enrolled_at.is_not(None)
                    )
                )
            ).scalars()
            toolchains = {w.name: w.toolchain for w in workers}
            versions: set[int] = set()
            manifests: dict[str, bytes] = {}
            for target in req.targets:
                keys = [cache_key(cache_prefix(req, target), tc) for tc in toolchains.values()]
                hits = [
                    h
                    for h in (
                        await s.execute(select(BuildCache).where(BuildCache.cache_key.in_(keys)))
                    ).scalars()
                    if h.model == req.model and h.version and h.worker in toolchains
                ]
                if not hits:
                    return None
                newest = max(hits, key=lambda h: h.version or 0)
                versions.add(newest.version or 0)
                manifests[target] = newest.manifest
        return (versions.pop(), manifests) if len(versions) == 1 else None

    async def submit(self, req: BuildRequest, principal: Principal) -> BuildCreated:
        self._validate(req)
        if principal.worker is not None:
            raise ForbiddenError(f"worker {principal.worker}'s credential cannot submit builds")
        if req.promote_to is not None and "promote" not in principal.scopes:
            raise ForbiddenError(
                f"token {principal.name!r} lacks the 'promote' scope that promote_to "
                f"{req.promote_to!r} needs; submit without it and let a promoter promote"
            )
        path = self.blobs.store.path(req.source_blob)
        try:
            await anyio.to_thread.run_sync(sourcetar.validate, path)
        except ShipyardError as exc:
            raise Unprocessable(f"source archive refused: {exc}") from exc
        hit = await self._cached_version(req)
        cached, manifests = hit if hit else (None, {})
        version = cached or await self.registry.create_version(
            req.model,
            principal.name,
            source_digest=req.source_blob,
            notes="built by the build service",
        )
        state = JobState.PASSED if cached else JobState.QUEUED
        async with self.db.transaction() as s:
            build = Build(
                model=req.model,
                task=req.task,
                source_digest=req.source_blob,
                request=msgspec.json.encode(req),
                state=BuildState.RUNNING,
                created_by=principal.name,
                may_promote="promote" in principal.scopes,
                version=version,
            )
            s.add(build)
            await s.flush()
            jobs = [
                Job(
                    build_id=build.id,
                    target=t,
                    state=state,
                    cache_key=cache_prefix(req, t),
                    history=[f"identical verified build in v{cached}: not rebuilt"]
                    if cached
                    else [],
                    cached=bool(cached),
                    result_manifest=manifests.get(t),
                )
                for t in req.targets
            ]
            s.add_all(jobs)
            await s.flush()
            self.audit.record(
                s,
                principal.name,
                "build.submit",
                f"#{build.id} {req.model} v{version} [{','.join(req.targets)}]",
                digest=req.source_blob,
            )
            created = BuildCreated(
                build_id=build.id,
                jobs=[JobInfo(id=j.id, target=j.target, state=state) for j in jobs],
            )
        if cached:
            await self.finalizer.maybe_finalize(created.build_id)
        await self.jobs_changed.notify()
        return created

    async def get(self, build_id: int) -> BuildInfo:
        async with self.db.session() as s:
            b = await s.get(Build, build_id)
            if b is None:
                raise NotFoundError(f"build #{build_id} not found")
            jobs = (
                await s.execute(select(Job).where(Job.build_id == build_id).order_by(Job.id))
            ).scalars()
            return build_info(b, list(jobs), await live_workers(s, self.lease_seconds))

    async def recent(self, limit: int = 50) -> list[BuildInfo]:
        async with self.db.session() as s:
            builds = list(
                (await s.execute(select(Build).order_by(Build.id.desc()).limit(limit))).scalars()
            )
            ids = [b.id for b in builds]
            jobs = (
                (await s.execute(select(Job).where(Job.build_id.in_(ids)).order_by(Job.id)))
                .scalars()
                .all()
                if ids
                else []
            )
            workers = await live_workers(s, self.lease_seconds)
        by_build: dict[int, list[Job]] = {}
        for j in jobs:
            by_build.setdefault(j.build_id, []).append(j)
        return [build_info(b, by_build.get(b.id, []), workers) for b in builds]

    async def logs(self, build_id: int, after: int = 0, limit: int = 500) -> list[LogLine]:
        async with self.db.session() as s:
            if await s.get(Build, build_id) is None:
                raise NotFoundError(f"build #{build_id} not found")
            rows = (
                await s.execute(
                    select(JobLog, Job.target)
                    .join(Job, Job.id == JobLog.job_id)
                    .where(Job.build_id == build_id, JobLog.id > after)
                    .order_by(JobLog.id)
                    .limit(min(limit, 5000))
                )
            ).all()
        return [LogLine(id=r[0].id, target=r[1], at=iso(r[0].at), line=r[0].line) for r in rows]

    async def cancel(self, build_id: int, principal: Principal) -> BuildInfo:
        """Only its submitter or an admin may cancel a build (never a worker credential)."""
        actor = principal.name
        async with self.db.transaction() as s:
            b = await s.get(Build, build_id)
            if b is None:
                raise NotFoundError(f"build #{build_id} not found")
            if principal.worker is not None or (
                b.created_by != actor and "admin" not in principal.scopes
            ):
                raise ForbiddenError(
                    f"build #{build_id} was submitted by {b.created_by!r}; only they or an "
                    "admin may cancel it"
                )
            if b.state not in (BuildState.RUNNING, BuildState.AWAITING_VERIFICATION):
                raise ConflictError(f"build #{build_id} is already {b.state}")
            for j in (await s.execute(select(Job).where(Job.build_id == build_id))).scalars():
                if not JobState(j.state).terminal:
                    j.state = JobState.CANCELLED
                    j.reason = f"cancelled by {actor}"
                    j.lease_token = None
            b.state = BuildState.CANCELLED
            b.finished_at = utcnow()
            b.detail = f"cancelled by {actor}; what was not yet verified is not registered"
            self.audit.record(s, actor, "build.cancel", f"#{build_id} {b.model}")
        return await self.get(build_id)

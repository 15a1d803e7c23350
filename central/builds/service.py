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
from artifacts.errors import ConflictError, NotFoundError, ShipyardError, Unprocessable
from artifacts.manifest import decode
from artifacts.names import check_name
from artifacts.quality import TASKS, thresholds_for
from artifacts.states import BuildState, JobState
from artifacts.targets import BUILDABLE_TARGETS, TARGETS, target_spec
from artifacts.wire import BuildCreated, BuildInfo, BuildRequest, JobInfo, LogLine
from central.audit.service import AuditLog
from central.blobs.service import BlobService
from central.builds.cache import cache_prefix
from central.builds.models import Build, Job, JobLog, Worker
from central.builds.signal import JobsChanged
from central.db import Database, iso, utcnow

# ---- views ---------------------------------------------------------------------------------


def capability_gap(target: str, workers: list[Worker]) -> str:
    """Why no live worker can build ``target`` (empty: one can)."""
    if any(target in w.targets for w in workers):
        return ""
    spec = target_spec(target)
    described = ", ".join(f"{w.name} ({describe_worker(w)})" for w in workers) or "none"
    need = (
        "an NVIDIA GPU with TensorRT"
        if spec.backend == "tensorrt"
        else f"a worker that builds {target}"
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
    manifest = (
        msgspec.to_builtins(decode(j.result_manifest))
        if j.result_manifest and state is JobState.PASSED
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
    horizon = utcnow() - dt.timedelta(seconds=max(30.0, 3 * lease_seconds))
    return list((await s.execute(select(Worker).where(Worker.last_seen >= horizon))).scalars())


# ---- the service ---------------------------------------------------------------------------


class BuildService:
    def __init__(
        self,
        db: Database,
        blobs: BlobService,
        audit: AuditLog,
        jobs_changed: JobsChanged,
        lease_seconds: float,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.audit = audit
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

    async def submit(self, req: BuildRequest, actor: str) -> BuildCreated:
        self._validate(req)
        path = self.blobs.store.path(req.source_blob)
        try:
            await anyio.to_thread.run_sync(sourcetar.validate, path)
        except ShipyardError as exc:
            raise Unprocessable(f"source archive refused: {exc}") from exc
        async with self.db.transaction() as s:
            build = Build(
                model=req.model,
                task=req.task,
                source_digest=req.source_blob,
                request=msgspec.json.encode(req),
                state=BuildState.RUNNING,
                created_by=actor,
            )
            s.add(build)
            await s.flush()
            jobs = [
                Job(
                    build_id=build.id,
                    target=t,
                    state=JobState.QUEUED,
                    cache_key=cache_prefix(req, t),
                    history=[],
                )
                for t in req.targets
            ]
            s.add_all(jobs)
            await s.flush()
            self.audit.record(
                s,
                actor,
                "build.submit",
                f"#{build.id} {req.model} [{','.join(req.targets)}]",
                digest=req.source_blob,
            )
            created = BuildCreated(
                build_id=build.id,
                jobs=[JobInfo(id=j.id, target=j.target, state=JobState.QUEUED) for j in jobs],
            )
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

    async def cancel(self, build_id: int, actor: str) -> BuildInfo:
        async with self.db.transaction() as s:
            b = await s.get(Build, build_id)
            if b is None:
                raise NotFoundError(f"build #{build_id} not found")
            if b.state != BuildState.RUNNING:
                raise ConflictError(f"build #{build_id} is already {b.state}")
            for j in (await s.execute(select(Job).where(Job.build_id == build_id))).scalars():
                if not JobState(j.state).terminal:
                    j.state = JobState.CANCELLED
                    j.reason = f"cancelled by {actor}"
                    j.lease_token = None
            b.state = BuildState.CANCELLED
            b.finished_at = utcnow()
            b.detail = f"cancelled by {actor}; nothing registered"
            self.audit.record(s, actor, "build.cancel", f"#{build_id} {b.model}")
        return await self.get(build_id)

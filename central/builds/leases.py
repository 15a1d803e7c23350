"""The worker protocol: register, lease a job by hardware, heartbeat, report logs, complete/fail.

Leases live in the database: ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, the
single-writer transaction on SQLite, so a job is never leased twice at once. A lease that
stops heartbeating expires and the job is requeued (bounded attempts); only the current lease
holder may complete a job.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
import uuid

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.errors import ConflictError, NotFoundError, Unprocessable
from artifacts.manifest import decode
from artifacts.names import check_name
from artifacts.states import JobState
from artifacts.targets import BUILDABLE_TARGETS
from artifacts.wire import BuildRequest, HeartbeatReply, JobDone, Lease, WorkerHello
from central.blobs.service import BlobService
from central.builds.cache import cache_key
from central.builds.finalize import Finalizer
from central.builds.models import Build, BuildCache, Job, JobLog, Worker
from central.builds.signal import JobsChanged
from central.db import Database, utcnow
from central.settings import CentralConfig

MAX_LOG_LINES = 200
MAX_WAIT_S = 60.0


class LeaseService:
    def __init__(
        self,
        db: Database,
        blobs: BlobService,
        finalizer: Finalizer,
        jobs_changed: JobsChanged,
        config: CentralConfig,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.finalizer = finalizer
        self.jobs_changed = jobs_changed
        self.lease_seconds = config.lease_seconds
        self.max_attempts = config.max_job_attempts

    def _expiry(self) -> dt.datetime:
        return utcnow() + dt.timedelta(seconds=self.lease_seconds)

    # ---- registration ----------------------------------------------------------------------

    async def hello(self, hello: WorkerHello) -> None:
        check_name(hello.name, "worker name")
        data = {
            "capabilities": msgspec.to_builtins(hello.capabilities),
            "targets": [t for t in hello.targets if t in BUILDABLE_TARGETS],
            "toolchain": dict(hello.toolchain),
            "last_seen": utcnow(),
        }
        async with self.db.transaction() as s:
            w = (
                await s.execute(select(Worker).where(Worker.name == hello.name))
            ).scalar_one_or_none()
            if w is None:
                s.add(Worker(name=hello.name, **data))
            else:
                for k, v in data.items():
                    setattr(w, k, v)

    @staticmethod
    async def _worker(s: AsyncSession, name: str) -> Worker:
        w = (await s.execute(select(Worker).where(Worker.name == name))).scalar_one_or_none()
        if w is None:
            raise NotFoundError(f"worker {name!r} not found (POST /v1/workers first)")
        return w

    # ---- expiry ----------------------------------------------------------------------------

    async def requeue_expired(self, s: AsyncSession) -> set[int]:
        """Expired leases: requeue (or fail after max attempts). Returns builds to finalize."""
        q = select(Job).where(Job.state == JobState.RUNNING, Job.lease_expires < utcnow())
        if self.db.is_postgres:
            q = q.with_for_update(skip_locked=True)
        ended: set[int] = set()
        for j in (await s.execute(q)).scalars():
            why = (
                f"attempt {j.attempts}: lease of {j.worker} expired "
                f"(no heartbeat for {self.lease_seconds:.0f} s)"
            )
            s.add(JobLog(job_id=j.id, line=f"[central] {why}"))
            j.note(why)
            j.lease_token = None
            if j.attempts >= self.max_attempts:
                j.state = JobState.FAILED
                j.reason = f"gave up after {j.attempts} attempts: " + "; ".join(j.history)
                ended.add(j.build_id)
            else:
                j.state, j.worker = JobState.QUEUED, None
        return ended

    # ---- leasing ---------------------------------------------------------------------------

    async def lease(self, worker: str, wait_s: float) -> Lease | None:
        """Long-poll for a job this worker can build (None after ``wait_s``)."""
        deadline = time.monotonic() + max(0.0, min(wait_s, MAX_WAIT_S))
        while True:
            lease, finalize = await self._try_lease(worker)
            for build_id in finalize:
                await self.finalizer.maybe_finalize(build_id)
            if lease is not None:
                return lease
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await self.jobs_changed.wait(min(remaining, 1.0))

    async def _try_lease(self, worker_name: str) -> tuple[Lease | None, set[int]]:
        async with self.db.transaction() as s:
            finalize = await self.requeue_expired(s)
            w = await self._worker(s, worker_name)
            w.last_seen = utcnow()
            if not w.targets:
                return None, finalize
            q = (
                select(Job)
                .where(Job.state == JobState.QUEUED, Job.target.in_(w.targets))
                .order_by(Job.id)
                .limit(16)
            )
            if self.db.is_postgres:
                q = q.with_for_update(skip_locked=True)
            for job in (await s.execute(q)).scalars():
                if await self._served_from_cache(s, job, w):
                    finalize.add(job.build_id)
                    continue
                return await self._grant(s, job, w), finalize
        return None, finalize

    @staticmethod
    async def _served_from_cache(s: AsyncSession, job: Job, w: Worker) -> bool:
        """An identical build (same inputs, this worker's toolchain) passed before: reuse it."""
        hit = await s.get(BuildCache, cache_key(job.cache_key, w.toolchain))
        if hit is None:
            return False
        job.state, job.cached, job.result_manifest = JobState.PASSED, True, hit.manifest
        job.note(f"served from the build cache (toolchain of {w.name}); not rebuilt")
        s.add(
            JobLog(job_id=job.id, line="[central] identical build found in the build cache; reused")
        )
        return True

    async def _grant(self, s: AsyncSession, job: Job, w: Worker) -> Lease:
        build = await s.get(Build, job.build_id)
        assert build is not None
        job.state = JobState.RUNNING
        job.worker = w.name
        job.lease_token = uuid.uuid4().hex
        job.lease_expires = self._expiry()
        job.attempts += 1
        job.note(f"attempt {job.attempts}: leased by {w.name}")
        s.add(JobLog(job_id=job.id, line=f"[central] attempt {job.attempts}: leased by {w.name}"))
        return Lease(
            job_id=job.id,
            build_id=job.build_id,
            lease_token=job.lease_token,
            lease_seconds=self.lease_seconds,
            target=job.target,
            request=msgspec.json.decode(build.request, type=BuildRequest),
            attempt=job.attempts,
        )

    # ---- while building --------------------------------------------------------------------

    @staticmethod
    async def _held(s: AsyncSession, job_id: int, token: str) -> Job:
        j = await s.get(Job, job_id)
        if j is None:
            raise NotFoundError(f"job {job_id} not found")
        if j.state == JobState.CANCELLED:
            return j
        if j.state != JobState.RUNNING or j.lease_token != token:
            raise ConflictError(
                f"job {job_id} is not leased to you any more (state {j.state}); drop it"
            )
        return j

    async def heartbeat(self, job_id: int, token: str) -> HeartbeatReply:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, token)
            if j.state == JobState.CANCELLED:
                return HeartbeatReply(cancelled=True)
            j.lease_expires = self._expiry()
            if j.worker:
                w = (
                    await s.execute(select(Worker).where(Worker.name == j.worker))
                ).scalar_one_or_none()
                if w is not None:
                    w.last_seen = utcnow()
        return HeartbeatReply(cancelled=False)

    async def append_logs(self, job_id: int, token: str, lines: list[str]) -> None:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, token)
            for line in lines[:MAX_LOG_LINES]:
                s.add(JobLog(job_id=j.id, line=line[:2000]))

    # ---- the end of a job ------------------------------------------------------------------

    def _check_result(self, data: bytes, build: Build, job: Job) -> str:
        manifest = decode(data)
        named = (manifest.model.name, manifest.model.version, manifest.target.id)
        if named != (build.model, 0, job.target):
            raise Unprocessable(
                f"result names {named}, expected ({build.model!r}, 0, {job.target!r})"
            )
        for f in manifest.files:
            info = self.blobs.stat(f.sha256)
            if info is None or info.size != f.size:
                raise Unprocessable(
                    f"result file {f.path!r}: blob {f.sha256[:19]}… missing or wrong size"
                )
        return manifest.quality.config

    async def complete(self, job_id: int, done: JobDone) -> None:
        try:
            data = base64.b64decode(done.manifest, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Unprocessable("manifest is not valid base64") from exc
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, done.lease_token)  # the lease first: 409 wins over 422
            if j.state == JobState.CANCELLED:
                return
            build = await s.get(Build, j.build_id)
            assert build is not None
            config = self._check_result(data, build, j)
            j.state, j.result_manifest, j.lease_token, j.reason = JobState.PASSED, data, None, ""
            j.note(f"attempt {j.attempts}: passed on {j.worker} ({config})")
            key = cache_key(j.cache_key, done.toolchain)
            if await s.get(BuildCache, key) is None:
                s.add(BuildCache(cache_key=key, manifest=data))
        await self.finalizer.maybe_finalize(j.build_id)

    async def fail(self, job_id: int, done: JobDone) -> None:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, done.lease_token)
            if j.state == JobState.CANCELLED:
                return
            j.note(f"attempt {j.attempts} on {j.worker}: {done.reason[:1000]}")
            j.lease_token = None
            if done.retry and j.attempts < self.max_attempts:
                j.state, j.worker = JobState.QUEUED, None
            else:
                j.state, j.reason = JobState.FAILED, done.reason[:4000]
        await self.jobs_changed.notify()
        await self.finalizer.maybe_finalize(j.build_id)

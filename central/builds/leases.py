"""The worker protocol: lease a job by hardware, heartbeat, report logs, complete or fail.

Every job is taken twice: an enrolled worker *builds* it (stamping the version into the
manifest and signing bundle + provenance with its own key), then a *different* enrolled worker
*verifies* it (re-runs the golden check and the gate on the uploaded bundle and signs its
verdict). Only then is the bundle registered into its version.

Leases live in the database: ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, the
single-writer transaction on SQLite, so a job is never leased twice at once. A lease that
stops heartbeating expires and the job goes back a step (bounded attempts); only the current
lease holder — the worker its credential is bound to — may report on a job.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid

import msgspec
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.bundle import authenticate, check_paths
from artifacts.digests import sha256_bytes, unb64
from artifacts.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RegistryError,
    ShipyardError,
    Unprocessable,
)
from artifacts.manifest import Manifest, decode
from artifacts.provenance import (
    PROVENANCE_FILE,
    BuildParameters,
    check_provenance,
    check_verification,
)
from artifacts.signing import TrustedKeys
from artifacts.states import JobState
from artifacts.tracing import annotate
from artifacts.wire import BuildRequest, BundleToVerify, HeartbeatReply, JobDone, Lease
from central.auth.service import Principal
from central.blobs.service import BlobService
from central.builds.cache import cache_key
from central.builds.finalize import Finalizer
from central.builds.index_jobs import input_bundles
from central.builds.models import Build, BuildCache, Job, JobLog
from central.builds.signal import JobsChanged
from central.db import Database, utcnow
from central.registry.service import BundleUpload, Provenance, RegistryService
from central.settings import CentralConfig
from central.workers.models import Worker
from central.workers.service import WorkerService

MAX_LOG_LINES = 200
MAX_PROVENANCE_BYTES = 1 << 20  # read whole, so bounded
MAX_WAIT_S = 60.0
HELD = (JobState.RUNNING, JobState.VERIFYING)


class LeaseService:
    def __init__(  # noqa: PLR0913 - its collaborators
        self,
        db: Database,
        blobs: BlobService,
        registry: RegistryService,
        workers: WorkerService,
        finalizer: Finalizer,
        jobs_changed: JobsChanged,
        config: CentralConfig,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.registry = registry
        self.workers = workers
        self.finalizer = finalizer
        self.jobs_changed = jobs_changed
        self.lease_seconds = config.lease_seconds
        self.max_attempts = config.max_job_attempts

    def _expiry(self) -> dt.datetime:
        return utcnow() + dt.timedelta(seconds=self.lease_seconds)

    # ---- expiry ----------------------------------------------------------------------------

    async def requeue_expired(self, s: AsyncSession) -> set[int]:
        """Expired leases go back a step (or fail after max attempts); builds to finalize."""
        q = select(Job).where(Job.state.in_(HELD), Job.lease_expires < utcnow())
        if self.db.is_postgres:
            q = q.with_for_update(skip_locked=True)
        ended: set[int] = set()
        for j in (await s.execute(q)).scalars():
            verifying = j.state == JobState.VERIFYING
            tries = j.verify_attempts if verifying else j.attempts
            why = (
                f"{'verification' if verifying else 'attempt'} {tries}: lease of {j.worker} "
                f"expired (no heartbeat for {self.lease_seconds:.0f} s)"
            )
            s.add(JobLog(job_id=j.id, line=f"[central] {why}"))
            j.note(why)
            j.lease_token, j.worker = None, None
            if tries >= self.max_attempts:
                j.state = JobState.FAILED
                j.reason = f"gave up after {tries} attempts: " + "; ".join(j.history[-3:])
                ended.add(j.build_id)
            else:
                j.state = JobState.BUILT if verifying else JobState.QUEUED
        return ended

    # ---- leasing ---------------------------------------------------------------------------

    async def lease(self, worker: str, wait_s: float, principal: Principal) -> Lease | None:
        """Long-poll for a job this worker can build or verify (None after ``wait_s``)."""
        principal.require_worker(worker)
        deadline = time.monotonic() + max(0.0, min(wait_s, MAX_WAIT_S))
        while True:
            lease, finalize = await self._try_lease(worker)
            for build_id in finalize:
                await self.finalizer.maybe_finalize(build_id)
            if lease is not None:
                annotate(
                    **{
                        "shipyard.worker": worker,
                        "shipyard.job.id": lease.job_id,
                        "shipyard.build.id": lease.build_id,
                        "shipyard.target": lease.target,
                        "shipyard.phase": lease.phase,
                        "shipyard.attempt": lease.attempt,
                    }
                )
                return lease
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await self.jobs_changed.wait(min(remaining, 1.0))

    async def _active(self, s: AsyncSession, name: str) -> Worker:
        w = await self.workers.find(s, name)
        if w.disabled_at is not None:
            raise ForbiddenError(f"worker {name} is disabled: {w.disabled_reason}")
        if not w.public_key:
            raise ForbiddenError(f"worker {name} has not registered its signing key")
        return w

    async def _try_lease(self, worker_name: str) -> tuple[Lease | None, set[int]]:
        async with self.db.transaction() as s:
            finalize = await self.requeue_expired(s)
            w = await self._active(s, worker_name)
            w.last_seen = utcnow()
            if not w.targets:
                return None, finalize
            disabled = select(Worker.name).where(Worker.disabled_at.is_not(None))
            q = (
                select(Job)
                .where(
                    Job.target.in_(w.targets),
                    or_(
                        Job.state == JobState.QUEUED,
                        and_(
                            Job.state == JobState.BUILT,
                            Job.builder != w.name,
                            Job.builder.not_in(disabled),
                        ),
                    ),
                )
                .order_by(Job.id)
                .limit(1)
            )
            if self.db.is_postgres:
                q = q.with_for_update(skip_locked=True)
            job = (await s.execute(q)).scalar_one_or_none()
            if job is None:
                return None, finalize
            build = await s.get(Build, job.build_id)
            assert build is not None and build.version is not None
            request = msgspec.json.decode(build.request, type=BuildRequest)
            try:
                inputs = await input_bundles(s, request, self.registry.trusted)
            except ShipyardError as exc:  # e.g. its model's signer was untrusted since submit
                why = f"an input bundle cannot be handed to a worker: {exc}"
                job.state, job.reason, job.lease_token = JobState.FAILED, why[:4000], None
                job.note(why)
                s.add(JobLog(job_id=job.id, line=f"[central] {why}"))
                return None, finalize | {job.build_id}
            builder = await self._builder_of(s, job)
            return self._grant(s, job, w, build, request, inputs, builder), finalize

    async def _builder_of(self, s: AsyncSession, job: Job) -> Worker | None:
        return (
            await self.workers.find(s, job.builder or "") if job.state == JobState.BUILT else None
        )

    def _grant(  # noqa: PLR0913 - one lease's parts, gathered by the caller
        self,
        s: AsyncSession,
        job: Job,
        w: Worker,
        build: Build,
        request: BuildRequest,
        inputs: dict[str, BundleToVerify],
        builder: Worker | None,
    ) -> Lease:
        verify = job.state == JobState.BUILT
        job.worker, job.lease_token, job.lease_expires = w.name, uuid.uuid4().hex, self._expiry()
        to_verify = None
        if verify:
            job.state = JobState.VERIFYING
            job.verify_attempts += 1
            what = f"verification {job.verify_attempts}: leased by {w.name}"
            assert builder is not None
            to_verify = BundleToVerify(
                manifest=base64.b64encode(job.result_manifest or b"").decode(),
                signature=job.result_signature or "",
                builder=builder.name,
                builder_key=builder.public_key or "",
            )
        else:
            job.state = JobState.RUNNING
            job.attempts += 1
            what = f"attempt {job.attempts}: leased by {w.name}"
        job.note(what)
        s.add(JobLog(job_id=job.id, line=f"[central] {what}"))
        return Lease(
            inputs=inputs,
            job_id=job.id,
            build_id=job.build_id,
            lease_token=job.lease_token,
            lease_seconds=self.lease_seconds,
            target=job.target,
            request=request,
            attempt=job.verify_attempts if verify else job.attempts,
            phase="verify" if verify else "build",
            version=build.version or 0,
            verify=to_verify,
        )

    # ---- while working ---------------------------------------------------------------------

    @staticmethod
    async def _held(s: AsyncSession, job_id: int, token: str, principal: Principal) -> Job:
        j = await s.get(Job, job_id)
        if j is None:
            raise NotFoundError(f"job {job_id} not found")
        if j.state == JobState.CANCELLED:
            return j
        if j.state not in HELD or j.lease_token != token:
            raise ConflictError(
                f"job {job_id} is not leased to you any more (state {j.state}); drop it"
            )
        principal.require_worker(j.worker or "")
        return j

    async def heartbeat(self, job_id: int, token: str, principal: Principal) -> HeartbeatReply:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, token, principal)
            if j.state == JobState.CANCELLED:
                return HeartbeatReply(cancelled=True)
            j.lease_expires = self._expiry()
            w = await self.workers.find(s, j.worker or "")
            w.last_seen = utcnow()
        return HeartbeatReply(cancelled=False)

    async def append_logs(
        self, job_id: int, token: str, lines: list[str], principal: Principal
    ) -> None:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, token, principal)
            if j.state == JobState.CANCELLED:  # _held lets it through without the lease check
                return
            for line in lines[:MAX_LOG_LINES]:
                s.add(JobLog(job_id=j.id, line=line[:2000]))

    # ---- results ---------------------------------------------------------------------------

    async def _check_built(
        self, data: bytes, signature: str, build: Build, job: Job, builder: Worker
    ) -> Manifest:
        """The result must name this job, be signed by its builder's registered key over
        exactly its files, with every blob uploaded, and carry provenance for this job."""
        manifest = decode(data)
        check_paths(manifest)
        named = (manifest.model.name, manifest.model.version, manifest.bundle_key())
        req = msgspec.json.decode(build.request, type=BuildRequest)
        key = req.bundle_key(job.target)
        if named != (build.model, build.version, key):
            raise Unprocessable(
                f"result names {named}, the job is ({build.model!r}, {build.version}, {key!r})"
            )
        trusted = TrustedKeys.of((builder.public_key or "").encode())
        authenticate(manifest, data, signature.encode(), trusted)
        files = {f.path: f.sha256 for f in manifest.files}
        for f in manifest.files:
            info = await self.blobs.stat(f.sha256)
            if info is None or info.size != f.size:
                raise Unprocessable(
                    f"result file {f.path!r}: blob {f.sha256[:19]}… missing or wrong size"
                )
        if PROVENANCE_FILE not in files:
            raise Unprocessable(f"the result carries no {PROVENANCE_FILE}")
        size = next(f.size for f in manifest.files if f.path == PROVENANCE_FILE)
        if size > MAX_PROVENANCE_BYTES:
            raise Unprocessable(f"{PROVENANCE_FILE} of {size} bytes is over {MAX_PROVENANCE_BYTES}")
        check_provenance(
            await self.blobs.store.read_bytes(files[PROVENANCE_FILE], MAX_PROVENANCE_BYTES),
            trusted,
            params=BuildParameters.for_job(req, job.target, build.version or 0),
            builder=builder.name,
            files={p: d for p, d in files.items() if p != PROVENANCE_FILE},
        )
        return manifest

    async def complete(self, job_id: int, done: JobDone, principal: Principal) -> None:
        annotate(**{"shipyard.job.id": job_id, "shipyard.worker": principal.worker})
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, done.lease_token, principal)  # 409/403 before 422
            if j.state == JobState.CANCELLED:
                return
            verdict = None
            if j.state == JobState.VERIFYING:
                verdict = await self._verified(s, j, done)
            else:
                build = await s.get(Build, j.build_id)
                builder = await self._active(s, j.worker or "")
                assert build is not None
                data = unb64(done.manifest, "manifest", Unprocessable)
                manifest = await self._check_built(data, done.signature, build, j, builder)
                await self.blobs.renew(s, (f.sha256 for f in manifest.files), "result")
                j.state, j.builder, j.lease_token, j.reason = JobState.BUILT, builder.name, None, ""
                j.result_manifest, j.result_signature = data, done.signature
                j.note(
                    f"attempt {j.attempts}: built and signed by {builder.name} ({manifest.quality.config})"
                )
        if verdict is not None:
            await self._register(j, verdict)
        await self.jobs_changed.notify()
        await self.finalizer.maybe_finalize(j.build_id)

    async def _verified(self, s: AsyncSession, j: Job, done: JobDone) -> tuple[str, dict] | None:
        """Check the verifier's attestation; returns (attestation, predicate) when it passed."""
        verifier = await self._active(s, j.worker or "")
        builder = await self.workers.find(s, j.builder or "")
        if builder.disabled_at is not None:  # disabled while this was being verified
            j.state, j.lease_token = JobState.FAILED, None
            j.reason = f"built by worker {builder.name}, disabled since: not registered"
            j.note(j.reason)
            return None
        trusted = TrustedKeys.of((verifier.public_key or "").encode())
        pred = check_verification(
            done.attestation.encode(),
            trusted,
            manifest_digest=sha256_bytes(j.result_manifest or b""),
            verifier=verifier.name,
            builder=j.builder or "",
        )
        # registering; should central die before it ends, the expiry sends the job back to
        # verification (registering the same bytes again is a no-op)
        j.lease_token = None
        if not pred["passed"]:
            j.state = JobState.FAILED
            j.reason = (
                f"independent verification by {verifier.name} failed: {pred.get('reason', '')}"[
                    :4000
                ]
            )
            j.note(j.reason)
            return None
        j.attestation = done.attestation
        j.note(f"verified by {verifier.name}")
        return done.attestation, pred

    async def _register(self, j: Job, verdict: tuple[str, dict]) -> None:
        """A verified bundle enters its version (signed by its builder) and the build cache."""
        attestation, _pred = verdict
        async with self.db.session() as s:
            build = await s.get(Build, j.build_id)
            builder = await self.workers.find(s, j.builder or "")
        assert build is not None and build.version is not None

        async def still_verified(s: AsyncSession) -> None:
            """Inside the registering transaction: not cancelled or withdrawn, and its
            builder not disabled, meanwhile (rows locked on PostgreSQL)."""
            pg = self.db.is_postgres
            q = select(Job).where(Job.id == j.id)
            row = (await s.execute(q.with_for_update() if pg else q)).scalar_one()
            if row.state != JobState.VERIFYING:
                raise ConflictError(f"job {j.id} became {row.state} meanwhile")
            qw = select(Worker).where(Worker.name == builder.name)
            w = (await s.execute(qw.with_for_update() if pg else qw)).scalar_one()
            if w.disabled_at is not None:
                raise ForbiddenError(f"built by worker {w.name}, disabled since")

        req = msgspec.json.decode(build.request, type=BuildRequest)
        upload = BundleUpload(
            model=build.model,
            version=build.version,
            target=req.bundle_key(j.target),
            manifest=j.result_manifest or b"",
            signature=j.result_signature or "",
        )
        failure = ""
        try:
            await self.registry.put_bundle(
                upload,
                builder.name,
                trusted=TrustedKeys.of((builder.public_key or "").encode()),
                provenance=Provenance(builder.name, j.worker or "", attestation),
                precondition=still_verified,
            )
        except RegistryError as exc:  # the blob store failed, not the bundle: verify again
            await self._defer_verified(j.id, f"verified, but the blob store failed: {exc}")
            return
        except ShipyardError as exc:  # e.g. the version was sealed meanwhile
            failure = f"verified, but could not be registered: {exc}"
        if failure:
            await self._end_verified(j.id, failure)
            return
        async with self.db.transaction() as s:
            row = await s.get(Job, j.id)
            assert row is not None
            if row.state != JobState.VERIFYING:
                row.note(f"registered in v{build.version}, but the job was {row.state} meanwhile")
                return
            row.state = JobState.PASSED
            key = cache_key(row.cache_key, builder.toolchain)
            if await s.get(BuildCache, key) is None:
                s.add(
                    BuildCache(
                        cache_key=key,
                        manifest=j.result_manifest,
                        model=build.model,
                        version=build.version,
                        worker=builder.name,
                    )
                )

    async def _defer_verified(self, job_id: int, why: str) -> None:
        """Back to waiting for verification, the attempt not counted: a registry outage is
        not a verdict on the bundle (registering the same bytes later is a no-op)."""
        async with self.db.transaction() as s:
            row = await s.get(Job, job_id)
            if row is not None and row.state == JobState.VERIFYING:
                row.state, row.worker = JobState.BUILT, None
                row.verify_attempts = max(0, row.verify_attempts - 1)
                row.note(why[:1000])
        await self.jobs_changed.notify()

    async def _end_verified(self, job_id: int, failure: str) -> None:
        """A verified result that cannot be registered fails (unless it ended meanwhile)."""
        async with self.db.transaction() as s:
            row = await s.get(Job, job_id)
            if row is not None and row.state == JobState.VERIFYING:
                row.state, row.reason = JobState.FAILED, failure[:4000]
                row.note(failure)

    async def fail(self, job_id: int, done: JobDone, principal: Principal) -> None:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, done.lease_token, principal)
            if j.state == JobState.CANCELLED:
                return
            verifying = j.state == JobState.VERIFYING
            tries = j.verify_attempts if verifying else j.attempts
            j.note(
                f"{'verification' if verifying else 'attempt'} {tries} on {j.worker}: {done.reason[:1000]}"
            )
            j.lease_token = None
            if done.retry and tries < self.max_attempts:
                j.state, j.worker = (JobState.BUILT if verifying else JobState.QUEUED), None
            else:
                j.state, j.reason = JobState.FAILED, done.reason[:4000]
        await self.jobs_changed.notify()
        await self.finalizer.maybe_finalize(j.build_id)

"""Build jobs: submit, lease by hardware, heartbeat, complete, register the version.

A build is split into one job per target. Workers (the in-process one, remote GPU machines)
advertise the targets they can build and long-poll for a lease. Leases live in the database:
``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, the single-writer transaction on SQLite,
so a job is never leased twice at once. A lease that stops heartbeating expires and the job is
requeued (bounded attempts); only the current lease holder may complete a job. When every job
has ended, the passed ones are registered as one new version (signed by central's key) and,
if asked and every gate passed, promoted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import anyio
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts import atomic, sourcetar
from artifacts.digests import is_digest
from artifacts.errors import ShipyardError
from artifacts.manifest import decode, encode
from artifacts.names import check_name
from artifacts.quality import TASKS, thresholds_for
from artifacts.targets import TARGETS, target_spec
from artifacts.wire import (
    BuildCreated,
    BuildInfo,
    BuildRequest,
    HeartbeatReply,
    JobDone,
    JobInfo,
    Lease,
    LogLine,
    WorkerHello,
)
from central.db.models import Build, BuildCache, Job, JobLog, Worker
from central.errors import Unprocessable, conflict, not_found
from central.registry import Principal, iso

log = logging.getLogger("shipyard.central.builds")

BUILDABLE = ("onnx-fp32", "onnx-int8", "openvino-int8", "tensorrt-fp16", "tensorrt-int8")
TERMINAL = ("passed", "failed", "cancelled")
LOCAL_WORKER_TOKEN = "local-worker.token"
MAX_LOG_LINES = 200


def cache_prefix(req: BuildRequest, target: str) -> str:
    """Everything about a job that determines its bundle, except the builder's toolchain."""
    key = {
        "source": req.source_blob,
        "task": req.task,
        "target": target,
        "calibration": req.calibration_blob,
        "eval": req.eval_blob,
        "thresholds": sorted(req.thresholds.items()),
        "max_batch": req.max_batch,
        "model": req.model,
    }
    return "sha256:" + hashlib.sha256(msgspec.json.encode(key, order="sorted")).hexdigest()


def cache_key(prefix: str, toolchain: dict[str, str]) -> str:
    payload = prefix.encode() + msgspec.json.encode(toolchain, order="sorted")
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def capability_gap(target: str, workers: list[Worker]) -> str:
    """Why no live worker can build ``target`` (empty: one can)."""
    if any(target in w.targets.split(",") for w in workers):
        return ""
    spec = target_spec(target)
    described = ", ".join(f"{w.name} ({_describe(w)})" for w in workers) or "none"
    need = (
        "an NVIDIA GPU with TensorRT"
        if spec.backend == "tensorrt"
        else f"a worker that builds {target}"
    )
    return f"no live worker can build {target}: it needs {need} (live workers: {described})"


def _describe(w: Worker) -> str:
    caps = msgspec.json.decode(w.capabilities)
    gpus = caps.get("gpus") or []
    gpu = (
        f"{gpus[0]['name']} sm_{gpus[0]['compute_capability'].replace('.', '')}"
        if gpus
        else "no GPU"
    )
    trt = f"TensorRT {caps['tensorrt']}" if caps.get("tensorrt") else "no TensorRT"
    return f"{caps.get('arch', '?')}, {gpu}, {trt}"


class BuildService:
    def __init__(self, service) -> None:
        self.svc = service
        self.config = service.config
        self.db = service.db
        self.registry = service.registry
        self._cond = asyncio.Condition()
        self._reaper: asyncio.Task | None = None
        self._local: list[subprocess.Popen] = []
        self._finalizing: set[int] = set()

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever())
        if self.config.local_workers > 0:
            token = await self._local_token()
            host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "") else self.config.host
            url = f"http://{host}:{self.config.port}"
            for i in range(self.config.local_workers):
                self._local.append(self._spawn_local(url, token, f"local-{i + 1}"))

    def _spawn_local(self, url: str, token: str, name: str) -> subprocess.Popen:
        work = self.config.home_path / "worker" / name
        work.mkdir(parents=True, exist_ok=True)
        logfile = open(work / "worker.log", "ab")  # noqa: SIM115 - lives as long as the worker
        cmd = [
            sys.executable,
            "-c",
            "import sys; from builder.cli import main; sys.exit(main())",
            "worker",
            "--central",
            url,
            "--name",
            name,
            "--work-dir",
            str(work),
            "--lease-wait",
            "10",
            "--build-timeout",
            str(int(self.config.build_timeout_s)),
        ]
        env = {**os.environ, "SHIPYARD_WORKER_TOKEN": token}
        log.info("starting in-process build worker %s (log: %s)", name, work / "worker.log")
        return subprocess.Popen(
            cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    async def _local_token(self) -> str:
        path = self.config.home_path / LOCAL_WORKER_TOKEN
        if path.exists():
            return path.read_text().strip()
        token = await self.registry.create_token("local-worker", ["build"], actor="central")
        atomic.write_bytes(path, (token + "\n").encode(), mode=0o600)
        return token

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for proc in self._local:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self._local:
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, min(5.0, self.config.lease_seconds / 4)))
            try:
                async with self.db.transaction() as s:
                    ended = await self._requeue_expired(s)
                for build_id in ended | await self._unfinished_builds():
                    await self._maybe_finalize(build_id)
            except Exception:  # the reaper must survive a bad moment (e.g. db restart)
                log.exception("build reaper")

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    # ---- submit / status ---------------------------------------------------------------

    def _validate(self, req: BuildRequest) -> None:
        check_name(req.model, "model name")
        if req.task not in TASKS:
            raise Unprocessable(f"unknown task {req.task!r}; choose one of {', '.join(TASKS)}")
        if not req.targets:
            raise Unprocessable("no targets requested")
        for t in req.targets:
            if t not in TARGETS:
                raise Unprocessable(f"unknown target {t!r}; known: {', '.join(TARGETS)}")
            if t not in BUILDABLE:
                raise Unprocessable(
                    f"target {t!r} has no builder yet; buildable: {', '.join(BUILDABLE)}"
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
            if self.registry.blobs.stat(digest) is None:
                raise Unprocessable(
                    f"{what} blob {digest} has not been uploaded (PUT /v1/blobs/{{digest}} first)"
                )

    async def submit(self, req: BuildRequest, actor: str) -> BuildCreated:
        self._validate(req)
        path = self.registry.blobs.path(req.source_blob)
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
                state="running",
                created_by=actor,
            )
            s.add(build)
            await s.flush()
            jobs = [
                Job(build_id=build.id, target=t, state="queued", cache_key=cache_prefix(req, t))
                for t in req.targets
            ]
            s.add_all(jobs)
            await s.flush()
            self.registry._audit(
                s,
                actor,
                "build.submit",
                f"#{build.id} {req.model} [{','.join(req.targets)}]",
                req.source_blob,
                "ok",
            )
            created = BuildCreated(
                build_id=build.id,
                jobs=[JobInfo(id=j.id, target=j.target, state=j.state) for j in jobs],
            )
        await self._notify()
        return created

    async def _live_workers(self, s: AsyncSession) -> list[Worker]:
        horizon = time.time() - max(30.0, 3 * self.config.lease_seconds)
        return list((await s.execute(select(Worker).where(Worker.last_seen >= horizon))).scalars())

    def _job_info(self, j: Job, workers: list[Worker]) -> JobInfo:
        state, reason = j.state, j.reason
        if state == "queued":
            gap = capability_gap(j.target, workers)
            if gap:
                state, reason = "waiting-for-capable-worker", gap
        manifest = (
            msgspec.to_builtins(decode(j.result_manifest))
            if j.result_manifest and j.state == "passed"
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
            history=[h for h in j.history.split("\n") if h],
            manifest=manifest,
        )

    async def get(self, build_id: int) -> BuildInfo:
        async with self.db.session() as s:
            b = await s.get(Build, build_id)
            if b is None:
                raise not_found(f"build #{build_id}")
            jobs = (
                (await s.execute(select(Job).where(Job.build_id == build_id).order_by(Job.id)))
                .scalars()
                .all()
            )
            workers = await self._live_workers(s)
        return self._build_info(b, jobs, workers)

    def _build_info(self, b: Build, jobs, workers) -> BuildInfo:
        return BuildInfo(
            id=b.id,
            model=b.model,
            task=b.task,
            state=b.state,
            created_at=iso(b.created_at),
            finished_at=iso(b.finished_at),
            version=b.version,
            promoted_to=b.promoted_to,
            detail=b.detail,
            jobs=[self._job_info(j, workers) for j in jobs],
        )

    async def list(self, limit: int = 50) -> list[BuildInfo]:
        async with self.db.session() as s:
            builds = (
                (await s.execute(select(Build).order_by(Build.id.desc()).limit(limit)))
                .scalars()
                .all()
            )
            ids = [b.id for b in builds]
            jobs = (
                (await s.execute(select(Job).where(Job.build_id.in_(ids)).order_by(Job.id)))
                .scalars()
                .all()
                if ids
                else []
            )
            workers = await self._live_workers(s)
        by_build: dict[int, list[Job]] = {}
        for j in jobs:
            by_build.setdefault(j.build_id, []).append(j)
        return [self._build_info(b, by_build.get(b.id, []), workers) for b in builds]

    async def logs(self, build_id: int, after: int = 0, limit: int = 500) -> list[LogLine]:
        async with self.db.session() as s:
            if await s.get(Build, build_id) is None:
                raise not_found(f"build #{build_id}")
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
                raise not_found(f"build #{build_id}")
            if b.state not in ("running",):
                raise conflict(f"build #{build_id} is already {b.state}")
            jobs = (await s.execute(select(Job).where(Job.build_id == build_id))).scalars().all()
            for j in jobs:
                if j.state not in TERMINAL:
                    j.state = "cancelled"
                    j.reason = f"cancelled by {actor}"
                    j.lease_token = None
            b.state = "cancelled"
            b.finished_at = dt.datetime.now(dt.UTC)
            b.detail = f"cancelled by {actor}; nothing registered"
            self.registry._audit(s, actor, "build.cancel", f"#{build_id} {b.model}", "", "ok")
        return await self.get(build_id)

    # ---- workers -----------------------------------------------------------------------

    async def hello(self, hello: WorkerHello) -> None:
        check_name(hello.name, "worker name")
        targets = [t for t in hello.targets if t in BUILDABLE]
        caps = msgspec.json.encode(hello.capabilities)
        data = {
            "capabilities": caps,
            "targets": ",".join(targets),
            "toolchain": msgspec.json.encode(hello.toolchain, order="sorted"),
            "last_seen": time.time(),
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

    async def _worker(self, s: AsyncSession, name: str) -> Worker:
        w = (await s.execute(select(Worker).where(Worker.name == name))).scalar_one_or_none()
        if w is None:
            raise not_found(f"worker {name!r} (POST /v1/workers first)")
        return w

    async def _requeue_expired(self, s: AsyncSession) -> set[int]:
        """Expired leases: requeue (or fail after max attempts). Returns builds to finalize."""
        now = time.time()
        q = select(Job).where(Job.state == "running", Job.lease_expires < now)
        if self.db.is_postgres:
            q = q.with_for_update(skip_locked=True)
        ended: set[int] = set()
        for j in (await s.execute(q)).scalars():
            note = f"attempt {j.attempts}: lease of {j.worker} expired (no heartbeat for {self.config.lease_seconds:.0f} s)"
            s.add(JobLog(job_id=j.id, line=f"[central] {note}"))
            self._history(j, note)
            j.lease_token = None
            if j.attempts >= self.config.max_job_attempts:
                j.state = "failed"
                j.reason = f"gave up after {j.attempts} attempts: " + "; ".join(
                    h for h in j.history.split("\n") if h
                )
                ended.add(j.build_id)
            else:
                j.state = "queued"
                j.worker = None
        return ended

    @staticmethod
    def _history(j: Job, note: str) -> None:
        j.history = (j.history + "\n" + note).strip()
        j.updated_at = dt.datetime.now(dt.UTC)

    async def lease(self, worker: str, wait_s: float) -> Lease | None:
        """Long-poll for a job this worker can build (None after ``wait_s``)."""
        deadline = time.monotonic() + max(0.0, min(wait_s, 60.0))
        while True:
            lease, finalize = await self._try_lease(worker)
            for build_id in finalize:
                await self._maybe_finalize(build_id)
            if lease is not None:
                return lease
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            async with self._cond:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), timeout=min(remaining, 1.0))

    async def _try_lease(self, worker_name: str) -> tuple[Lease | None, set[int]]:
        finalize: set[int] = set()
        async with self.db.transaction() as s:
            finalize |= await self._requeue_expired(s)
            w = await self._worker(s, worker_name)
            w.last_seen = time.time()
            targets = [t for t in w.targets.split(",") if t]
            if not targets:
                return None, finalize
            q = (
                select(Job)
                .where(Job.state == "queued", Job.target.in_(targets))
                .order_by(Job.id)
                .limit(16)
            )
            if self.db.is_postgres:
                q = q.with_for_update(skip_locked=True)
            toolchain = msgspec.json.decode(w.toolchain or b"{}")  # part of the build-cache key
            for job in (await s.execute(q)).scalars():
                hit = await s.get(BuildCache, cache_key(job.cache_key, toolchain))
                if hit is not None:
                    job.state, job.cached, job.result_manifest = "passed", True, hit.manifest
                    self._history(
                        job,
                        f"served from the build cache (toolchain of {worker_name}); not rebuilt",
                    )
                    s.add(
                        JobLog(
                            job_id=job.id,
                            line="[central] identical build found in the build cache; reused",
                        )
                    )
                    finalize.add(job.build_id)
                    continue
                build = await s.get(Build, job.build_id)
                job.state = "running"
                job.worker = worker_name
                job.lease_token = uuid.uuid4().hex
                job.lease_expires = time.time() + self.config.lease_seconds
                job.attempts += 1
                self._history(job, f"attempt {job.attempts}: leased by {worker_name}")
                s.add(
                    JobLog(
                        job_id=job.id,
                        line=f"[central] attempt {job.attempts}: leased by {worker_name}",
                    )
                )
                lease = Lease(
                    job_id=job.id,
                    build_id=job.build_id,
                    lease_token=job.lease_token,
                    lease_seconds=self.config.lease_seconds,
                    target=job.target,
                    request=msgspec.json.decode(build.request, type=BuildRequest),
                    attempt=job.attempts,
                )
                return lease, finalize
        return None, finalize

    async def _held(self, s: AsyncSession, job_id: int, token: str) -> Job:
        j = await s.get(Job, job_id)
        if j is None:
            raise not_found(f"job {job_id}")
        if j.state == "cancelled":
            return j
        if j.state != "running" or j.lease_token != token:
            raise conflict(f"job {job_id} is not leased to you any more (state {j.state}); drop it")
        return j

    async def heartbeat(self, job_id: int, token: str) -> HeartbeatReply:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, token)
            if j.state == "cancelled":
                return HeartbeatReply(cancelled=True)
            j.lease_expires = time.time() + self.config.lease_seconds
            if j.worker:
                w = (
                    await s.execute(select(Worker).where(Worker.name == j.worker))
                ).scalar_one_or_none()
                if w is not None:
                    w.last_seen = time.time()
        return HeartbeatReply(cancelled=False)

    async def append_logs(self, job_id: int, token: str, lines: list[str]) -> None:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, token)
            for line in lines[:MAX_LOG_LINES]:
                s.add(JobLog(job_id=j.id, line=line[:2000]))

    async def complete(self, job_id: int, done: JobDone) -> None:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, done.lease_token)  # the lease first: 409 wins over 422
            if j.state == "cancelled":
                return
            data = base64.b64decode(done.manifest)
            manifest = decode(data)
            b = await s.get(Build, j.build_id)
            named = (manifest.model.name, manifest.model.version, manifest.target.id)
            if named != (b.model, 0, j.target):
                raise Unprocessable(
                    f"result names {named}, expected ({b.model!r}, 0, {j.target!r})"
                )
            for f in manifest.files:
                info = self.registry.blobs.stat(f.sha256)
                if info is None or info.size != f.size:
                    raise Unprocessable(
                        f"result file {f.path!r}: blob {f.sha256[:19]}… missing or wrong size"
                    )
            j.state, j.result_manifest, j.lease_token, j.reason = "passed", data, None, ""
            self._history(
                j, f"attempt {j.attempts}: passed on {j.worker} ({manifest.quality.config})"
            )
            key = cache_key(j.cache_key, done.toolchain)
            if await s.get(BuildCache, key) is None:
                s.add(BuildCache(cache_key=key, manifest=data))
        await self._maybe_finalize(j.build_id)

    async def fail(self, job_id: int, done: JobDone) -> None:
        async with self.db.transaction() as s:
            j = await self._held(s, job_id, done.lease_token)
            if j.state == "cancelled":
                return
            note = f"attempt {j.attempts} on {j.worker}: {done.reason[:1000]}"
            self._history(j, note)
            j.lease_token = None
            if done.retry and j.attempts < self.config.max_job_attempts:
                j.state, j.worker = "queued", None
            else:
                j.state, j.reason = "failed", done.reason[:4000]
        await self._notify()
        await self._maybe_finalize(j.build_id)

    # ---- finalize ----------------------------------------------------------------------

    async def _unfinished_builds(self) -> set[int]:
        """Builds still open although every job has ended (e.g. a crash mid-finalize)."""
        async with self.db.session() as s:
            open_ids = list(
                (
                    await s.execute(
                        select(Build.id).where(Build.state.in_(("running", "finalizing")))
                    )
                ).scalars()
            )
            if not open_ids:
                return set()
            busy = set(
                (
                    await s.execute(
                        select(Job.build_id).where(
                            Job.build_id.in_(open_ids), Job.state.not_in(TERMINAL)
                        )
                    )
                ).scalars()
            )
        return set(open_ids) - busy

    async def _maybe_finalize(self, build_id: int) -> None:
        """Register the passed jobs as one version once every job has ended (exactly once)."""
        if build_id in self._finalizing:
            return
        self._finalizing.add(build_id)
        try:
            async with self.db.transaction() as s:
                q = select(Build).where(Build.id == build_id)
                if self.db.is_postgres:
                    q = q.with_for_update()
                b = (await s.execute(q)).scalar_one()
                if b.state not in ("running", "finalizing"):
                    return
                jobs = (
                    (await s.execute(select(Job).where(Job.build_id == build_id).order_by(Job.id)))
                    .scalars()
                    .all()
                )
                if any(j.state not in TERMINAL for j in jobs):
                    return
                b.state = "finalizing"
                passed = [(j.target, j.result_manifest) for j in jobs if j.state == "passed"]
                failed = [f"{j.target}: {j.reason[:300]}" for j in jobs if j.state != "passed"]
                req = msgspec.json.decode(b.request, type=BuildRequest)
                version = b.version
            if not passed:
                await self._finish(
                    build_id, "failed", None, "no target passed: " + " | ".join(failed)
                )
                return
            if version is None:
                notes = f"build #{build_id}: passed {', '.join(t for t, _ in passed)}"
                if failed:
                    notes += f"; NOT built: {' | '.join(failed)}"
                version = await self.registry.create_version(
                    b.model, "build-service", source_digest=req.source_blob, notes=notes
                )
                async with self.db.transaction() as s:
                    (await s.get(Build, build_id)).version = version
            key = self.svc.signing_key
            for _target, data in passed:
                m = decode(data)
                stamped = msgspec.structs.replace(
                    m,
                    model=msgspec.structs.replace(m.model, version=version),
                    signing_key_id=key.key_id,
                )
                raw = encode(stamped)
                await self.registry.put_bundle(
                    b.model,
                    version,
                    m.target.id,
                    base64.b64encode(raw).decode(),
                    key.sign(raw).decode(),
                    "build-service",
                )
            state = "passed" if not failed else "partial"
            promoted = None
            detail = f"registered {b.model} v{version} ({len(passed)} of {len(jobs)} targets)"
            if failed:
                detail += "; not built: " + " | ".join(failed)
            if req.promote_to:
                if state == "passed":
                    await self.registry.promote(
                        b.model,
                        req.promote_to,
                        version,
                        Principal("build-service", frozenset({"promote", "pull"})),
                    )
                    promoted = req.promote_to
                    detail += f"; promoted to {req.promote_to}"
                else:
                    detail += f"; NOT promoted to {req.promote_to}: not every target passed"
            await self._finish(build_id, state, promoted, detail)
        except Exception:
            log.exception("finalizing build #%s", build_id)
            raise
        finally:
            self._finalizing.discard(build_id)

    async def _finish(self, build_id: int, state: str, promoted: str | None, detail: str) -> None:
        async with self.db.transaction() as s:
            b = await s.get(Build, build_id)
            b.state, b.promoted_to, b.detail = state, promoted, detail[:4000]
            b.finished_at = dt.datetime.now(dt.UTC)
            self.registry._audit(
                s,
                "build-service",
                "build.finish",
                f"#{build_id} {b.model}: {state}",
                "",
                "ok",
                detail,
            )

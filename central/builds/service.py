"""Builds as their submitters see them: submit, status, logs, cancel.

A build is split into one job per target; workers lease the jobs (:mod:`.leases`); when every
job has ended the passed ones become one version (:mod:`.finalize`).
"""

from __future__ import annotations

import anyio
import msgspec
from sqlalchemy import select

from artifacts import sourcetar
from artifacts.digests import is_digest
from artifacts.errors import (
    ConflictError,
    ForbiddenError,
    InputError,
    NotFoundError,
    ShipyardError,
    Unprocessable,
)
from artifacts.manifest import decode
from artifacts.names import check_name
from artifacts.quality import TASKS, thresholds_for
from artifacts.states import BuildState, JobState
from artifacts.targets import BUILDABLE_TARGETS, INDEX_TARGET, TARGETS, parse_trt_compat
from artifacts.tracing import annotate
from artifacts.variants import parse_prune
from artifacts.wire import BuildCreated, BuildInfo, BuildRequest, JobInfo, LogLine
from central.auth.service import Principal
from central.blobs.service import BlobService
from central.builds.cache import cache_key, cache_prefix
from central.builds.capability import capability_gap, live_workers
from central.builds.deadline import MAX_DEADLINE_S, deadline_of, expiry_note
from central.builds.finalize import Finalizer
from central.builds.index_jobs import CatalogCheck, check_index_request, check_kind
from central.builds.models import Build, BuildCache, Job, JobLog
from central.builds.signal import JobsChanged
from central.db import Database, iso, utcnow
from central.registry.service import (
    RegistryService,
    find_model,
    find_version,
    version_bundles,
)
from central.settings import CentralConfig
from central.workers.models import Worker

# ---- views ---------------------------------------------------------------------------------


def job_info(j: Job, workers: list[Worker], deadline_s: float) -> JobInfo:
    state, reason = JobState(j.state), j.reason
    if state is JobState.QUEUED:
        gap = capability_gap(j.target, workers)
        if gap:
            state, reason = JobState.WAITING, gap
    elif state is JobState.BUILT:
        reason = capability_gap(j.target, workers, besides=j.builder) or reason
    if state in (JobState.WAITING, JobState.BUILT) and j.waiting_since is not None:
        reason += expiry_note(j.waiting_since, deadline_s)
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


def build_info(b: Build, jobs: list[Job], workers: list[Worker], deadline_s: float) -> BuildInfo:
    deadline_s = deadline_of(msgspec.json.decode(b.request, type=BuildRequest), deadline_s)
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
        jobs=[job_info(j, workers, deadline_s) for j in jobs],
    )


# ---- the service ---------------------------------------------------------------------------


def _gate_inputs(req: BuildRequest) -> tuple:
    """What decides a version's bundles besides the target: equal for every build into it."""
    return (
        req.task,
        req.source_blob,
        req.calibration_blob,
        req.eval_blob,
        sorted(req.thresholds.items()),
        req.max_batch,
        sorted(req.trt_compat),
        req.prune,
    )


def check_targets(targets: list[str], *, index: bool) -> None:
    if not targets:
        raise Unprocessable("no targets requested")
    for t in targets:
        if t not in TARGETS:
            raise Unprocessable(f"unknown target {t!r}; known: {', '.join(TARGETS)}")
        if t not in BUILDABLE_TARGETS and not (index and t == INDEX_TARGET):
            raise Unprocessable(
                f"target {t!r} has no builder yet; buildable: {', '.join(BUILDABLE_TARGETS)}"
            )
    if len(set(targets)) != len(targets):
        raise Unprocessable("targets are listed twice")


def check_options(req: BuildRequest) -> None:
    try:
        if parse_trt_compat(req.trt_compat) != req.trt_compat:
            raise ValueError("trt_compat must list each of version, hardware, same-cc once, sorted")
    except ValueError as exc:
        raise Unprocessable(str(exc)) from exc
    if req.worker_deadline_s is not None and not 0 < req.worker_deadline_s <= MAX_DEADLINE_S:
        raise Unprocessable(
            f"worker_deadline_s must be above 0 and at most {MAX_DEADLINE_S:g} s (7 days)"
        )
    if req.prune is not None and not req.prune.strip():
        raise Unprocessable("prune must be omitted or layers=K[,steps=N][,budget=SECONDS]")
    try:
        spec = parse_prune(req.prune)
    except InputError as exc:
        raise Unprocessable(str(exc)) from exc
    if spec is not None and spec.as_text() != req.prune:
        raise Unprocessable(f"prune must be written as {spec.as_text()!r} (canonical)")
    if spec is not None and req.task == "index":
        raise Unprocessable("an index build cannot be pruned")
    if req.into_version is not None and req.into_version < 1:
        raise Unprocessable("into_version must be a version number (1 or more)")


class BuildService:
    def __init__(
        self,
        db: Database,
        blobs: BlobService,
        registry: RegistryService,
        finalizer: Finalizer,
        jobs_changed: JobsChanged,
        config: CentralConfig,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.registry = registry
        self.finalizer = finalizer
        self.audit = registry.audit
        self.jobs_changed = jobs_changed
        self.lease_seconds = config.lease_seconds
        self.worker_deadline_s = config.worker_deadline_s
        self.max_catalog_bytes = config.max_catalog_bytes
        self.check_catalog = CatalogCheck()

    async def _validate(self, req: BuildRequest) -> None:
        check_name(req.model, "model name")
        index = req.task == "index"
        if req.task not in TASKS and not index:
            raise Unprocessable(
                f"unknown task {req.task!r}; choose one of {', '.join(TASKS)} or index"
            )
        check_targets(req.targets, index=index)
        if req.promote_to is not None:
            check_name(req.promote_to, "channel name")
        if not 1 <= req.max_batch <= 4096:
            raise Unprocessable("max_batch must be between 1 and 4096")
        check_options(req)
        if not index:
            thresholds_for(req.task, req.thresholds, basis="task" if req.prune else "fidelity")
        for what, digest in (
            ("source", req.source_blob),
            ("calibration", req.calibration_blob),
            ("eval", req.eval_blob),
        ):
            if digest is None:
                continue
            if not is_digest(digest):
                raise Unprocessable(f"{what}_blob {digest!r} is not a sha256 digest")
            await self.blobs.require(digest, what)

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

    async def _check_open_version(self, req: BuildRequest, principal: Principal) -> None:
        """``into_version``: a target missing from a version (e.g. it had no capable worker) is
        built into it later — by the version's creator or an admin, only while no channel ever
        pointed at it (not sealed), from the same source and task, and only for targets it
        neither holds nor is building."""
        number = req.into_version
        async with self.db.session() as s:
            try:
                v = await find_version(s, await find_model(s, req.model), number or 0)
            except NotFoundError as exc:
                raise Unprocessable(f"into_version: {exc}") from exc
            if v.created_by != principal.name and "admin" not in principal.scopes:
                raise ForbiddenError(
                    f"{req.model} v{number} was created by {v.created_by!r}; only they or an "
                    "admin may build into it"
                )
            if v.sealed:
                raise ConflictError(
                    f"{req.model} v{number} was promoted, so it is sealed and takes no new "
                    "targets; build a new version"
                )
            if v.source_digest != req.source_blob:
                raise Unprocessable(
                    f"{req.model} v{number} was built from {v.source_digest[:19]}…, not from "
                    f"{req.source_blob[:19]}…: a version holds one model's weights"
                )
            keys = {req.bundle_key(t) for t in req.targets}
            held = {b.target for b in await version_bundles(s, v)} & keys
            if held:
                raise ConflictError(
                    f"{req.model} v{number} already holds {', '.join(sorted(held))}"
                )
            rows = (
                await s.execute(
                    select(Build.request, Job.target, Job.state)
                    .join(Job, Job.build_id == Build.id)
                    .where(Build.model == req.model, Build.version == number)
                )
            ).all()
        building = set()
        for raw, target, state in rows:
            earlier = msgspec.json.decode(raw, type=BuildRequest)
            if earlier.task != req.task:
                raise Unprocessable(
                    f"{req.model} v{number} was built for task {earlier.task}, not {req.task}"
                )
            if earlier.variant() != req.variant():
                continue  # another model variant of the same source: its own gate
            if _gate_inputs(earlier) != _gate_inputs(req):
                raise Unprocessable(
                    f"{req.model} v{number} was built with other task, data, thresholds or "
                    "options: a target added later is held to the same gate"
                )
            if not JobState(state).terminal and target in req.targets:
                building.add(req.bundle_key(target))
        if building:
            raise ConflictError(
                f"an open build is already building {', '.join(sorted(building))} into "
                f"{req.model} v{number}"
            )

    async def submit(self, req: BuildRequest, principal: Principal) -> BuildCreated:
        await self._validate(req)
        if principal.worker is not None:
            raise ForbiddenError(f"worker {principal.worker}'s credential cannot submit builds")
        if req.promote_to is not None and "promote" not in principal.scopes:
            raise ForbiddenError(
                f"token {principal.name!r} lacks the 'promote' scope that promote_to "
                f"{req.promote_to!r} needs; submit without it and let a promoter promote"
            )
        async with self.db.session() as s:
            await check_kind(s, req)
        if req.task == "index" or req.index is not None:
            async with self.db.session() as s:
                await check_index_request(s, req, self.blobs, principal, self.registry.trusted)
            size = (await self.blobs.require(req.source_blob, "catalog")).size
            if size > self.max_catalog_bytes:
                raise Unprocessable(
                    f"the catalog is {size} bytes, over this service's {self.max_catalog_bytes}: "
                    "split it into an index and deltas, or raise max_catalog_bytes"
                )
            delta = bool(req.index and req.index.base_version)
            async with self.blobs.store.local_file(req.source_blob) as path:
                await self.check_catalog(req.source_blob, path, delta=delta)
        else:
            try:
                async with self.blobs.store.local_file(req.source_blob) as path:
                    await anyio.to_thread.run_sync(sourcetar.validate, path)
            except ShipyardError as exc:
                raise Unprocessable(f"source archive refused: {exc}") from exc
        if req.into_version is not None:
            await self._check_open_version(req, principal)
            hit = None
        else:
            hit = await self._cached_version(req)
        cached, manifests = hit if hit else (None, {})
        version = (
            req.into_version
            or cached
            or await self.registry.create_version(
                req.model,
                principal.name,
                source_digest=req.source_blob,
                notes="built by the build service",
            )
        )
        state = JobState.PASSED if cached else JobState.QUEUED
        async with self.db.transaction() as s:
            await self.blobs.renew(s, req.blobs(), "build input")
            if cached or req.into_version:  # an existing version: still there (gc), held
                try:
                    await find_version(s, await find_model(s, req.model), version, lock=True)
                except NotFoundError as exc:
                    raise ConflictError(f"{exc} (deleted meanwhile): submit again") from exc
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
        annotate(
            **{
                "shipyard.build.id": created.build_id,
                "shipyard.model": req.model,
                "shipyard.version": version,
                "shipyard.targets": ",".join(req.targets),
                "shipyard.build.cached": bool(cached),
            }
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
            return build_info(
                b, list(jobs), await live_workers(s, self.lease_seconds), self.worker_deadline_s
            )

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
        return [
            build_info(b, by_build.get(b.id, []), workers, self.worker_deadline_s) for b in builds
        ]

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

"""Mark and sweep over the registry: versions retention lets go, then blobs nothing references,
then old build logs and (exported first) old audit rows.

Safe beside a running service: a version is deleted inside a transaction that holds its row
and re-checks that no channel points at it and no open build builds into it (promotion takes
the same row lock). A blob is deleted only by a conditional ``DELETE … WHERE created_at <
cutoff`` — every upload, and every registration that names a blob, sets ``created_at`` to now
in its own transaction — and its file only after that delete committed, so a push racing the
sweep either keeps its blobs or is told to upload them again; a registered bundle never names
a missing blob. Unreferenced blobs younger than the grace period stay (uploads in flight).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import anyio
import msgspec
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.atomic import write_bytes
from artifacts.errors import ShipyardError
from artifacts.manifest import decode
from artifacts.states import TERMINAL_JOB_STATES, BuildState
from artifacts.targets import INDEX_TARGET
from artifacts.wire import BuildRequest, NodeReport
from central.audit.models import AuditEvent
from central.audit.service import AuditLog
from central.blobs.bundle_artifact import bundle_tag
from central.blobs.models import Blob
from central.blobs.store import BlobStore, LocalBlobStore, blob_store_for
from central.builds.models import Build, BuildCache, Job, JobLog
from central.channels.models import Channel, ChannelEvent
from central.db import Database, utcnow
from central.fleet.models import Node
from central.gc.policy import (
    Decision,
    Event,
    Facts,
    RetentionPolicy,
    decide,
    recent_history,
)
from central.registry.models import Bundle, Model, Version
from central.settings import CentralConfig

ACTOR = "gc"
REGISTRY_DEADLINE_S = 30.0  # an OCI registry slower than this is treated as down
log = logging.getLogger("shipyard.central.gc")


@dataclass
class Plan:
    versions: list[Decision] = field(default_factory=list)
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (digest, bytes) to delete
    orphans: list[Path] = field(default_factory=list)  # blob files without a row
    logs: int = 0  # build log lines of long-finished builds
    audit: int = 0  # audit rows past retention
    cutoff: dt.datetime = field(default_factory=utcnow)  # blobs touched before this may go

    @property
    def deleted_versions(self) -> list[Decision]:
        return [d for d in self.versions if not d.keep]


@dataclass
class Result:
    versions: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # changed meanwhile: kept
    blobs: int = 0
    bytes: int = 0
    logs: int = 0
    audit: int = 0
    exported: str | None = None


class Collector:
    def __init__(
        self, db: Database, store: BlobStore, audit: AuditLog, policy: RetentionPolicy
    ) -> None:
        self.db, self.store, self.audit, self.policy = db, store, audit, policy

    @classmethod
    def for_config(cls, config: CentralConfig, policy: RetentionPolicy) -> Collector:
        """Beside a running service: its database and blob store, its in-flight uploads
        left alone."""
        db = Database(config.db_url)
        return cls(db, blob_store_for(config), AuditLog(db), policy)

    async def close(self) -> None:
        await self.db.close()

    # ---- mark ----------------------------------------------------------------------------

    async def plan(self, now: dt.datetime | None = None) -> Plan:
        """Read everything retention looks at, decide, and list the blobs nothing kept needs."""
        now = now or utcnow()
        facts = Facts()
        files: dict[tuple[str, int], set[str]] = {}
        async with self.db.session() as s:
            names = dict((await s.execute(select(Model.id, Model.name))).all())
            await self._read_versions(s, names, facts, files)
            await self._read_channels(s, names, facts)
            await self._read_edges(s, now, facts)
            referenced = await self._read_work(s, facts)
            blobs = {
                d: (size, at)
                for d, size, at in (
                    await s.execute(select(Blob.digest, Blob.size, Blob.created_at))
                ).all()
            }
            logs, audit = await self._counts(s, now)
        decisions = decide(facts, self.policy)
        for d in decisions:
            if d.keep:
                referenced |= files.get((d.model, d.version), set())
        cutoff = now - dt.timedelta(seconds=self.policy.grace_s)
        doomed = [
            (d, size)
            for d, (size, at) in sorted(blobs.items())
            if d not in referenced and at < cutoff
        ]
        return Plan(decisions, doomed, self._orphans(set(blobs), cutoff), logs, audit, cutoff)

    @staticmethod
    async def _read_versions(
        s: AsyncSession, names: dict[int, str], facts: Facts, files: dict[tuple[str, int], set[str]]
    ) -> None:
        """Every version, its files, and what each index version is locked to."""
        by_id: dict[int, tuple[str, int]] = {}
        for vid, mid, number, source in (
            await s.execute(
                select(Version.id, Version.model_id, Version.number, Version.source_digest)
            )
        ).all():
            if mid not in names:  # created while this plan read: next time
                continue
            ref = (names[mid], number)
            by_id[vid] = ref
            facts.versions.setdefault(ref[0], []).append(number)
            files[ref] = {source} if source else set()
        for vid, target, raw in (
            await s.execute(select(Bundle.version_id, Bundle.target, Bundle.manifest))
        ).all():
            if vid not in by_id:
                continue
            m = decode(raw)
            ref = by_id[vid]
            files[ref] |= {f.sha256 for f in m.files}
            if target == INDEX_TARGET and m.index is not None:
                needs = [(m.index.model.name, m.index.model.version)]
                if m.index.base_version:
                    needs.append((ref[0], m.index.base_version))
                facts.locks[ref] = needs

    async def _read_channels(self, s: AsyncSession, names: dict[int, str], facts: Facts) -> None:
        """What each channel points at, and its recent past (rollback targets included)."""
        channels = {c.id: c for c in (await s.execute(select(Channel))).scalars()}
        for c in channels.values():
            if c.version is not None and c.model_id in names:
                facts.channels.setdefault((names[c.model_id], c.version), []).append(c.name)
        events: dict[int, list[Event]] = {}
        for cid, action, version in (
            await s.execute(
                select(ChannelEvent.channel_id, ChannelEvent.action, ChannelEvent.version).order_by(
                    ChannelEvent.channel_id, ChannelEvent.seq
                )
            )
        ).all():
            events.setdefault(cid, []).append(Event(action, version))
        for cid, evs in events.items():
            ch = channels.get(cid)
            if ch is None or ch.model_id not in names:
                continue
            for v in recent_history(evs, self.policy.history):
                facts.history.setdefault((names[ch.model_id], v), []).append(ch.name)

    async def _read_edges(self, s: AsyncSession, now: dt.datetime, facts: Facts) -> None:
        """The versions edge nodes reported running within the window."""
        horizon = now - dt.timedelta(seconds=self.policy.edge_window_s)
        for node in (await s.execute(select(Node).where(Node.last_seen >= horizon))).scalars():
            try:
                report = msgspec.json.decode(node.report, type=NodeReport)
            except msgspec.DecodeError:
                continue
            for nm in report.models:
                if nm.version is not None:
                    facts.edges.setdefault((nm.model, nm.version), []).append(node.name)

    @staticmethod
    async def _read_work(s: AsyncSession, facts: Facts) -> set[str]:
        """Open builds (the versions they build into or read) and the blobs work in flight
        uses: build inputs, results awaiting verification."""
        referenced: set[str] = set()
        open_states = [st for st in BuildState if st.open]
        for b in (await s.execute(select(Build).where(Build.state.in_(open_states)))).scalars():
            if b.version is not None:
                facts.building.setdefault((b.model, b.version), []).append(b.id)
            req = msgspec.json.decode(b.request, type=BuildRequest)
            referenced |= req.blobs()
            if req.index is not None:  # what an open index build embeds with, builds on
                spec = req.index
                for ref in (
                    (spec.model, spec.version),
                    (b.model, spec.base_version),
                    (b.model, spec.previous_version),
                ):
                    if ref[1]:
                        facts.building.setdefault(ref, []).append(b.id)
        for result in (
            await s.execute(
                select(Job.result_manifest).where(
                    Job.state.not_in(TERMINAL_JOB_STATES), Job.result_manifest.is_not(None)
                )
            )
        ).scalars():
            if result:
                referenced |= {f.sha256 for f in decode(result).files}
        return referenced

    async def _counts(self, s: AsyncSession, now: dt.datetime) -> tuple[int, int]:
        """Build log lines and audit rows past retention."""
        finished = now - dt.timedelta(days=self.policy.log_days)
        logs = len(
            (
                await s.execute(
                    select(JobLog.id)
                    .join(Job, Job.id == JobLog.job_id)
                    .join(Build, Build.id == Job.build_id)
                    .where(Build.finished_at.is_not(None), Build.finished_at < finished)
                )
            ).all()
        )
        audit = 0
        if self.policy.audit_days is not None:
            old = now - dt.timedelta(days=self.policy.audit_days)
            audit = len((await s.execute(select(AuditEvent.id).where(AuditEvent.at < old))).all())
        return logs, audit

    def _orphans(self, known: set[str], cutoff: dt.datetime) -> list[Path]:
        """Blob files without a row (a crash between rename and record), past the grace. An
        OCI registry cannot list its blobs: its own garbage collection removes what no
        manifest references."""
        out: list[Path] = []
        if not isinstance(self.store, LocalBlobStore):
            return out
        for file in sorted((self.store.root / "sha256").glob("*/*")):
            if f"sha256:{file.name}" in known:
                continue
            try:
                if file.stat().st_mtime < cutoff.timestamp():
                    out.append(file)
            except FileNotFoundError:  # deleted meanwhile
                continue
        return out

    # ---- sweep ---------------------------------------------------------------------------

    async def apply(self, plan: Plan, *, audit_export: Path | None = None) -> Result:
        result = Result()
        for d in plan.deleted_versions:
            if await self._delete_version(d):
                result.versions.append(f"{d.model} v{d.version}")
            else:
                result.skipped.append(f"{d.model} v{d.version}")
        doomed = plan.blobs
        if result.skipped:  # a version kept after all keeps its blobs: mark again
            again = {d for d, _ in (await self.plan()).blobs}
            doomed = [(d, n) for d, n in plan.blobs if d in again]
        for digest, size in doomed:
            try:
                deleted = await self._delete_blob(digest, plan.cutoff)
            except (ShipyardError, TimeoutError) as exc:  # one slow or refusing delete
                log.warning("blob %s kept: %s", digest[:19], exc)  # is no reason to stop
                result.skipped.append(f"blob {digest[:19]}… ({exc})")
                continue
            if deleted:
                result.blobs += 1
                result.bytes += size
        for file in plan.orphans:
            if await self._delete_orphan(file, plan.cutoff):
                result.blobs += 1
        result.logs = await self._delete_logs()
        if self.policy.audit_days is not None:
            if audit_export is None:
                raise ValueError("audit rows are deleted only after export (--audit-export FILE)")
            result.audit, result.exported = await self._export_audit(audit_export)
        return result

    async def _delete_version(self, d: Decision) -> bool:
        """Re-checked under the version's row lock: a promotion or a build since the plan
        keeps it."""
        async with self.db.transaction() as s:
            model = (await s.execute(select(Model).where(Model.name == d.model))).scalar_one()
            q = select(Version).where(Version.model_id == model.id, Version.number == d.version)
            if self.db.is_postgres:
                q = q.with_for_update()
            v = (await s.execute(q)).scalar_one_or_none()
            if v is None:
                return False
            pointed = (
                await s.execute(
                    select(Channel.id).where(
                        Channel.model_id == model.id, Channel.version == d.version
                    )
                )
            ).first()
            building = (
                await s.execute(
                    select(Build.id).where(
                        Build.model == d.model,
                        Build.version == d.version,
                        Build.state.in_([st for st in BuildState if st.open]),
                    )
                )
            ).first()
            if pointed is not None or building is not None:
                return False
            keys = list(
                (await s.execute(select(Bundle.target).where(Bundle.version_id == v.id))).scalars()
            )
            await s.execute(delete(Bundle).where(Bundle.version_id == v.id))
            await s.execute(
                delete(BuildCache).where(
                    BuildCache.model == d.model, BuildCache.version == d.version
                )
            )
            await s.delete(v)
            self.audit.record(s, ACTOR, "version.delete", f"{d.model} v{d.version}", detail=d.why)
        await self._drop_artifacts(d, keys)
        return True

    async def _drop_artifacts(self, d: Decision, keys: list[str]) -> None:
        """The version's OCI manifests, once its rows are gone (a failed commit keeps both);
        one left behind by a crash only keeps its blobs in the registry a while longer."""
        drop = getattr(self.store, "delete_artifact", None)
        if drop is None:
            return
        for key in keys:
            try:
                with anyio.fail_after(REGISTRY_DEADLINE_S):
                    await drop(bundle_tag(d.model, d.version, key))
            except Exception:
                log.warning(
                    "could not delete the OCI manifest of %s v%s %s", d.model, d.version, key
                )

    async def _delete_blob(self, digest: str, cutoff: dt.datetime) -> bool:
        """The row goes (only if nothing touched it since the cutoff) and the file is moved
        aside *inside* that transaction: a registration naming the blob either touched the row
        first (then this deletes nothing) or finds it gone and is refused. The moved file is
        unlinked after the commit, or put back if the commit fails."""
        trash: Path | None = None
        try:
            async with self.db.transaction() as s:
                gone = cast(
                    CursorResult,
                    await s.execute(
                        delete(Blob).where(Blob.digest == digest, Blob.created_at < cutoff)
                    ),
                )
                if gone.rowcount != 1:  # uploaded or registered again since the plan: stays
                    return False
                self.audit.record(s, ACTOR, "blob.delete", digest[:19], digest=digest)
                if not isinstance(self.store, LocalBlobStore):
                    # before the commit: a row without bytes is refused ("upload it again"),
                    # bytes without a row are only garbage
                    with anyio.fail_after(REGISTRY_DEADLINE_S):  # the row lock is held
                        await self.store.delete(digest)
                    return True
                trash = self._move_aside(digest)
        except BaseException:
            if trash is not None:
                os.replace(trash, self._local().path(digest))
            raise
        if trash is not None:
            trash.unlink(missing_ok=True)
        return True

    def _local(self) -> LocalBlobStore:
        assert isinstance(self.store, LocalBlobStore)
        return self.store

    def _move_aside(self, digest: str) -> Path | None:
        src = self._local().path(digest)
        dst = self._local().tmp / f"gc-{src.name}"
        try:
            os.replace(src, dst)
            os.utime(dst)  # fresh: a starting replica's stale-partial sweep leaves it alone
        except FileNotFoundError:
            return None
        return dst

    async def _delete_orphan(self, file: Path, cutoff: dt.datetime) -> bool:
        """A file without a row: moved aside first, then the row checked (an upload that
        recorded it meanwhile gets it back), then unlinked."""
        digest = f"sha256:{file.name}"
        try:
            if file.stat().st_mtime >= cutoff.timestamp():
                return False
            trash = self._move_aside(digest)
        except FileNotFoundError:
            return False
        if trash is None:
            return False
        async with self.db.session() as s:
            recorded = await s.get(Blob, digest) is not None
        if recorded:
            os.replace(trash, self._local().path(digest))
            return False
        trash.unlink(missing_ok=True)
        return True

    async def _delete_logs(self) -> int:
        finished = utcnow() - dt.timedelta(days=self.policy.log_days)
        async with self.db.transaction() as s:
            ids = (
                select(Job.id)
                .join(Build, Build.id == Job.build_id)
                .where(Build.finished_at.is_not(None), Build.finished_at < finished)
            )
            gone = cast(CursorResult, await s.execute(delete(JobLog).where(JobLog.job_id.in_(ids))))
            return gone.rowcount or 0

    async def _export_audit(self, path: Path) -> tuple[int, str]:
        """Rows past retention to JSONL (written atomically and fsynced), then deleted —
        exactly the rows exported."""
        assert self.policy.audit_days is not None
        old = utcnow() - dt.timedelta(days=self.policy.audit_days)
        async with self.db.transaction() as s:
            rows = list(
                (
                    await s.execute(
                        select(AuditEvent).where(AuditEvent.at < old).order_by(AuditEvent.id)
                    )
                ).scalars()
            )
            lines = [
                json.dumps(
                    {
                        "id": r.id,
                        "at": r.at.isoformat(),
                        "actor": r.actor,
                        "action": r.action,
                        "subject": r.subject,
                        "digest": r.digest,
                        "outcome": r.outcome,
                        "detail": r.detail,
                    },
                    ensure_ascii=False,
                )
                for r in rows
            ]
            if not rows:
                return 0, ""
            if Path(path).exists():  # never overwrite an earlier export (its rows are gone)
                raise FileExistsError(f"{path} exists: name a new file for this export")
            write_bytes(Path(path), ("\n".join(lines) + "\n").encode(), mode=0o600)
            last = rows[-1].id  # exactly the exported rows: older than the cutoff, id <= last
            await s.execute(delete(AuditEvent).where(AuditEvent.at < old, AuditEvent.id <= last))
            self.audit.record(
                s, ACTOR, "audit.export", os.fspath(path), detail=f"{len(rows)} rows exported"
            )
        return len(rows), os.fspath(path)

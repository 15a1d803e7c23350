"""Finalising a build: once every job has ended, register the passed ones as one version
(stamped with its number and signed by central's build key) and promote it if asked.

Exactly once per build: the build row is locked (PostgreSQL) or written by the single writer
(SQLite) while it moves to ``finalizing``; a crash midway is picked up again by the reaper
(the version number, once allocated, is stored on the build and reused).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass

import msgspec
from sqlalchemy import select

from artifacts.manifest import decode
from artifacts.publish import stamp
from artifacts.signing import SigningKey
from artifacts.states import TERMINAL_JOB_STATES, BuildState, JobState
from artifacts.wire import BuildRequest
from central.audit.service import AuditLog
from central.auth.service import Principal
from central.builds.models import Build, Job
from central.channels.service import ChannelService
from central.db import Database, utcnow
from central.registry.service import RegistryService

log = logging.getLogger("shipyard.central.builds")
ACTOR = "build-service"


@dataclass
class Closing:
    """A build whose jobs have all ended: what passed, what did not, what was asked."""

    build_id: int
    model: str
    request: BuildRequest
    version: int | None
    passed: list[bytes]  # result manifests
    failed: list[str]  # "target: reason"
    total: int


class Finalizer:
    def __init__(
        self,
        db: Database,
        registry: RegistryService,
        channels: ChannelService,
        audit: AuditLog,
        signing_key: SigningKey,
    ) -> None:
        self.db = db
        self.registry = registry
        self.channels = channels
        self.audit = audit
        self.signing_key = signing_key
        self._busy: set[int] = set()

    async def unfinished(self) -> set[int]:
        """Builds still open although every job has ended (e.g. a crash mid-finalize)."""
        async with self.db.session() as s:
            open_ids = set(
                (
                    await s.execute(
                        select(Build.id).where(
                            Build.state.in_((BuildState.RUNNING, BuildState.FINALIZING))
                        )
                    )
                ).scalars()
            )
            if not open_ids:
                return set()
            busy = set(
                (
                    await s.execute(
                        select(Job.build_id).where(
                            Job.build_id.in_(open_ids), Job.state.not_in(TERMINAL_JOB_STATES)
                        )
                    )
                ).scalars()
            )
        return open_ids - busy

    async def maybe_finalize(self, build_id: int) -> None:
        """Register the passed jobs as one version once every job has ended (exactly once)."""
        if build_id in self._busy:
            return
        self._busy.add(build_id)
        try:
            closing = await self._close_if_done(build_id)
            if closing is None:
                return
            if not closing.passed:
                detail = "no target passed: " + " | ".join(closing.failed)
                await self._finish(build_id, BuildState.FAILED, None, detail)
                return
            version = await self._register(closing)
            state = BuildState.PARTIAL if closing.failed else BuildState.PASSED
            detail = f"registered {closing.model} v{version} ({len(closing.passed)} of {closing.total} targets)"
            if closing.failed:
                detail += "; not built: " + " | ".join(closing.failed)
            promoted, note = await self._promote_if_asked(closing, version, state)
            await self._finish(build_id, state, promoted, detail + note)
        except Exception:
            log.exception("finalizing build #%s", build_id)
            raise
        finally:
            self._busy.discard(build_id)

    async def _close_if_done(self, build_id: int) -> Closing | None:
        async with self.db.transaction() as s:
            q = select(Build).where(Build.id == build_id)
            if self.db.is_postgres:
                q = q.with_for_update()
            b = (await s.execute(q)).scalar_one()
            if not BuildState(b.state).open:
                return None
            jobs = list(
                (
                    await s.execute(select(Job).where(Job.build_id == build_id).order_by(Job.id))
                ).scalars()
            )
            if not all(JobState(j.state).terminal for j in jobs):
                return None
            b.state = BuildState.FINALIZING
            return Closing(
                build_id=build_id,
                model=b.model,
                request=msgspec.json.decode(b.request, type=BuildRequest),
                version=b.version,
                passed=[
                    j.result_manifest
                    for j in jobs
                    if j.state == JobState.PASSED and j.result_manifest
                ],
                failed=[
                    f"{j.target}: {j.reason[:300]}" for j in jobs if j.state != JobState.PASSED
                ],
                total=len(jobs),
            )

    async def _register(self, c: Closing) -> int:
        version = c.version
        if version is None:
            targets = ", ".join(decode(m).target.id for m in c.passed)
            notes = f"build #{c.build_id}: passed {targets}"
            if c.failed:
                notes += f"; NOT built: {' | '.join(c.failed)}"
            version = await self.registry.create_version(
                c.model, ACTOR, source_digest=c.request.source_blob, notes=notes
            )
            async with self.db.transaction() as s:
                build = await s.get(Build, c.build_id)
                assert build is not None
                build.version = version
        for data in c.passed:
            raw, signature = stamp(data, version, self.signing_key)
            target = decode(raw).target.id
            await self.registry.put_bundle(
                c.model, version, target, base64.b64encode(raw).decode(), signature, ACTOR
            )
        return version

    async def _promote_if_asked(
        self, c: Closing, version: int, state: BuildState
    ) -> tuple[str | None, str]:
        channel = c.request.promote_to
        if not channel:
            return None, ""
        if state is not BuildState.PASSED:
            return None, f"; NOT promoted to {channel}: not every target passed"
        await self.channels.promote(
            c.model, channel, version, Principal(ACTOR, frozenset({"promote", "pull"}))
        )
        return channel, f"; promoted to {channel}"

    async def _finish(
        self, build_id: int, state: BuildState, promoted: str | None, detail: str
    ) -> None:
        async with self.db.transaction() as s:
            b = await s.get(Build, build_id)
            assert b is not None
            b.state, b.promoted_to, b.detail = state, promoted, detail[:4000]
            b.finished_at = utcnow()
            self.audit.record(
                s, ACTOR, "build.finish", f"#{build_id} {b.model}: {state}", detail=detail
            )

"""Finalising a build: once every job has ended (built *and* independently verified, or
failed), the build is passed, partial or failed; if the submitter asked for a channel (and
held the ``promote`` scope when submitting) and every target passed — or some did and they
asked for ``allow_partial`` — the version is promoted in their name.

Verified bundles are registered into the build's version one by one, as their verifications
pass (:mod:`.leases`); nothing here signs anything — central holds no key that edges trust.
Exactly once per build: the build row is locked (PostgreSQL) or written by the single writer
(SQLite) while it moves on; the reaper picks up a build a crash left open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec
from sqlalchemy import select

from artifacts.errors import ShipyardError
from artifacts.states import TERMINAL_JOB_STATES, BuildState, JobState
from artifacts.wire import BuildRequest
from central.audit.service import AuditLog
from central.auth.service import Principal
from central.builds.models import Build, Job
from central.channels.service import ChannelService
from central.db import Database, utcnow

log = logging.getLogger("shipyard.central.builds")
ACTOR = "build-service"
VERIFYING_STATES = (JobState.BUILT, JobState.VERIFYING)


@dataclass
class Closing:
    """A build whose jobs have all ended: what passed, what did not, what was asked."""

    build_id: int
    model: str
    request: BuildRequest
    version: int | None
    submitter: str
    may_promote: bool
    passed: list[str]  # targets
    failed: list[str]  # "target: reason"
    cached: bool


class Finalizer:
    def __init__(self, db: Database, channels: ChannelService, audit: AuditLog) -> None:
        self.db = db
        self.channels = channels
        self.audit = audit
        self._busy: set[int] = set()

    async def unfinished(self) -> set[int]:
        """Builds still open although every job has ended (e.g. a crash mid-finalize)."""
        async with self.db.session() as s:
            open_ids = set(
                (
                    await s.execute(
                        select(Build.id).where(
                            Build.state.in_([st for st in BuildState if st.open])
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
        """Advance the build's state; finish it once every job has ended (exactly once)."""
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
            state = BuildState.PARTIAL if closing.failed else BuildState.PASSED
            how = (
                "served from the build cache (identical verified build)"
                if closing.cached
                else "built and independently verified"
            )
            detail = (
                f"{closing.model} v{closing.version}: {len(closing.passed)} of "
                f"{len(closing.passed) + len(closing.failed)} targets {how}"
            )
            if closing.failed:
                detail += "; not built: " + " | ".join(closing.failed)
            promoted, note = await self._promote_if_asked(closing, state)
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
            states = [JobState(j.state) for j in jobs]
            if not all(st.terminal for st in states):
                if b.state == BuildState.RUNNING and all(
                    st.terminal or st in VERIFYING_STATES for st in states
                ):
                    b.state = BuildState.AWAITING_VERIFICATION
                return None
            b.state = BuildState.FINALIZING
            return Closing(
                build_id=build_id,
                model=b.model,
                request=msgspec.json.decode(b.request, type=BuildRequest),
                version=b.version,
                submitter=b.created_by,
                may_promote=b.may_promote,
                passed=[j.target for j in jobs if j.state == JobState.PASSED],
                failed=[
                    f"{j.target}: {j.reason[:300]}" for j in jobs if j.state != JobState.PASSED
                ],
                cached=all(j.cached for j in jobs),
            )

    async def _promote_if_asked(self, c: Closing, state: BuildState) -> tuple[str | None, str]:
        channel = c.request.promote_to
        if not channel or c.version is None:
            return None, ""
        if state is not BuildState.PASSED and not c.request.allow_partial:
            return None, (
                f"; NOT promoted to {channel}: not every target passed "
                "(submit with allow_partial to promote the targets that did)"
            )
        if not c.may_promote:  # refused at submit; a stored request cannot change that
            return None, f"; NOT promoted to {channel}: {c.submitter} may not promote"
        promoter = Principal(c.submitter, frozenset({"promote", "pull"}))
        try:
            await self.channels.promote(c.model, channel, c.version, promoter)
        except ShipyardError as exc:  # e.g. the channel is halted: the build still finishes
            return None, f"; NOT promoted to {channel}: {exc}"
        partial = " (allow_partial: the targets that passed)" if c.failed else ""
        return channel, f"; promoted to {channel} by {c.submitter}{partial}"

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

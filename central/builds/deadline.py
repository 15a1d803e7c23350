"""Builds that cannot hang: a job that no live worker can build (or, once built, verify) for
longer than its deadline ends ``no-capable-worker`` naming the missing capability, so the
build finishes with the targets that passed instead of waiting for hardware that never comes.

The clock runs only while no capable worker is live (``Job.waiting_since``): a job merely
queued behind others on a capable, busy worker never expires. Runs in the reaper on every
replica; rows are locked (``SKIP LOCKED`` on PostgreSQL) so two replicas never both decide.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.states import BuildState, JobState
from artifacts.wire import BuildRequest
from central.builds.capability import capability_gap, live_workers
from central.builds.models import Build, Job, JobLog
from central.db import Database, utcnow

# a job waits for a builder while queued, for a verifier (a different worker) once built
WAITING_STATES = (JobState.QUEUED, JobState.BUILT)
MAX_DEADLINE_S = 7 * 86400.0


@dataclass(frozen=True)
class Verdict:
    waiting_since: dt.datetime | None  # what to store
    expired: bool


def judge(
    gap: str, waiting_since: dt.datetime | None, now: dt.datetime, deadline_s: float
) -> Verdict:
    """The clock for one job: starts when no capable worker is live (``gap`` says why), resets
    when one appears, and expires once it has run ``deadline_s``."""
    if not gap:
        return Verdict(None, False)
    since = waiting_since or now
    return Verdict(since, (now - since).total_seconds() >= deadline_s)


def deadline_of(req: BuildRequest, default_s: float) -> float:
    return default_s if req.worker_deadline_s is None else req.worker_deadline_s


def expiry_note(since: dt.datetime, deadline_s: float) -> str:
    at = since + dt.timedelta(seconds=deadline_s)
    return f"; it ends no-capable-worker at {at.strftime('%Y-%m-%dT%H:%M:%SZ')} unless one appears"


async def expire_waiting(
    db: Database, s: AsyncSession, lease_seconds: float, default_s: float
) -> set[int]:
    """Start, reset or expire every waiting job's clock; the builds whose jobs ended."""
    q = (
        select(Job, Build.request)
        .join(Build, Build.id == Job.build_id)
        .where(
            Job.state.in_(WAITING_STATES),
            Build.state.in_([st for st in BuildState if st.open]),
        )
    )
    if db.is_postgres:
        q = q.with_for_update(of=Job, skip_locked=True)
    rows = (await s.execute(q)).all()
    if not rows:
        return set()
    workers = await live_workers(s, lease_seconds)
    now = utcnow()
    ended: set[int] = set()
    requests: dict[int, BuildRequest] = {}
    for job, raw in rows:
        req = requests.get(job.build_id) or msgspec.json.decode(raw, type=BuildRequest)
        requests[job.build_id] = req
        verifying = job.state == JobState.BUILT
        gap = capability_gap(job.target, workers, besides=job.builder if verifying else None)
        deadline_s = deadline_of(req, default_s)
        verdict = judge(gap, job.waiting_since, now, deadline_s)
        if verdict.waiting_since != job.waiting_since:
            job.waiting_since = verdict.waiting_since
        if not verdict.expired:
            continue
        why = f"no capable worker for {deadline_s:g} s: {gap}"
        if verifying:
            why += " — built, but not independently verified: not registered"
        job.state, job.reason, job.lease_token = JobState.NO_CAPABLE_WORKER, why[:4000], None
        job.note(f"no-capable-worker after {deadline_s:g} s")
        s.add(JobLog(job_id=job.id, line=f"[central] {why}"))
        ended.add(job.build_id)
    return ended

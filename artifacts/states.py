"""Every state machine's states, defined once (the wire, the database and the CLIs share them)."""

from __future__ import annotations

from enum import StrEnum


class BuildState(StrEnum):
    RUNNING = "running"
    AWAITING_VERIFICATION = "awaiting-verification"  # built; another worker is re-checking
    FINALIZING = "finalizing"  # every job ended; promoting
    PASSED = "passed"
    PARTIAL = "partial"  # some targets passed and were registered
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def open(self) -> bool:
        return self in (
            BuildState.RUNNING,
            BuildState.AWAITING_VERIFICATION,
            BuildState.FINALIZING,
        )


class JobState(StrEnum):
    """A job per target: built by one enrolled worker, then re-checked by a different one."""

    QUEUED = "queued"
    WAITING = "waiting-for-capable-worker"  # queued, and no live worker can take it (view only)
    RUNNING = "running"  # being built
    BUILT = "awaiting-verification"  # built and signed; waiting for an independent verifier
    VERIFYING = "verifying"  # a different worker re-runs the golden check and the gate
    PASSED = "passed"
    FAILED = "failed"
    NO_CAPABLE_WORKER = "no-capable-worker"  # waited for a capable worker past its deadline
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATES


TERMINAL_JOB_STATES = frozenset(
    {JobState.PASSED, JobState.FAILED, JobState.NO_CAPABLE_WORKER, JobState.CANCELLED}
)


class ChannelAction(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"


class AuditOutcome(StrEnum):
    OK = "ok"
    REFUSED = "refused"


class ServeState(StrEnum):
    """An edge node's state for one model."""

    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"  # serving, but not the channel's newest version (it failed here)
    NOT_READY = "not-ready"

    @property
    def serving(self) -> bool:
        return self in (ServeState.READY, ServeState.DEGRADED)


class CandidateStatus(StrEnum):
    """What happened to one bundle when an edge node chose what to serve."""

    CHOSEN = "chosen"
    STANDBY = "standby"  # passed; kept as the next fallback
    EXCLUDED = "excluded"  # requirement or policy (with the reason)
    FAILED_VERIFICATION = "failed-verification"
    FAILED_LOAD = "failed-load"
    FAILED_SMOKE_CHECK = "failed-smoke-check"
    SLOWER = "slower"  # passed, but measured slower on this node
    NOT_TRIED = "not-tried"  # a higher-ranked candidate already passed


class EventKind(StrEnum):
    """Events an edge node records per model (status, logs, fleet counts)."""

    SELECTED = "selected"
    SWAPPED = "swapped"
    FALLBACK = "fallback"
    UPDATE_FAILED = "update-failed"
    SYNC_ERROR = "sync-error"
    NOT_READY = "not-ready"
    UPDATE_HELD = "update-held"  # a new version waits for something it needs (its index)

    @property
    def is_problem(self) -> bool:
        return self in (
            EventKind.FALLBACK,
            EventKind.UPDATE_FAILED,
            EventKind.SYNC_ERROR,
            EventKind.NOT_READY,
        )

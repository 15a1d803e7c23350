"""What retention keeps, as pure functions of what the database says (tested without one).

A version is kept when it is among its model's newest ``keep``, or when something still needs
it: a channel points at it, it is in a channel's recent history (a rollback target), an edge
node reported running it recently, an open build builds into it, or a kept catalog index is
locked to it (its embedding model version, or a delta's base). Every kept version says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class RetentionPolicy:
    keep: int = 10  # newest versions per model, whatever else holds
    history: int = 3  # each channel's latest distinct versions stay (rollback targets)
    edge_window_s: float = 7 * 86400  # a version an edge ran this recently stays
    grace_s: float = 86400.0  # an unreferenced blob younger than this stays (uploads in flight)
    log_days: float = 90.0  # build logs of builds finished longer ago go
    audit_days: float | None = None  # audit rows older go (exported first); None: keep all

    def __post_init__(self) -> None:
        if self.keep < 1 or self.history < 0 or self.edge_window_s < 0 or self.grace_s < 0:
            raise ValueError("keep >= 1 and history, edge window and grace >= 0")


Ref = tuple[str, int]  # (model, version)


@dataclass
class Facts:
    """Everything retention looks at, gathered in one read."""

    versions: dict[str, list[int]] = field(default_factory=dict)  # model -> numbers
    channels: dict[Ref, list[str]] = field(default_factory=dict)  # pointed at by
    history: dict[Ref, list[str]] = field(default_factory=dict)  # in the recent history of
    edges: dict[Ref, list[str]] = field(default_factory=dict)  # reported running on
    building: dict[Ref, list[int]] = field(default_factory=dict)  # open builds into it
    locks: dict[Ref, list[Ref]] = field(default_factory=dict)  # index version -> what it needs


@dataclass(frozen=True)
class Decision:
    model: str
    version: int
    keep: bool
    why: str


class Event(NamedTuple):
    action: str  # ChannelAction
    version: int


def recent_history(events: Iterable[Event], depth: int) -> list[int]:
    """A channel's recent past: the top ``depth`` of its rollback stack below the current
    version (what ``rollback`` reaches: promotions push, rollbacks pop), and its latest
    ``depth`` distinct versions (what it just served)."""
    from central.channels.service import rollback_stack

    events = list(events)
    if depth <= 0:
        return []
    stack = rollback_stack(events)  # type: ignore[arg-type]
    out = list(dict.fromkeys(reversed(stack[:-1])))[:depth]
    recent: list[int] = []
    for e in reversed(events):
        if e.version not in recent:
            recent.append(e.version)
        if len(recent) >= depth:
            break
    return list(dict.fromkeys([*out, *recent]))


def _reasons(ref: Ref, rank: int, facts: Facts, policy: RetentionPolicy) -> list[str]:
    why = []
    if rank < policy.keep:
        why.append(f"among the newest {policy.keep}")
    why += [f"channel {c} points at it" for c in facts.channels.get(ref, [])]
    why += [f"in channel {c}'s recent history" for c in facts.history.get(ref, [])]
    why += [f"edge {n} ran it recently" for n in facts.edges.get(ref, [])]
    why += [f"build #{b} is building into it" for b in facts.building.get(ref, [])]
    return why


def decide(facts: Facts, policy: RetentionPolicy) -> list[Decision]:
    """Keep or delete every version, with the reason; index locks are followed to a fixpoint
    (a kept index keeps its model version and its base)."""
    kept: dict[Ref, list[str]] = {}
    for model, numbers in facts.versions.items():
        for rank, number in enumerate(sorted(numbers, reverse=True)):
            why = _reasons((model, number), rank, facts, policy)
            if why:
                kept[(model, number)] = why
    changed = True
    while changed:
        changed = False
        for index, needs in facts.locks.items():
            if index not in kept:
                continue
            for ref in needs:
                note = f"kept {index[0]} v{index[1]} needs it"
                if ref in _all(facts) and note not in kept.setdefault(ref, []):
                    kept[ref].append(note)
                    changed = True
    return [
        Decision(m, v, (m, v) in kept, "; ".join(kept.get((m, v), ["nothing needs it"])))
        for m, numbers in sorted(facts.versions.items())
        for v in sorted(numbers, reverse=True)
    ]


def _all(facts: Facts) -> set[Ref]:
    return {(m, v) for m, numbers in facts.versions.items() for v in numbers}


def unreferenced(blobs: Mapping[str, float], referenced: set[str], cutoff: float) -> list[str]:
    """Blobs (digest -> last upload or reuse, epoch s) nothing references and older than the
    grace cutoff."""
    return sorted(d for d, at in blobs.items() if d not in referenced and at < cutoff)

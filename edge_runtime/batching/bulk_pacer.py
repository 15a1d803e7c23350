"""How much of the inference thread bulk work (the embed worker) may take while interactive
traffic is present: small bulk batches (adapted to last about ``batch_ms``) and, after each, a
pause so bulk gets at most ``share`` of the thread. With no interactive batch in the last
second, bulk runs back to back in full-size batches. Pure; the clock is passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

RECENT_S = 1.0  # interactive traffic counts as present this long after its last batch
MIN_TOKENS = 32  # a bulk batch still takes at least one item


@dataclass
class BulkPacer:
    max_tokens: int  # a bulk batch's token budget with no interactive traffic
    batch_ms: float  # the target duration of one bulk batch while interactive traffic is present
    share: float  # the most of the inference thread bulk takes while interactive traffic is present
    budget: float = field(init=False)
    not_before: float = 0.0
    last_interactive: float = -1e9

    def __post_init__(self) -> None:
        self.budget = float(self.max_tokens)

    def interactive(self, now: float) -> None:
        self.last_interactive = now

    def busy(self, now: float) -> bool:
        return now - self.last_interactive < RECENT_S

    def tokens(self, now: float) -> int:
        return max(MIN_TOKENS, int(self.budget)) if self.busy(now) else self.max_tokens

    def wait_s(self, now: float) -> float:
        """How long bulk must still hold back (0: it may run now)."""
        return max(0.0, self.not_before - now) if self.busy(now) else 0.0

    def ran(self, now: float, seconds: float) -> None:
        """After a bulk batch: adapt its budget to ``batch_ms`` and space the next one."""
        if not self.busy(now):
            return
        ms = seconds * 1e3
        if ms > self.batch_ms:
            self.budget = max(MIN_TOKENS, self.budget * min(0.8, self.batch_ms / ms))
        elif ms < 0.7 * self.batch_ms:
            self.budget = min(float(self.max_tokens), self.budget * 1.1 + 16)
        self.not_before = now + seconds * (1 / self.share - 1)

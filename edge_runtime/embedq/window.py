"""How many embed jobs a worker keeps in flight: additive increase while interactive traffic
queues below its target, multiplicative decrease (at most once a second) when it does not or
when the batcher refuses bulk work. Pure; the clock is passed in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdaptiveWindow:
    ceiling: int  # the consumer's max_ack_pending
    size: float = 1.0
    _last_cut: float = -1e9

    @property
    def slots(self) -> int:
        return max(1, min(self.ceiling, int(self.size)))

    def observe(self, interactive_p99_ms: float, target_ms: float, now: float) -> None:
        """After each job: grow by one per window's worth of jobs, or halve past the target."""
        if interactive_p99_ms > target_ms:
            self.cut(now)
        else:
            self.size = min(float(self.ceiling), self.size + 1.0 / max(self.size, 1.0))

    def cut(self, now: float) -> None:
        if now - self._last_cut >= 1.0:
            self.size = max(1.0, self.size / 2)
            self._last_cut = now

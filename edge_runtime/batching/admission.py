"""Bounded admission with an adaptive limit, so p99 holds as load and backend speed change.

The queue is measured in tokens (what the backend's work is proportional to). A request is
admitted only if the tokens waiting plus its own stay under the current *limit*; otherwise
it gets 429 with ``Retry-After`` = (waiting tokens / measured drain rate).

The limit adapts by AIMD on queueing delay, the signal that directly predicts tail latency:
after every batch we update an EWMA of how long its items waited *beyond one batch's service
time* (an item that arrives while a batch runs must wait for it — that is pipelining, not a
backlog; waiting for several batch cycles is). It starts at four batches'
worth of tokens (not at the maximum: an overload burst in the first second would otherwise
admit seconds of backlog before any feedback arrives). While the delay exceeds the configured
latency target, the limit shrinks multiplicatively (x0.8) and is clamped to what Little's law
says the target allows (measured drain rate x (target + one batch time) x 2), never below a
quarter batch nor below ``floor_tokens`` — what two full batches of the texts now arriving hold,
at most two batch token budgets (the batcher keeps it current): a limit under that starves the batcher into tiny, slow
batches, which lowers the measured drain rate, which lowers the limit again (measured: a
2,048-token limit gave batches of 3.5 products and 28% of the backend's throughput, the rest of
the clients' requests bouncing off as 429s). A target shorter than one batch's run time cannot be
met by any limit, so the effective target is at least one batch time. While
the delay stays under half the target it grows additively (+ a tenth of a batch, up to
``max_queued_tokens``) — but only while the limit is in use: the queue reached half of it, or a
request was refused, since the last batch (TCP's congestion-window validation, RFC 7661). A quiet
node's short delays say nothing about how much backlog it could drain in time; measured before
this rule, ten seconds of c=1 traffic grew the limit to ``max_queued_tokens``, and a flood that
came next was admitted seconds of backlog (admitted p99 3.6–7.9 s against 0.5–0.9 s un-flooded). A backend that slows down — e.g. after a fallback from INT8 to FP32 —
therefore admits less work within a few batches, and recovers when it speeds up again.
Memory is bounded by ``max_queued_tokens`` whatever the load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_runtime.config import BatchingSection


@dataclass
class Admission:
    max_queued_tokens: int
    batch_tokens: int
    latency_target_s: float
    adaptive: bool = True
    limit: float = 0.0
    queued_tokens: int = 0
    delay_ewma_s: float = 0.0
    run_ewma_s: float = 0.0
    drain_tokens_per_s: float = 0.0
    rejected: int = 0
    floor_tokens: float = 0.0  # two full batches' tokens (set by the batcher)
    peak_queued: int = 0  # the most tokens queued since the last observation
    refused_since: int = 0  # refusals since the last observation

    @classmethod
    def from_config(cls, cfg: BatchingSection) -> Admission:
        return cls(
            max_queued_tokens=cfg.max_queued_tokens,
            batch_tokens=cfg.max_batch_tokens,
            latency_target_s=cfg.latency_target_ms / 1000,
            adaptive=cfg.adaptive,
        )

    def __post_init__(self) -> None:
        start = 4 * self.batch_tokens if self.adaptive else self.max_queued_tokens
        self.limit = float(min(self.max_queued_tokens, start))

    def try_admit(self, tokens: int) -> float | None:
        """Reserve ``tokens``; None if admitted, else the Retry-After in seconds."""
        limit = self.limit if self.adaptive else self.max_queued_tokens
        if self.queued_tokens + tokens > limit and self.queued_tokens > 0:
            self.rejected += 1
            self.refused_since += 1
            return self.retry_after()
        self.queued_tokens += tokens
        self.peak_queued = max(self.peak_queued, self.queued_tokens)
        return None

    def _in_use(self) -> bool:
        """Whether the limit constrained anything since the last observation (then reset)."""
        used = self.refused_since > 0 or self.peak_queued >= self.limit / 2
        self.peak_queued, self.refused_since = self.queued_tokens, 0
        return used

    def release(self, tokens: int) -> None:
        self.queued_tokens = max(0, self.queued_tokens - tokens)

    def retry_after(self) -> float:
        if self.drain_tokens_per_s <= 0:
            return 1.0
        return max(1.0, math.ceil(self.queued_tokens / self.drain_tokens_per_s))

    def observe(self, waited_s: float, batch_tokens: int, run_s: float, alpha: float = 0.2) -> None:
        """Feed one batch's queueing delay, its real (unpadded) tokens and run time; adapt the
        limit."""
        self.run_ewma_s = (
            run_s if self.run_ewma_s == 0 else (1 - alpha) * self.run_ewma_s + alpha * run_s
        )
        excess = max(0.0, waited_s - self.run_ewma_s)
        self.delay_ewma_s = (
            excess if self.delay_ewma_s == 0 else (1 - alpha) * self.delay_ewma_s + alpha * excess
        )
        if run_s > 0:
            rate = batch_tokens / run_s
            self.drain_tokens_per_s = (
                rate if self.drain_tokens_per_s == 0 else 0.8 * self.drain_tokens_per_s + 0.2 * rate
            )
        in_use = self._in_use()
        if not self.adaptive:
            return
        floor = min(
            float(self.max_queued_tokens), max(1.0, self.batch_tokens / 4, self.floor_tokens)
        )
        target = max(self.latency_target_s, self.run_ewma_s)
        if self.delay_ewma_s > target:
            little = 2 * self.drain_tokens_per_s * (target + self.run_ewma_s)
            self.limit = max(
                floor, min(self.limit * 0.8, little) if little > 0 else self.limit * 0.8
            )
        elif self.limit < floor:
            self.limit = floor
        elif self.delay_ewma_s < target / 2 and in_use:
            self.limit = min(float(self.max_queued_tokens), self.limit + self.batch_tokens / 10)

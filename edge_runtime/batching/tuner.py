"""The batch size this backend is most efficient at on this node, learned from batches."""

from __future__ import annotations


class SizeTuner:
    """Learns the batch size this backend is most efficient at on this node.

    Bigger is not always faster per item (measured on 2 vCPUs: MiniLM INT8 peaks at 8-32
    titles per batch and is ~20% slower per item at 64). Per power-of-two size bucket we keep
    an EWMA of *real* (unpadded) tokens per second — padded tokens are work, not output, so a
    badly padded bucket must not look efficient; batches are capped at the best bucket's size, and every
    ``explore_every``-th batch may use the full ``max_batch_size`` so the other buckets keep
    being measured.
    """

    def __init__(self, max_size: int, explore_every: int = 16, min_samples: int = 3) -> None:
        self.max_size = max_size
        self.explore_every = explore_every
        self.min_samples = min_samples
        self.rate: dict[int, float] = {}
        self.samples: dict[int, int] = {}
        self.count = 0

    @staticmethod
    def bucket(n: int) -> int:
        return 1 << max(0, (n - 1).bit_length())

    def observe(self, items: int, tokens: int, seconds: float) -> None:
        """One batch: its size, its real (unpadded) tokens and how long it ran."""
        if seconds <= 0 or items <= 0:
            return
        b = self.bucket(items)
        rate = tokens / seconds
        self.rate[b] = rate if b not in self.rate else 0.7 * self.rate[b] + 0.3 * rate
        self.samples[b] = self.samples.get(b, 0) + 1

    def best(self) -> int:
        """The most efficient measured size (``max_size`` until one is measured)."""
        measured = {
            b: r
            for b, r in self.rate.items()
            if self.samples.get(b, 0) >= self.min_samples and b >= 4
        }
        if not measured:
            return self.max_size
        return min(self.max_size, max(measured, key=measured.__getitem__))

    def cap(self) -> int:
        """The next batch's size limit: ``best()``, or the full size every ``explore_every``th."""
        self.count += 1
        if self.count % self.explore_every == 0:
            return self.max_size
        return self.best()

"""Per-item result cache for the head of the Zipfian query distribution.

LRU + TTL, bounded in bytes, keyed by (model, version, task, normalised input). A batch with
some cached items computes only the misses. Keys carry the version, so a swap to a new
version can never serve an old answer (old entries age out). Correct only because serving is
batch-invariant (the builder's gate checks that a text's output does not depend on its
neighbours or padding).
"""

from __future__ import annotations

import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

ENTRY_OVERHEAD = 160  # bytes: key tuple, OrderedDict node, array header (approximate)


def normalise(text: str) -> str:
    """Unicode NFC and collapsed whitespace: forms that tokenise identically share an entry."""
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0


def _nbytes(value) -> int:
    return int((value[0] if isinstance(value, tuple) else value).nbytes)


class ResultCache:
    def __init__(self, max_bytes: int, ttl_s: float, clock=time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self._data: OrderedDict[tuple, tuple[float, object]] = OrderedDict()
        self.bytes = 0
        self.stats = CacheStats()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and self.ttl_s > 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: tuple):
        if not self.enabled:
            return None
        entry = self._data.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        expires, value = entry
        if self.clock() >= expires:
            self._drop(key)
            self.stats.expirations += 1
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return value

    def put(self, key: tuple, value) -> None:
        """``value``: an array, or a tuple whose first element is the array (metadata after)."""
        if not self.enabled:
            return
        size = _nbytes(value) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        arr = value[0] if isinstance(value, tuple) else value
        arr = np.array(arr, copy=True)
        arr.setflags(write=False)
        value = (arr, *value[1:]) if isinstance(value, tuple) else arr
        self._data[key] = (self.clock() + self.ttl_s, value)
        self.bytes += size
        while self.bytes > self.max_bytes:
            old, _ = next(iter(self._data.items()))
            self._drop(old)
            self.stats.evictions += 1

    def _drop(self, key: tuple) -> None:
        _, value = self._data.pop(key)
        self.bytes -= _nbytes(value) + ENTRY_OVERHEAD

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

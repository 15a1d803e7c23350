"""An async check that runs at most once per interval, however often it is asked for.

Unauthenticated probes (``/readyz``, ``/metrics``) reach the database on behalf of whoever asks:
a flood of them must not become a flood of queries. Concurrent callers share one run and its
answer; the next run starts ``ttl_s`` after the last one ended, whether it answered or
raised (a failing dependency is not asked again by every caller: they get the last answer)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class AtMostEvery(Generic[T]):
    def __init__(self, ttl_s: float, run: Callable[[], Awaitable[T]], initial: T) -> None:
        self.ttl_s = ttl_s
        self._run = run
        self._value = initial
        self._at = -1e9
        self._lock = asyncio.Lock()

    async def __call__(self) -> T:
        async with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                try:
                    self._value = await self._run()
                finally:
                    self._at = time.monotonic()
            return self._value

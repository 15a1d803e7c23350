"""Wakes the workers' long-polls when jobs may have become leasable (submit, requeue, fail)."""

from __future__ import annotations

import asyncio
import contextlib


class JobsChanged:
    def __init__(self) -> None:
        self._cond = asyncio.Condition()

    async def notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait(self, timeout_s: float) -> None:
        """Until notified or ``timeout_s`` passed (whichever is first)."""
        async with self._cond:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cond.wait(), timeout=timeout_s)

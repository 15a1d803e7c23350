"""The reaper: requeues jobs whose lease expired, ends jobs that waited past their deadline for
a capable worker (:mod:`.deadline`) and finalises builds left open (a crash mid-finalize, a job
ended by either). Runs on every replica; the database decides."""

from __future__ import annotations

import asyncio
import logging

from central.builds.deadline import expire_waiting
from central.builds.finalize import Finalizer
from central.builds.leases import LeaseService
from central.db import Database

log = logging.getLogger("shipyard.central.builds")


class Reaper:
    def __init__(
        self, db: Database, leases: LeaseService, finalizer: Finalizer, worker_deadline_s: float
    ) -> None:
        self.db = db
        self.worker_deadline_s = worker_deadline_s
        self.leases = leases
        self.finalizer = finalizer
        self.interval_s = max(0.5, min(5.0, leases.lease_seconds / 4))
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="build-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def sweep(self) -> None:
        async with self.db.transaction() as s:
            ended = await self.leases.requeue_expired(s)
            ended |= await expire_waiting(
                self.db, s, self.leases.lease_seconds, self.worker_deadline_s
            )
        if ended:
            await self.leases.jobs_changed.notify()
        for build_id in ended | await self.finalizer.unfinished():
            await self.finalizer.maybe_finalize(build_id)

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep()
            except Exception:  # the reaper must survive a bad moment (e.g. db restart)
                log.exception("build reaper")

"""Central's Prometheus metrics (``GET /metrics``): requests by route template and status, their
latency, and the build service's state read from the database at scrape time — so every
replica reports the same numbers and nothing is kept in process memory that two replicas
would disagree on — at most once per ``REFRESH_S`` however often it is scraped (the endpoint is
unauthenticated: a flood of scrapes must not become a flood of queries). One registry per app
(no global registry: tests run several apps)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from sqlalchemy import func, select

from artifacts.states import BuildState, JobState
from central.at_most import AtMostEvery
from central.builds.capability import capability_gap, live_workers
from central.builds.models import Build, Job
from central.db import Database

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REFRESH_S = 1.0
STATE_DEADLINE_S = 2.0  # a scrape never waits longer on the database than this
log = logging.getLogger("shipyard.central.metrics")


class CentralMetrics:
    def __init__(self, db: Database, lease_seconds: float, refresh_s: float = REFRESH_S) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self._refresh = AtMostEvery(refresh_s, self._read_state_or_not_ready, None)
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter(
            "shipyard_central_requests_total",
            "Requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "shipyard_central_request_seconds",
            "Request latency by method and route template",
            ["method", "route"],
            buckets=BUCKETS,
            registry=r,
        )
        self.jobs = Gauge(
            "shipyard_central_jobs",
            "Build jobs by state (open builds' and ended)",
            ["state"],
            registry=r,
        )
        self.builds_open = Gauge("shipyard_central_builds_open", "Builds not ended", registry=r)
        self.workers_live = Gauge(
            "shipyard_central_workers_live", "Enrolled workers seen recently", registry=r
        )
        self.ready = Gauge(
            "shipyard_central_ready", "1 when the database answers (as /readyz)", registry=r
        )
        self.state_reads = Counter(
            "shipyard_central_metrics_state_reads",
            "Times a scrape read the build service's state from the database",
            registry=r,
        )

    def middleware(self, app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """Litestar middleware (runs after routing: the route *template* is the label, so
        label values stay bounded whatever paths clients send)."""

        async def measured(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = 500

            async def sending(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                route = scope.get("path_template") or "unmatched"
                self.requests.labels(scope["method"], route, str(status)).inc()
                self.latency.labels(scope["method"], route).observe(time.perf_counter() - start)

        return measured

    async def render(self) -> bytes:
        """The exposition, its build-service gauges read from the database at most every
        ``refresh_s``."""
        await self._refresh()
        return generate_latest(self.registry)

    async def _read_state_or_not_ready(self) -> None:
        """A database that fails or hangs makes this replica not ready; the build gauges keep
        their last values and the scrape still answers (within ``STATE_DEADLINE_S``)."""
        try:
            with anyio.fail_after(STATE_DEADLINE_S):
                await self._read_state()
        except Exception as exc:
            log.warning("metrics: reading the build state failed: %r", exc)
            self.ready.set(0)

    async def _read_state(self) -> None:
        self.state_reads.inc()
        problem = await self.db.ping()
        self.ready.set(0 if problem else 1)
        if problem is None:
            async with self.db.session() as s:
                counts = dict(
                    (await s.execute(select(Job.state, func.count()).group_by(Job.state))).all()
                )
                open_states = [st for st in BuildState if st.open]
                self.builds_open.set(
                    (
                        await s.execute(
                            select(func.count())
                            .select_from(Build)
                            .where(Build.state.in_(open_states))
                        )
                    ).scalar_one()
                )
                workers = await live_workers(s, self.lease_seconds)
                queued = (
                    await s.execute(select(Job.target).where(Job.state == JobState.QUEUED))
                ).scalars()
                waiting = sum(1 for t in queued if capability_gap(t, workers))
            self.workers_live.set(len(workers))
            counts[JobState.QUEUED] = counts.get(JobState.QUEUED, 0) - waiting
            counts[JobState.WAITING] = waiting
            for state in JobState:
                self.jobs.labels(state.value).set(counts.get(state, 0))

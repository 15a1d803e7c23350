"""The litestar application: composes the feature routers, injects each feature's service,
answers every error as problem+json (:mod:`central.problems`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from litestar import Litestar, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from artifacts.sdnotify import Notifier, announce_ready
from artifacts.tracing import Traced, Tracing
from artifacts.wire import Problem
from central.at_most import AtMostEvery
from central.audit import routes as audit_routes
from central.auth import routes as auth_routes
from central.blobs import routes as blob_routes
from central.blobs.service import BlobService
from central.builds import routes as build_routes
from central.catalogs import routes as catalog_routes
from central.channels import routes as channel_routes
from central.db import Database
from central.fleet import routes as fleet_routes
from central.keys import routes as key_routes
from central.metrics import CentralMetrics
from central.problems import HANDLERS, problem_response, status_of
from central.registry import routes as registry_routes
from central.services import Services
from central.settings import CentralConfig
from central.tuf import routes as tuf_routes
from central.tuf.shared import SharedTuf
from central.workers import routes as worker_routes

log = logging.getLogger("shipyard.central")
WRITES = ("POST", "PUT", "DELETE")
PROBE_DEADLINE_S = 5.0


class AnonymousRefusals:
    """Counts unauthenticated refusals; lets one through to the audit log per window."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s, self.total, self._since, self._in_window = window_s, 0, -1e9, 0

    def sample(self, now: float) -> int | None:
        """The window's count when this refusal should be recorded, else None."""
        self.total += 1
        self._in_window += 1
        if now - self._since < self.window_s:
            return None
        count, self._since, self._in_window = self._in_window, now, 0
        return count


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Liveness: the process is up."""
    return {"status": "ok"}


@get("/metrics", media_type="text/plain; version=0.0.4")
async def metrics(central_metrics: CentralMetrics) -> Response:
    """Prometheus exposition (unauthenticated, like /readyz: counts and latencies only)."""
    return Response(await central_metrics.render(), media_type="text/plain; version=0.0.4")


class Readiness:
    """Whether this replica can serve: the database answers, the blob store answers, and it
    can sign for the shared TUF root. Checked at most every ``ttl_s`` (a load balancer polls
    often; each check reaches the database and the registry). The unauthenticated answer names
    the part that is not ready; the details (URLs, errors, paths) go to the log."""

    def __init__(self, db: Database, blobs: BlobService, tuf: SharedTuf, ttl_s: float = 2.0):
        self.db, self.blobs, self.tuf = db, blobs, tuf
        # ("", "") when ready, else (the part, the details)
        self.check = AtMostEvery(ttl_s, self._logged_probe, ("", ""))

    async def _logged_probe(self) -> tuple[str, str]:
        try:
            answer = await self._probe()
        except Exception as exc:  # a probe that raises: not ready (kept for the interval too)
            answer = ("service", repr(exc))
        if answer[0]:
            log.warning("not ready: %s: %s", *answer)
        return answer

    async def _probe(self) -> tuple[str, str]:
        for part, probe in (
            ("database", self.db.ping),
            ("blob store", self.blobs.store.ping),
            ("TUF signing keys", self.tuf.key_problem),
        ):
            try:
                with anyio.fail_after(PROBE_DEADLINE_S):  # a trickling dependency is not ready
                    problem = await probe()
            except TimeoutError:
                problem = f"no answer within {PROBE_DEADLINE_S:g} s"
            if problem is not None:
                return part, problem
        return "", ""


@get("/readyz")
async def readyz(readiness: Readiness, db: Database, blobs: BlobService) -> Response:
    """Readiness (a load balancer takes a replica out that cannot serve)."""
    part, _details = await readiness.check()
    if part:
        detail = f"the {part} is not ready (the service's log says why)"
        return problem_response(Problem(title="NotReady", status=503, detail=detail))
    return Response(
        {"status": "ready", "database": db.engine.dialect.name, "blobs": blobs.store.kind}
    )


def _provider(value: object) -> Provide:
    async def provide() -> Any:
        return value

    return Provide(provide)


def create_app(
    config: CentralConfig,
    services: Services | None = None,
    notifier: Notifier | None = None,
    tracing: Tracing | None = None,
) -> Litestar:
    """Build the app; the services start (migrations, reaper, workers) in the lifespan.
    ``notifier``: systemd's notify socket (READY=1 once started and listening); ``tracing``:
    OpenTelemetry (default: from ``config.otlp_endpoint``, off without one)."""
    svc = services or Services(config)
    sd = notifier or Notifier({})
    traces = tracing or Tracing("shipyard-central", endpoint=config.otlp_endpoint)
    measured = CentralMetrics(svc.db, config.lease_seconds)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await svc.start()
        sd.start_watchdog()
        announce = asyncio.create_task(
            announce_ready(
                sd, lambda: True, lambda: f"serving on {config.url}", (config.host, config.port)
            ),
            name="sd-ready",
        )
        try:
            yield
        finally:
            announce.cancel()
            await sd.stop_watchdog()
            await svc.stop()
            traces.shutdown()

    anonymous = AnonymousRefusals()

    async def audit_refusal(exc: Exception, scope: Any) -> None:
        """Refused writes (auth, conflicts, tampered uploads) land in the audit log too;
        unauthenticated ones are counted and sampled (one row per minute with the count), so
        a flood of anonymous requests cannot turn into a flood of fsynced audit rows."""
        if scope.get("type") != "http" or scope.get("method") not in WRITES:
            return
        status = status_of(exc)
        if status is None or status >= 500:
            return
        principal = (scope.get("state") or {}).get("principal")
        actor = principal.name if principal is not None else "anonymous"
        action = f"{scope['method'].lower()}.refused"
        detail = f"{status}: {exc}"
        if principal is None:
            sampled = anonymous.sample(time.monotonic())
            if sampled is None:
                return
            detail = f"{detail} ({sampled} unauthenticated attempts in the last minute)"
        try:
            await svc.audit.refused(actor, action, scope["path"], detail)
        except Exception:  # the audit must never turn a 4xx into a 500
            log.exception("could not record a refused attempt")

    return Litestar(
        route_handlers=[
            healthz,
            readyz,
            metrics,
            *registry_routes.handlers,
            *channel_routes.handlers,
            *blob_routes.handlers,
            *build_routes.handlers,
            *worker_routes.handlers,
            *tuf_routes.handlers,
            *fleet_routes.handlers,
            *catalog_routes.handlers,
            *auth_routes.handlers,
            *key_routes.handlers,
            *audit_routes.handlers,
        ],
        dependencies={
            name: _provider(value)
            for name, value in {
                **svc.providers(),
                "central_metrics": measured,
                "readiness": Readiness(svc.db, svc.blobs, svc.tuf),
            }.items()
        },
        middleware=[lambda app: Traced(app, traces), measured.middleware],
        lifespan=[lifespan],
        state=State({"tokens": svc.tokens, "catalogs": svc.catalogs}),
        after_exception=[audit_refusal],
        exception_handlers=HANDLERS,
        request_max_body_size=config.max_json_bytes,
        logging_config=None,  # the process configures logging, not the framework
        openapi_config=OpenAPIConfig(title="Shipyard central", version="1", path="/schema"),
        debug=False,
    )

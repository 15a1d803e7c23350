"""The litestar application: HTTP only — parsing, auth, problem+json — over :class:`Registry`.

Every error leaves as RFC 9457 ``application/problem+json`` with a precise ``detail``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from artifacts.errors import ShipyardError
from artifacts.wire import Problem
from central.config import CentralConfig
from central.errors import status_for
from central.routes import blobs, builds, fleet, registry
from central.service import Service

log = logging.getLogger("shipyard.central")

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int, title: str, detail: str, extra: dict | None = None, headers: dict | None = None
) -> Response:
    body = Problem(title=title, status=status, detail=detail, extra=extra or {})
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _shipyard_error(request: Request, exc: ShipyardError) -> Response:
    status = status_for(exc)
    extra = {"failing": exc.failing} if hasattr(exc, "failing") else None
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem(status, type(exc).__name__, str(exc), extra, headers)


def _http_error(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail
    if getattr(exc, "extra", None):
        detail = f"{detail}: {exc.extra}"
    return problem(exc.status_code, type(exc).__name__, str(detail), headers=exc.headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR, "InternalServerError", f"{type(exc).__name__}: {exc}"
    )


@get("/healthz", sync_to_thread=False, include_in_schema=True)
def healthz() -> dict[str, str]:
    """Liveness: the process is up."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(service: Service) -> Response:
    """Readiness: the database answers."""
    ok, detail = await service.ready()
    if not ok:
        return problem(503, "NotReady", detail)
    return Response({"status": "ready", "database": service.db.engine.dialect.name})


def create_app(config: CentralConfig, service: Service | None = None) -> Litestar:
    """Build the app; the service starts (migrations, workers) in the lifespan."""
    svc = service or Service(config)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    async def provide_service() -> Service:
        return svc

    from litestar.datastructures import State
    from litestar.di import Provide

    async def audit_refusal(exc: Exception, scope) -> None:
        """Refused writes (auth, conflicts, tampered uploads) land in the audit log too."""
        if scope.get("type") != "http" or scope.get("method") not in ("POST", "PUT", "DELETE"):
            return
        if isinstance(exc, ShipyardError):
            status = status_for(exc)
        elif isinstance(exc, HTTPException):
            status = exc.status_code
        else:
            return
        if status >= 500 or svc.registry is None:
            return
        principal = (scope.get("state") or {}).get("principal")
        actor = principal.name if principal is not None else "anonymous"
        try:
            await svc.registry.refused(
                actor, f"{scope['method'].lower()}.refused", scope["path"], f"{status}: {exc}"
            )
        except Exception:  # the audit must never turn a 4xx into a 500
            log.exception("could not record a refused attempt")

    handlers: list[Any] = [
        healthz,
        readyz,
        *registry.handlers,
        *blobs.handlers,
        *builds.handlers,
        *fleet.handlers,
    ]
    return Litestar(
        route_handlers=handlers,
        dependencies={"service": Provide(provide_service)},
        lifespan=[lifespan],
        state=State({"service": svc}),
        after_exception=[audit_refusal],
        exception_handlers={
            ShipyardError: _shipyard_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        request_max_body_size=config.max_json_bytes,
        logging_config=None,  # the process configures logging, not the framework
        openapi_config=OpenAPIConfig(title="Shipyard central", version="1", path="/schema"),
        debug=False,
    )

"""The one problem+json builder of the edge API (RFC 9457). Unexpected errors answer 500
without internals, with a request id that names the log line."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from artifacts.errors import ShipyardError
from artifacts.wire import MEDIA_TYPE_PROBLEM, Problem, problem_headers

log = logging.getLogger("shipyard.edge.http")


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return Response(
        problem.encode(), status_code=problem.status, media_type=MEDIA_TYPE_PROBLEM, headers=headers
    )


def shipyard_error(_req: Request, exc: ShipyardError) -> Response:
    return problem_response(Problem.of(exc), problem_headers(exc))


def http_error(_req: Request, exc: HTTPException) -> Response:
    detail = str(exc.detail)
    if getattr(exc, "extra", None):
        detail = f"{detail}: {exc.extra}"
    return problem_response(
        Problem(title=type(exc).__name__, status=exc.status_code, detail=detail), exc.headers
    )


def internal_error(method: str, path: str) -> Problem:
    """Log the exception being handled under a fresh request id; the 500 that names only it."""
    request_id = uuid.uuid4().hex[:16]
    log.exception("unhandled error on %s %s [request %s]", method, path, request_id)
    return Problem(
        title="InternalServerError",
        status=500,
        detail=f"internal error; the node's log has the details under request id {request_id}",
        request_id=request_id,
    )


def unexpected(req: Request, exc: Exception) -> Response:
    return problem_response(internal_error(req.method, req.url.path))


def status_of(exc: BaseException | None) -> int:
    if exc is None:
        return 200
    if isinstance(exc, ShipyardError):
        return exc.status
    if isinstance(exc, HTTPException):
        return exc.status_code
    return 500


HANDLERS: dict[Any, Any] = {
    ShipyardError: shipyard_error,
    HTTPException: http_error,
    Exception: unexpected,
}

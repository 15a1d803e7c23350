"""The one problem+json builder of central: every error leaves as RFC 9457 with a precise
``detail``; unexpected errors leave without internals, with a request id to find the log line."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from artifacts.errors import ShipyardError
from artifacts.wire import MEDIA_TYPE_PROBLEM, Problem, problem_headers

log = logging.getLogger("shipyard.central")


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=problem.encode(),
        status_code=problem.status,
        media_type=MEDIA_TYPE_PROBLEM,
        headers=headers,
    )


def shipyard_error(_request: Request, exc: ShipyardError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else problem_headers(exc)
    return problem_response(Problem.of(exc), headers)


def http_error(_request: Request, exc: HTTPException) -> Response:
    detail = str(exc.detail)
    if getattr(exc, "extra", None):
        detail = f"{detail}: {exc.extra}"
    problem = Problem(title=type(exc).__name__, status=exc.status_code, detail=detail)
    return problem_response(problem, exc.headers)


def unexpected(request: Request, exc: Exception) -> Response:
    request_id = uuid.uuid4().hex[:16]
    log.exception(
        "unhandled error on %s %s [request %s]", request.method, request.url.path, request_id
    )
    problem = Problem(
        title="InternalServerError",
        status=500,
        detail=f"internal error; the service log has the details under request id {request_id}",
        request_id=request_id,
    )
    return problem_response(problem)


def too_deep(_request: Request, _exc: RecursionError) -> Response:
    """A body nested past the decoder's recursion limit is the client's error, not ours."""
    return problem_response(
        Problem(title="BadRequest", status=400, detail="the JSON body is nested too deeply")
    )


def status_of(exc: Exception) -> int | None:
    """The HTTP status an exception will be answered with (None: unexpected → 500)."""
    if isinstance(exc, ShipyardError):
        return exc.status
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, RecursionError):
        return 400
    return None


HANDLERS: dict[Any, Any] = {
    ShipyardError: shipyard_error,
    HTTPException: http_error,
    RecursionError: too_deep,
    Exception: unexpected,
}

"""Auth guard and request checks shared by every route module.

Each handler declares ``opt={"scope": ...}``; the one guard authenticates the bearer token,
checks the scope, and (for bodies) the content type, before the handler runs.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler

from central.registry import Principal


class UnsupportedMediaType(HTTPException):
    status_code = 415


async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    scope = handler.opt.get("scope")
    if scope is None:
        return
    service = connection.app.state["service"]
    principal: Principal = await service.registry.authenticate(
        connection.headers.get("authorization")
    )
    connection.state["principal"] = principal
    principal.require(scope)
    expects = handler.opt.get("body")
    if expects and connection.scope.get("method") in ("POST", "PUT", "PATCH"):
        ctype = connection.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != expects:
            raise UnsupportedMediaType(
                detail=f"expected Content-Type {expects}, got {ctype or 'none'}"
            )


def principal_of(request) -> Principal:
    return request.state["principal"]


def pull(**extra) -> dict:
    return {"guards": [guard], "opt": {"scope": "pull", **extra}}


def needs(scope: str, body: str | None = "application/json") -> dict:
    return {"guards": [guard], "opt": {"scope": scope, "body": body}}

"""The one route guard: every handler declares ``needs(scope)`` (or ``pull()``); the guard
authenticates the bearer token, checks the scope and, for bodies, the content type, before
the handler runs. The authenticated principal is in ``request.state["principal"]``."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from artifacts.errors import UnsupportedMediaType
from central.auth.service import Principal, TokenService


async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    scope = handler.opt.get("scope")
    if scope is None:
        return
    auth: TokenService = connection.app.state["tokens"]
    principal = await auth.authenticate(connection.headers.get("authorization"))
    connection.state["principal"] = principal
    principal.require(scope)
    expects = handler.opt.get("body")
    if expects and connection.scope.get("method") in ("POST", "PUT", "PATCH"):
        ctype = connection.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != expects:
            raise UnsupportedMediaType(f"expected Content-Type {expects}, got {ctype or 'none'}")


def principal_of(request: Any) -> Principal:
    return request.state["principal"]


def pull(**extra: Any) -> dict[str, Any]:
    return {"guards": [guard], "opt": {"scope": "pull", **extra}}


def needs(scope: str, body: str | None = "application/json") -> dict[str, Any]:
    return {"guards": [guard], "opt": {"scope": scope, "body": body}}

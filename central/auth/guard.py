"""The one route guard: every handler declares ``needs(scope)`` (or ``pull()``); the guard
authenticates the bearer token, checks the scope and, for bodies, the content type, before
the handler runs. The authenticated principal is in ``request.state["principal"]``.

A build worker's credential is confined to what a worker does: reading (``pull()`` routes),
uploading blobs and the worker protocol (routes declared with ``workers=True``); whatever its
scope would otherwise allow (creating versions, pushing bundles, fleet reports) is refused."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from artifacts.errors import ForbiddenError, UnsupportedMediaType
from central.auth.service import Principal, TokenService


async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    scope = handler.opt.get("scope")
    if scope is None:
        return
    auth: TokenService = connection.app.state["tokens"]
    principal = await auth.authenticate(connection.headers.get("authorization"))
    connection.state["principal"] = principal
    principal.require(scope)
    if handler.opt.get("catalog"):  # a token bound to catalogs reaches only those
        principal.require_catalog(connection.path_params["name"])
    if principal.catalogs is not None and (model := model_of(connection, handler)) is not None:
        # nor another catalog's index (a registry model holding that catalog's product texts)
        await connection.app.state["catalogs"].require_readable(principal, model)
    if principal.worker is not None and not handler.opt.get("workers"):
        raise ForbiddenError(
            f"worker {principal.worker}'s credential may only pull, upload blobs and "
            "speak the worker protocol"
        )
    expects = handler.opt.get("body")
    if expects and connection.scope.get("method") in ("POST", "PUT", "PATCH"):
        ctype = connection.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != expects:
            raise UnsupportedMediaType(f"expected Content-Type {expects}, got {ctype or 'none'}")


def model_of(connection: ASGIConnection, handler: BaseRouteHandler) -> str | None:
    """The registry model a route reads: its ``model`` path parameter, or the ``model-<name>``
    role a TUF metadata route (``tuf_role=True``) serves. Routes naming a model elsewhere (a
    body, a build) check it themselves (``CatalogService.require_readable``)."""
    params = connection.path_params
    if "model" in params:
        return str(params["model"])
    if handler.opt.get("tuf_role"):
        role = str(params["name"]).removesuffix(".json")
        return role.removeprefix("model-") if role.startswith("model-") else None
    return None


def principal_of(request: Any) -> Principal:
    return request.state["principal"]


def pull(**extra: Any) -> dict[str, Any]:
    """A read route: any token (worker credentials included) with the ``pull`` scope;
    ``catalog=True``: a catalog's route (its ``name`` path parameter), see :func:`needs`."""
    return {"guards": [guard], "opt": {"scope": "pull", "workers": True, **extra}}


def needs(
    scope: str,
    body: str | None = "application/json",
    *,
    workers: bool = False,
    catalog: bool = False,
) -> dict[str, Any]:
    """``scope`` required; ``body`` the content type a write must send; ``workers`` whether a
    build worker's credential may call it at all; ``catalog`` whether the route acts on the
    catalog named by its ``name`` path parameter (a token bound to other catalogs: 403)."""
    opt = {"scope": scope, "body": body, "workers": workers, "catalog": catalog}
    return {"guards": [guard], "opt": opt}

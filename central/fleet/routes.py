"""Fleet: node heartbeats in, the fleet view out."""

from __future__ import annotations

from urllib.parse import quote

from litestar import Request, Response, delete, get, post
from litestar.params import Parameter

from artifacts.errors import InputError
from artifacts.wire import FleetHandedOver, FleetHandover, NodeInfo, NodeReport
from central.auth.guard import needs, principal_of, pull
from central.fleet.service import FleetService


@post("/v1/fleet/heartbeat", status_code=204, **needs("pull"))
async def heartbeat(request: Request, fleet: FleetService, data: NodeReport) -> None:
    """An edge node reports what it serves (version, backend, fallbacks, latency, errors).
    The node belongs to the token that first reported it (see :mod:`central.fleet.service`)."""
    await fleet.heartbeat(data, principal_of(request))


@delete("/v1/fleet/{node:str}", status_code=204, **needs("admin", body=None))
async def delete_node(request: Request, fleet: FleetService, node: str) -> None:
    """Forget a node: a stale one, or one to hand to another (live) token."""
    await fleet.delete(node, principal_of(request))


@post("/v1/fleet/handover", status_code=200, **needs("admin"))
async def handover(request: Request, fleet: FleetService, data: FleetHandover) -> FleetHandedOver:
    """Move nodes from one token to another (a rotated credential): the only way a node
    changes hands besides being forgotten."""
    return await fleet.handover(data, principal_of(request))


MAX_PAGE = 256  # nodes per page (also the default: a client that does not page sees this many)
NEXT_HEADER = "X-Fleet-Next"  # the ``after`` of the next page (percent-encoded); absent: last page


@get("/v1/fleet", **pull())
async def fleet_view(
    request: Request,
    fleet: FleetService,
    limit: int = Parameter(default=MAX_PAGE, ge=1, le=MAX_PAGE),
    after: str | None = Parameter(default=None, max_length=255),
) -> Response[list[NodeInfo]]:
    """Nodes' last reports by name, a page at a time (at most ``limit`` nodes named after
    ``after``; a page holds at most 256 x 64 KiB, under the client's answer cap);
    ``X-Fleet-Next`` says where the next page starts. Admins see every node and which token
    reports it; any other token only the nodes it reports."""
    if after is not None and not after.isprintable():  # PostgreSQL text holds no NUL
        raise InputError("after: a node name (printable characters)")
    nodes, last = await fleet.nodes(principal_of(request), limit, after)
    headers = {NEXT_HEADER: quote(last, safe="")} if last is not None else None
    return Response(nodes, headers=headers)


handlers = [heartbeat, delete_node, handover, fleet_view]

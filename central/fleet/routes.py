"""Fleet: node heartbeats in, the fleet view out."""

from __future__ import annotations

from litestar import Request, delete, get, post

from artifacts.wire import NodeInfo, NodeReport
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


@get("/v1/fleet", **pull())
async def fleet_view(fleet: FleetService) -> list[NodeInfo]:
    return await fleet.nodes()


handlers = [heartbeat, delete_node, fleet_view]

"""Fleet: node heartbeats in, the fleet view out."""

from __future__ import annotations

from litestar import get, post

from artifacts.wire import NodeInfo, NodeReport
from central.auth.guard import needs, pull
from central.fleet.service import FleetService


@post("/v1/fleet/heartbeat", status_code=204, **needs("pull"))
async def heartbeat(fleet: FleetService, data: NodeReport) -> None:
    """An edge node reports what it serves (version, backend, fallbacks, latency, errors)."""
    await fleet.heartbeat(data)


@get("/v1/fleet", **pull())
async def fleet_view(fleet: FleetService) -> list[NodeInfo]:
    return await fleet.nodes()


handlers = [heartbeat, fleet_view]

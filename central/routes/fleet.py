"""Fleet: node heartbeats in, the fleet view out; halt / resume a channel's rollout."""

from __future__ import annotations

from litestar import Request, get, post

from artifacts.wire import ChannelInfo, Halt, NodeInfo, NodeReport
from central.routes.common import needs, principal_of, pull
from central.service import Service


@post("/v1/fleet/heartbeat", status_code=204, **needs("pull"))
async def heartbeat(service: Service, data: NodeReport) -> None:
    """An edge node reports what it serves (version, backend, fallbacks, latency, errors)."""
    await service.fleet.heartbeat(data)


@get("/v1/fleet", **pull())
async def fleet(service: Service) -> list[NodeInfo]:
    return await service.fleet.nodes()


@post("/v1/models/{model:str}/channels/{channel:str}/halt", status_code=200, **needs("promote"))
async def halt(
    service: Service, request: Request, model: str, channel: str, data: Halt
) -> ChannelInfo:
    """Freeze a rollout: promotions to this channel are refused until it is resumed
    (rollback still works, to move nodes back)."""
    return await service.registry.set_halted(
        model, channel, True, principal_of(request), data.reason
    )


@post(
    "/v1/models/{model:str}/channels/{channel:str}/resume",
    status_code=200,
    **needs("promote", body=None),
)
async def resume(service: Service, request: Request, model: str, channel: str) -> ChannelInfo:
    return await service.registry.set_halted(model, channel, False, principal_of(request), "")


handlers = [heartbeat, fleet, halt, resume]

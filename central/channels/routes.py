"""Channels: list, show, promote, roll back, halt and resume a rollout."""

from __future__ import annotations

from litestar import Request, get, post

from artifacts.wire import ChannelInfo, Halt, Promote
from central.auth.guard import needs, principal_of, pull
from central.channels.service import ChannelService

CHANNEL = "/v1/models/{model:str}/channels/{channel:str}"


@get("/v1/models/{model:str}/channels", **pull())
async def list_channels(channels: ChannelService, model: str) -> list[ChannelInfo]:
    return await channels.channels(model)


@get(CHANNEL, **pull())
async def get_channel(channels: ChannelService, model: str, channel: str) -> ChannelInfo:
    return await channels.channel(model, channel)


@post(f"{CHANNEL}/promote", status_code=200, **needs("promote"))
async def promote(
    channels: ChannelService, request: Request, model: str, channel: str, data: Promote
) -> ChannelInfo:
    """Point a channel at a version; refused (409, with the failing metrics) when a bundle's
    quality gate did not pass, unless an admin forces it."""
    return await channels.promote(
        model, channel, data.version, principal_of(request), force=data.force
    )


@post(f"{CHANNEL}/rollback", status_code=200, **needs("promote", body=None))
async def rollback(
    channels: ChannelService, request: Request, model: str, channel: str
) -> ChannelInfo:
    """Return the channel to the version before its current one."""
    return await channels.rollback(model, channel, principal_of(request))


@post(f"{CHANNEL}/halt", status_code=200, **needs("promote"))
async def halt(
    channels: ChannelService, request: Request, model: str, channel: str, data: Halt
) -> ChannelInfo:
    """Freeze a rollout: promotions to this channel are refused until it is resumed
    (rollback still works, to move nodes back)."""
    return await channels.set_halted(model, channel, True, principal_of(request), data.reason)


@post(f"{CHANNEL}/resume", status_code=200, **needs("promote", body=None))
async def resume(
    channels: ChannelService, request: Request, model: str, channel: str
) -> ChannelInfo:
    return await channels.set_halted(model, channel, False, principal_of(request), "")


handlers = [list_channels, get_channel, promote, rollback, halt, resume]

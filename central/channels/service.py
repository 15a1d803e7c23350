"""Channels: promote (gate-checked), roll back, halt and resume.

A channel move is decided under a row lock (PostgreSQL) or the single-writer transaction
(SQLite); every move appends a numbered event, so the history is the channel's truth.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    QualityGateRefused,
)
from artifacts.manifest import decode
from artifacts.names import check_name
from artifacts.states import ChannelAction
from artifacts.wire import ChannelEventInfo, ChannelInfo
from central.audit.service import AuditLog
from central.auth.service import Principal
from central.channels.models import Channel, ChannelEvent
from central.db import Database, iso, retry_integrity
from central.registry.models import Bundle, Model
from central.registry.service import find_model, find_version, version_bundles
from central.tuf.repository import ChannelPointer
from central.tuf.shared import SharedTuf
from central.workers.models import Worker

log = logging.getLogger("shipyard.central.channels")


async def quarantined(s: AsyncSession, version_id: int) -> list[str]:
    """The version's bundles built by a worker that has since been disabled."""
    rows = await s.execute(
        select(Bundle.target, Bundle.built_by)
        .join(Worker, Worker.name == Bundle.built_by)
        .where(Bundle.version_id == version_id, Worker.disabled_at.is_not(None))
    )
    return [f"{target} built by disabled worker {worker}" for target, worker in rows]


def rollback_stack(events: list[ChannelEvent]) -> list[int]:
    """Promotions push, rollbacks pop: the top is current, the one below is rollback's target."""
    stack: list[int] = []
    for e in events:
        if e.action == ChannelAction.PROMOTE:
            stack.append(e.version)
        elif stack:
            stack.pop()
    return stack


def channel_info(m: Model, ch: Channel, events: list[ChannelEvent]) -> ChannelInfo:
    return ChannelInfo(
        model=m.name,
        channel=ch.name,
        version=ch.version,
        halted=ch.halted,
        history=[
            ChannelEventInfo(
                seq=e.seq,
                action=ChannelAction(e.action),
                version=e.version,
                previous=e.previous,
                actor=e.actor,
                forced=e.forced,
                at=iso(e.at),
            )
            for e in events
        ],
    )


class ChannelService:
    def __init__(self, db: Database, audit: AuditLog, tuf: SharedTuf | None = None) -> None:
        self.db = db
        self.audit = audit
        self.tuf = tuf
        # called after a promotion commits (model, channel, version); a failing one is logged
        self.on_promote: list[Callable[[str, str, int, Principal], Awaitable[None]]] = []

    async def pointer(self, model: str, channel: str) -> ChannelPointer | None:
        """What the channel points at now (None: at nothing yet)."""
        async with self.db.session() as s:
            m = await find_model(s, model)
            ch = await self._find(s, m, channel)
            if ch is None or ch.version is None:
                return None
            bundles = await version_bundles(s, await find_version(s, m, ch.version))
            return ChannelPointer(
                model=model,
                channel=channel,
                version=ch.version,
                bundles={b.target: b.manifest_digest for b in bundles},
                halted=ch.halted,
            )

    async def publish(self, model: str, channel: str) -> None:
        """Sign the channel's new state into the TUF metadata edges follow (read under the
        signing lock: two promotions on two replicas never leave the older one signed)."""
        if self.tuf is None:
            return

        async def latest() -> list[ChannelPointer]:
            pointer = await self.pointer(model, channel)
            return [pointer] if pointer is not None else []

        await self.tuf.publish_latest(latest)

    async def publish_all(self) -> None:
        """Bring the TUF metadata in line with the database (after a crash between the two)."""
        if self.tuf is None:
            return

        async def every() -> list[ChannelPointer]:
            async with self.db.session() as s:
                rows = (await s.execute(select(Model.name, Channel.name).join(Channel))).all()
            return [p for model, channel in rows if (p := await self.pointer(model, channel))]

        await self.tuf.publish_latest(every)

    async def _find(
        self, s: AsyncSession, m: Model, name: str, *, lock: bool = False
    ) -> Channel | None:
        """The channel row (locked for update on PostgreSQL with ``lock``), if it exists."""
        q = select(Channel).where(Channel.model_id == m.id, Channel.name == name)
        if lock and self.db.is_postgres:
            q = q.with_for_update()
        return (await s.execute(q)).scalar_one_or_none()

    async def _lock(self, s: AsyncSession, m: Model, name: str) -> Channel:
        check_name(name, "channel name")
        ch = await self._find(s, m, name, lock=True)
        if ch is None:
            ch = Channel(model_id=m.id, name=name, version=None, seq=0)
            s.add(ch)
            await s.flush()
        return ch

    @staticmethod
    async def _history(s: AsyncSession, ch: Channel) -> list[ChannelEvent]:
        return list(
            (
                await s.execute(
                    select(ChannelEvent)
                    .where(ChannelEvent.channel_id == ch.id)
                    .order_by(ChannelEvent.seq)
                )
            ).scalars()
        )

    @staticmethod
    def _move(
        s: AsyncSession,
        ch: Channel,
        action: ChannelAction,
        version: int,
        actor: str,
        *,
        forced: bool = False,
    ) -> None:
        ch.seq += 1
        s.add(
            ChannelEvent(
                channel_id=ch.id,
                seq=ch.seq,
                action=action,
                version=version,
                previous=ch.version,
                actor=actor,
                forced=forced,
            )
        )
        ch.version = version
        ch.updated_at = dt.datetime.now(dt.UTC)

    async def promote(
        self, model: str, channel: str, number: int, principal: Principal, *, force: bool = False
    ) -> ChannelInfo:
        if force and "admin" not in principal.scopes:
            raise ForbiddenError("forcing a promotion needs an admin token")

        async def attempt() -> ChannelInfo:
            async with self.db.transaction() as s:
                m = await find_model(s, model)
                version = await find_version(s, m, number, lock=True)
                bundles = await version_bundles(s, version)
                if not bundles:
                    raise ConflictError(f"{model} v{number} has no bundles to serve")
                held = await quarantined(s, version.id)
                if held and not force:
                    raise ConflictError(
                        f"{model} v{number} is quarantined: {', '.join(held)}; an admin may force"
                    )

                failing = {
                    b.target: decode(b.manifest).quality.metrics
                    for b in bundles
                    if not b.quality_passed
                }
                if failing and not force:
                    detail = "; ".join(
                        f"{t}: {msgspec.json.encode(mets).decode()}" for t, mets in failing.items()
                    )
                    raise QualityGateRefused(
                        f"{model} v{number} has bundles whose quality gate did not pass ({detail}); "
                        "an admin may force it",
                        failing,
                    )
                ch = await self._lock(s, m, channel)
                if ch.halted:
                    raise ConflictError(f"{model}:{channel} is halted; resume it before promoting")
                self._move(
                    s, ch, ChannelAction.PROMOTE, number, principal.name, forced=bool(failing)
                )
                version.sealed = True  # a promoted version takes no new target
                self.audit.record(
                    s,
                    principal.name,
                    "channel.promote",
                    f"{model}:{channel} -> v{number}",
                    detail="forced past failed gate" if failing else "",
                )
                await s.flush()
                return channel_info(m, ch, await self._history(s, ch))

        info = await retry_integrity(attempt)  # a concurrent first promote created the channel
        await self.publish(model, channel)
        for listener in self.on_promote:  # e.g. a catalog re-embedding for the new version
            try:
                await listener(model, channel, number, principal)
            except Exception:
                log.exception("after promoting %s:%s to v%s", model, channel, number)
        return info

    async def set_halted(
        self, model: str, channel: str, halted: bool, principal: Principal, reason: str
    ) -> ChannelInfo:
        async with self.db.transaction() as s:
            m = await find_model(s, model)
            ch = await self._lock(s, m, channel)
            ch.halted = halted
            action = "channel.halt" if halted else "channel.resume"
            self.audit.record(s, principal.name, action, f"{model}:{channel}", detail=reason)
            await s.flush()
            info = channel_info(m, ch, await self._history(s, ch))
        await self.publish(model, channel)
        return info

    async def rollback(self, model: str, channel: str, principal: Principal) -> ChannelInfo:
        async with self.db.transaction() as s:
            m = await find_model(s, model)
            ch = await self._lock(s, m, channel)
            stack = rollback_stack(await self._history(s, ch))
            if len(stack) < 2:
                raise ConflictError(f"{model}:{channel} has no earlier version to roll back to")
            target = stack[-2]
            held = await quarantined(s, (await find_version(s, m, target, lock=True)).id)
            if held:
                raise ConflictError(
                    f"{model}:{channel} cannot roll back to v{target}, it is quarantined: "
                    f"{', '.join(held)}; promote another version (an admin may force v{target})"
                )
            self._move(s, ch, ChannelAction.ROLLBACK, target, principal.name)
            self.audit.record(
                s, principal.name, "channel.rollback", f"{model}:{channel} -> v{target}"
            )
            await s.flush()
            info = channel_info(m, ch, await self._history(s, ch))
        await self.publish(model, channel)  # rollback: a new, higher metadata version
        return info

    async def channel(self, model: str, channel: str) -> ChannelInfo:
        check_name(channel, "channel name")
        async with self.db.session() as s:
            m = await find_model(s, model)
            ch = await self._find(s, m, channel)
            if ch is None:
                raise NotFoundError(f"channel {model}:{channel} not found")
            return channel_info(m, ch, await self._history(s, ch))

    async def channels(self, model: str) -> list[ChannelInfo]:
        async with self.db.session() as s:
            m = await find_model(s, model)
            rows = (
                await s.execute(
                    select(Channel).where(Channel.model_id == m.id).order_by(Channel.name)
                )
            ).scalars()
            return [
                ChannelInfo(model=model, channel=c.name, version=c.version, halted=c.halted)
                for c in rows
            ]

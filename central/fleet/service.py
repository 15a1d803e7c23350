"""Fleet status: edge nodes' heartbeats (what each serves, with which backend, how well).

A node belongs to the token that first reported it: another token's heartbeat for it is
refused while that token is live, so a leaked pull token cannot rewrite the rest of the fleet's
reports (a token shared by a region's nodes still reports for all of them). Once the owning
token is revoked or expired, the next token to report the node takes it over (a rotated
credential). One token reports at most ``fleet_max_nodes_per_token`` node names, and a report
is bounded, so heartbeats cannot fill the database."""

from __future__ import annotations

import datetime as dt
import zlib

import msgspec
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.errors import ConflictError, ForbiddenError, NotFoundError, PayloadTooLarge
from artifacts.names import check_name
from artifacts.wire import NodeInfo, NodeReport
from central.audit.service import AuditLog
from central.auth.models import Token
from central.auth.service import Principal
from central.db import Database, iso, utcnow
from central.fleet.models import Node

MAX_REPORT_BYTES = 128 << 10  # one node's stored report
_LOCK_BASE = 0x5F1EE7  # advisory locks: one per node name (see Database.serialize)


def _lock_key(name: str) -> int:
    """A node name's (or a token's) advisory lock; always a token's before a name's."""
    return (_LOCK_BASE << 32) | zlib.crc32(name.encode())


class FleetService:
    def __init__(
        self, db: Database, audit: AuditLog | None = None, max_nodes_per_token: int = 1024
    ) -> None:
        self.db = db
        self.audit = audit
        self.max_nodes_per_token = max_nodes_per_token

    async def heartbeat(self, report: NodeReport, principal: Principal) -> None:
        check_name(report.node.lower().replace("_", "-"), "node name")
        data = msgspec.json.encode(report)
        if len(data) > MAX_REPORT_BYTES:
            raise PayloadTooLarge(
                f"a node report of {len(data)} bytes; the limit is {MAX_REPORT_BYTES}"
            )
        # admins and central itself report without owning (a node they report stays free)
        me = None if "admin" in principal.scopes else principal.token_id
        async with self.db.transaction() as s:
            if me is not None:  # a token's reports one at a time: its quota holds under races
                await self.db.serialize(s, _lock_key(f"token:{me}"))
            await self.db.serialize(s, _lock_key(report.node))  # one first report per name
            row = (
                await s.execute(select(Node).where(Node.name == report.node))
            ).scalar_one_or_none()
            if row is None:
                await self._check_quota(s, me, principal)
                s.add(Node(name=report.node, report=data, last_seen=utcnow(), token_id=me))
                return
            if me is not None and row.token_id != me:
                owner = await _live_owner(s, row.token_id)
                if owner is not None:
                    raise ForbiddenError(
                        f"node {report.node!r} reports with another token, {owner!r}; revoke "
                        "that token to hand the node over, or have an admin delete the node"
                    )
                await self._check_quota(s, me, principal)
                row.token_id = me  # the owner was revoked or expired (or there was none)
            row.report, row.last_seen = data, utcnow()

    async def _check_quota(self, s: AsyncSession, me: int | None, principal: Principal) -> None:
        if me is None:
            return
        held = (
            await s.execute(select(func.count()).select_from(Node).where(Node.token_id == me))
        ).scalar_one()
        if held >= self.max_nodes_per_token:
            raise ConflictError(
                f"token {principal.name!r} already reports {held} nodes, the limit "
                "(fleet_max_nodes_per_token); an admin can delete stale ones: "
                "DELETE /v1/fleet/{node}"
            )

    async def delete(self, name: str, principal: Principal) -> None:
        """An admin forgets a node (stale, or to hand it to another live token)."""
        async with self.db.transaction() as s:
            gone = await s.execute(delete(Node).where(Node.name == name))
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise NotFoundError(f"no node {name!r} in the fleet")
            if self.audit is not None:
                self.audit.record(s, principal.name, "fleet.delete", name)

    async def nodes(self) -> list[NodeInfo]:
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(Node, Token.name)
                    .outerjoin(Token, Token.id == Node.token_id)
                    .order_by(Node.name)
                )
            ).all()
        now = dt.datetime.now(dt.UTC)
        out = []
        for r, reporter in rows:
            seen = r.last_seen
            out.append(
                NodeInfo(
                    node=r.name,
                    last_seen=iso(seen),
                    age_s=round((now - seen).total_seconds(), 1),
                    report=msgspec.json.decode(r.report, type=NodeReport),
                    reporter=reporter or "",
                )
            )
        return out


async def _live_owner(s: AsyncSession, token_id: int | None) -> str | None:
    """The owning token's name while it can still authenticate (None: no owner any more)."""
    if token_id is None:
        return None
    row = (await s.execute(select(Token).where(Token.id == token_id))).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    return row.name

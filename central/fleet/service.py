"""Fleet status: edge nodes' heartbeats (what each serves, with which backend, how well).

A node belongs to the token that first reported it: another token's heartbeat for it is
refused, so a leaked pull token cannot rewrite the rest of the fleet's reports (a token shared
by a region's nodes still reports for all of them). Ownership moves only by an admin's hand
(:meth:`FleetService.handover`, or forgetting the node): never because the owner was revoked or
expired, which would let whoever polls fastest take the node. Names are stored in one canonical
form (ASCII, lowercase, ``-`` for ``_``), so look-alike spellings are the same node. One token
reports at most ``fleet_max_nodes_per_token`` names and a report is bounded, so heartbeats cannot
fill the database; a token's heartbeats never queue on each other for a database connection.
An admin can assign nodes before they first report (a handover without ``from_token``), and with
``fleet_claims = "assigned"`` that is the only way a pull token gets a node: no first-report
claims, so a leaked token cannot take a node that has not reported yet."""

from __future__ import annotations

import datetime as dt
import logging
import zlib

import msgspec
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.errors import (
    ConflictError,
    ForbiddenError,
    InputError,
    InvalidNameError,
    NotFoundError,
    Overloaded,
    PayloadTooLarge,
)
from artifacts.names import check_name
from artifacts.wire import FleetHandedOver, FleetHandover, NodeInfo, NodeReport
from central.audit.service import AuditLog
from central.auth.models import Token
from central.auth.service import Principal
from central.auth.tokens import granted
from central.db import Database, iso, utcnow
from central.fleet.models import Node
from central.settings import FLEET_CLAIMS

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 64 << 10  # one node's stored report
MAX_ASSIGN = 256  # names one assignment locks (PostgreSQL's lock table is shared and finite)
# advisory lock spaces (two-int4 form): a token's new names, one node name
TOKEN_LOCKS, NAME_LOCKS = 0x466C_5400, 0x466C_4E00  # "FlT", "FlN"


def node_name(raw: str) -> str:
    """The stored form of a reported node name (the 400/422 a bad one gets)."""
    if not raw.isascii():
        raise InvalidNameError(f"invalid node name {raw!r}: ASCII only")
    return check_name(raw.lower().replace("_", "-"), "node name")


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode())


class FleetService:
    def __init__(
        self,
        db: Database,
        audit: AuditLog | None = None,
        max_nodes_per_token: int = 256,
        *,
        claims: str = "first-report",
    ) -> None:
        if claims not in FLEET_CLAIMS:
            raise ValueError(f"fleet claims must be one of {FLEET_CLAIMS}, not {claims!r}")
        self.db = db
        self.audit = audit
        self.max_nodes_per_token = max_nodes_per_token
        self.assigned_only = claims == "assigned"

    async def heartbeat(self, report: NodeReport, principal: Principal) -> None:
        name = node_name(report.node)
        data = msgspec.json.encode(msgspec.structs.replace(report, node=name))
        if len(data) > MAX_REPORT_BYTES:
            raise PayloadTooLarge(
                f"a node report of {len(data)} bytes; the limit is {MAX_REPORT_BYTES}"
            )
        # admins and central itself report without owning (a node they report stays free)
        me = None if "admin" in principal.scopes else principal.token_id
        async with self.db.transaction() as s:
            owner = (
                await s.execute(select(Node.token_id).where(Node.name == name))
            ).scalar_one_or_none()
            if me is not None and owner != me and self.assigned_only:
                self._unassigned(name, me)  # one answer whoever holds it: no name oracle
            if me is not None and owner is not None and owner != me:
                self._refuse(name)  # before any lock: refusals cannot hold up the owner
            await self._lock(s, NAME_LOCKS, _name_key(name))  # one first report per name
            row = (await s.execute(select(Node).where(Node.name == name))).scalar_one_or_none()
            if me is not None and self.assigned_only and (row is None or row.token_id != me):
                self._unassigned(name, me)  # forgotten since the read above: still not its
            if row is None or (row.token_id is None and me is not None):
                if me is not None:  # a new name for this token: its quota, under its lock
                    await self._lock(s, TOKEN_LOCKS, me)
                    await self._check_quota(s, me, principal)
                if row is None:
                    s.add(Node(name=name, report=data, last_seen=utcnow(), token_id=me))
                    return
                row.token_id = me  # an unowned node (reported by an admin, or before 0009)
            elif me is not None and row.token_id != me:
                self._refuse(name)
            row.report, row.last_seen = data, utcnow()

    async def _assign(self, s: AsyncSession, names: list[str], to: int) -> list[str]:
        """Give ``names`` to token ``to`` before they report: a name not in the fleet gets a
        row with an empty report (its first heartbeat fills it), an unowned one gets its
        owner. All or nothing: a name another token holds is a 409 (hand it over with
        ``from_token``), one already ``to``'s is kept."""
        for name in names:  # sorted, try-locks: never a deadlock, a racing heartbeat gets 429
            await self._lock(s, NAME_LOCKS, _name_key(name))
        rows = {
            r.name: r for r in (await s.execute(select(Node).where(Node.name.in_(names)))).scalars()
        }
        held = sorted(n for n, r in rows.items() if r.token_id not in (None, to))
        if held:
            raise ConflictError(
                f"node(s) {', '.join(held)[:500]} are reported with another token: "
                "hand them over from it (`artifact fleet-handover --from TOKEN`)"
            )
        now = utcnow()
        for name in names:
            row = rows.get(name)
            if row is None:
                empty = msgspec.json.encode(NodeReport(node=name))
                s.add(Node(name=name, report=empty, last_seen=now, token_id=to))
            else:
                row.token_id = to
        return names

    @staticmethod
    def _unassigned(name: str, me: int) -> None:
        raise ForbiddenError(
            f"node {name!r} is not assigned to this token (central runs with --fleet-claims "
            f"assigned); an admin assigns it: `artifact fleet-handover --to {me} {name}`"
        )

    @staticmethod
    def _refuse(name: str) -> None:
        raise ForbiddenError(
            f"node {name!r} is reported with another token; an admin hands it over "
            "(`artifact fleet-handover`) or forgets it (`artifact forget-node`)"
        )

    async def _lock(self, s: AsyncSession, space: int, key: int) -> None:
        if not await self.db.try_serialize(s, space, key):
            raise Overloaded("another heartbeat for this node or token is in progress", 1.0)

    async def _check_quota(self, s: AsyncSession, me: int, principal: Principal) -> None:
        held = (
            await s.execute(select(func.count()).select_from(Node).where(Node.token_id == me))
        ).scalar_one()
        if held >= self.max_nodes_per_token:
            raise ConflictError(
                f"token {principal.name!r} already reports {held} nodes, the limit "
                "(central serve --fleet-max-nodes-per-token); an admin can forget stale ones "
                "(`artifact forget-node`)"
            )

    async def delete(self, raw: str, principal: Principal) -> None:
        """An admin forgets a node (stale, or one to report with another token): the name as
        stored (a row from before canonical names keeps its spelling), else its canonical form."""
        exact = raw.isascii() and raw.isprintable() and 0 < len(raw) <= 255
        name = node_name(raw) if not exact else raw
        async with self.db.transaction() as s:
            await self._lock(s, NAME_LOCKS, _name_key(name))  # not beside its heartbeat
            gone = await s.execute(delete(Node).where(Node.name == name))
            if not gone.rowcount and exact and (canonical := node_name(raw)) != raw:  # type: ignore[attr-defined]
                name = canonical
                await self._lock(s, NAME_LOCKS, _name_key(name))
                gone = await s.execute(delete(Node).where(Node.name == name))
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise NotFoundError(f"no node {name!r} in the fleet")
            if self.audit is not None:
                self.audit.record(s, principal.name, "fleet.delete", name)

    async def handover(self, req: FleetHandover, principal: Principal) -> FleetHandedOver:
        """An admin moves nodes from one token to another (a rotated credential): all of
        ``from_token``'s, or the named ones it holds; without ``from_token``, assigns the named
        nodes no token holds (see :meth:`_assign`). The new token must be live."""
        if req.nodes is not None and not req.nodes:  # [] is no filter to hand "all" over by
            raise InputError("an empty node list: name nodes, or leave the list out")
        if req.from_token is None and not req.nodes:
            raise InputError("name the nodes to assign (or the token to hand over from)")
        names = sorted({node_name(n) for n in req.nodes}) if req.nodes is not None else None
        if req.from_token is None and names is not None and len(names) > MAX_ASSIGN:
            raise InputError(f"at most {MAX_ASSIGN} nodes per assignment (one lock each)")
        async with self.db.transaction() as s:
            target = (
                await s.execute(select(Token).where(Token.id == req.to_token))
            ).scalar_one_or_none()
            if target is None or not _live(target):
                raise ConflictError(f"token #{req.to_token} is unknown, revoked or expired")
            if target.worker is not None or "pull" not in granted(target.scopes):
                raise ConflictError(f"token #{req.to_token} cannot report heartbeats")
            if req.from_token is None:
                assert names is not None
                moved = await self._assign(s, names, req.to_token)
                if self.audit is not None:
                    self.audit.record(
                        s, principal.name, "fleet.assign", f"#{req.to_token}", detail=listed(moved)
                    )
                return FleetHandedOver(moved=moved)
            which = Node.token_id == req.from_token
            if names is not None:
                which = which & Node.name.in_(names)
            moved = list(
                (
                    await s.execute(
                        update(Node).where(which).values(token_id=req.to_token).returning(Node.name)
                    )
                ).scalars()
            )
            if self.audit is not None:
                self.audit.record(
                    s,
                    principal.name,
                    "fleet.handover",
                    f"#{req.from_token}->#{req.to_token}",
                    detail=listed(sorted(moved)),
                )
        return FleetHandedOver(moved=sorted(moved))

    async def nodes(
        self, principal: Principal, limit: int, after: str | None = None
    ) -> tuple[list[NodeInfo], str | None]:
        """At most ``limit`` nodes named after ``after``, by name (for a non-admin token, only
        the nodes it reports), and the name the next page
        starts after (None: this is the last page). A page may hold fewer than ``limit`` nodes
        (rows stored before today's limits are skipped), so the cursor, not the count, ends it."""
        admin = "admin" in principal.scopes
        query = (
            select(Node, Token.name)
            .outerjoin(Token, Token.id == Node.token_id)
            .order_by(Node.name)
            .limit(limit + 1)
        )
        if not admin:  # a pull token sees the nodes it reports, not the fleet's hardware map
            query = query.where(Node.token_id == (principal.token_id or -1))
        if after is not None:
            query = query.where(Node.name > after)
        async with self.db.session() as s:
            rows = (await s.execute(query)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        now = dt.datetime.now(dt.UTC)
        out = []
        for r, token_name in rows:
            try:  # a row stored before today's limits must not take the whole view down
                report = msgspec.json.decode(r.report, type=NodeReport)
            except msgspec.DecodeError as exc:  # ValidationError included
                log.warning(
                    "fleet: skipping node %r, its stored report is invalid: %s", r.name, exc
                )
                continue
            seen = r.last_seen
            out.append(
                NodeInfo(
                    node=r.name,
                    last_seen=iso(seen),
                    age_s=round((now - seen).total_seconds(), 1),
                    report=report,
                    reporter=f"#{r.token_id} {token_name or '?'}" if admin and r.token_id else "",
                )
            )
        return out, (rows[-1][0].name if more else None)


def listed(names: list[str], limit: int = 2000) -> str:
    """``names`` for an audit row's detail: their count, then as many as fit in ``limit``
    characters, and how many did not."""
    head = f"{len(names)} node(s): "
    shown: list[str] = []
    size = len(head)
    for n in names:
        if size + len(n) + 2 > limit - 24:
            return head + ", ".join(shown) + f" … (+{len(names) - len(shown)} more)"
        shown.append(n)
        size += len(n) + 2
    return head + ", ".join(shown)


def _live(t: Token) -> bool:
    return t.revoked_at is None and (t.expires_at is None or t.expires_at > utcnow())

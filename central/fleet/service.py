"""Fleet status: edge nodes' heartbeats (what each serves, with which backend, how well)."""

from __future__ import annotations

import datetime as dt

import msgspec
from sqlalchemy import select

from artifacts.names import check_name
from artifacts.wire import NodeInfo, NodeReport
from central.db import Database, iso
from central.fleet.models import Node


class FleetService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def heartbeat(self, report: NodeReport) -> None:
        check_name(report.node.lower().replace("_", "-")[:64], "node name")
        data = msgspec.json.encode(report)
        async with self.db.transaction() as s:
            row = (
                await s.execute(select(Node).where(Node.name == report.node))
            ).scalar_one_or_none()
            if row is None:
                s.add(Node(name=report.node, report=data, last_seen=dt.datetime.now(dt.UTC)))
            else:
                row.report, row.last_seen = data, dt.datetime.now(dt.UTC)

    async def nodes(self) -> list[NodeInfo]:
        async with self.db.session() as s:
            rows = (await s.execute(select(Node).order_by(Node.name))).scalars().all()
        now = dt.datetime.now(dt.UTC)
        out = []
        for r in rows:
            seen = r.last_seen
            out.append(
                NodeInfo(
                    node=r.name,
                    last_seen=iso(seen),
                    age_s=round((now - seen).total_seconds(), 1),
                    report=msgspec.json.decode(r.report, type=NodeReport),
                )
            )
        return out

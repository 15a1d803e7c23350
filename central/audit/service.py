"""The audit log: who did what to which subject, with what outcome (append-only)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.states import AuditOutcome
from artifacts.wire import AuditInfo
from central.audit.models import AuditEvent
from central.db import Database, iso


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def record(  # noqa: PLR0913 - the audit row's columns, by keyword at every call site
        s: AsyncSession,
        actor: str,
        action: str,
        subject: str,
        *,
        digest: str = "",
        outcome: AuditOutcome = AuditOutcome.OK,
        detail: str = "",
    ) -> None:
        """Add a row inside the caller's transaction (it commits or rolls back with the change)."""
        s.add(
            AuditEvent(
                actor=actor,
                action=action,
                subject=subject[:256],
                digest=digest,
                outcome=outcome,
                detail=detail[:4000],
            )
        )

    async def refused(
        self, actor: str, action: str, subject: str, detail: str, digest: str = ""
    ) -> None:
        """Record a refused attempt (in its own transaction: the attempt's was rolled back)."""
        async with self.db.transaction() as s:
            self.record(
                s,
                actor,
                action,
                subject,
                digest=digest,
                outcome=AuditOutcome.REFUSED,
                detail=detail,
            )

    async def list(self, limit: int = 100, before: int | None = None) -> list[AuditInfo]:
        limit = max(1, min(limit, 1000))
        q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if before is not None:
            q = q.where(AuditEvent.id < before)
        async with self.db.session() as s:
            rows = (await s.execute(q)).scalars().all()
        return [
            AuditInfo(
                id=r.id,
                at=iso(r.at),
                actor=r.actor,
                action=r.action,
                subject=r.subject,
                digest=r.digest,
                outcome=AuditOutcome(r.outcome),
                detail=r.detail,
            )
            for r in rows
        ]

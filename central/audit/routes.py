"""``GET /v1/audit`` (admin)."""

from __future__ import annotations

from litestar import get
from litestar.params import Parameter

from artifacts.wire import AuditInfo
from central.audit.service import AuditLog
from central.auth.guard import needs


@get("/v1/audit", **needs("admin", body=None))
async def audit(
    audit_log: AuditLog,
    limit: int = Parameter(default=100, ge=1, le=1000),
    before: int | None = Parameter(default=None, ge=1),
) -> list[AuditInfo]:
    return await audit_log.list(limit, before)


handlers = [audit]

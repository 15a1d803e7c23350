"""The audit log: every write and every refused attempt, append-only."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from central.db import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(256), default="")
    digest: Mapped[str] = mapped_column(String(80), default="")
    outcome: Mapped[str] = mapped_column(String(16))  # AuditOutcome
    detail: Mapped[str] = mapped_column(Text, default="")

"""An edge node's last heartbeat (fleet status)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from central.db import Base, UTCDateTime, utcnow


class Node(Base):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    report: Mapped[bytes] = mapped_column(LargeBinary)  # the NodeReport (JSON)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # the token that reports this node (first come; handed on once it is revoked or expired)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)

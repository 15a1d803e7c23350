"""An enrolled build worker: its identity, what it may build, its registered public key."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from central.db import Base, UTCDateTime


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    capabilities: Mapped[dict] = mapped_column(JSON)  # NodeCapabilities, as last advertised
    targets: Mapped[list[str]] = mapped_column(JSON, default=list)  # advertised ∩ allowed
    toolchain: Mapped[dict] = mapped_column(JSON, default=dict)  # as registered at hello
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    allowed_targets: Mapped[list[str]] = mapped_column(JSON, default=list)  # set at enrolment
    requires: Mapped[dict] = mapped_column(JSON, default=dict)  # capability requirements
    public_key: Mapped[str | None] = mapped_column(Text, nullable=True)  # PEM, registered
    key_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    enrolled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    revoked_keys: Mapped[list[str]] = mapped_column(JSON, default=list)  # never accepted again

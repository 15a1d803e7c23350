"""Publisher keys trusted through the API or ``central keys trust`` (rows are never deleted:
an untrusted key keeps its row, with who removed it and when)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from central.db import Base, UTCDateTime, created_at_column


class TrustedPublisherKey(Base):
    __tablename__ = "trusted_publisher_keys"
    key_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    public_pem: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(64))
    added_by: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[dt.datetime] = created_at_column()
    removed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

"""Blob rows: which content-addressed blobs were uploaded (the bytes live in the blob store)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from central.db import Base, created_at_column


class Blob(Base):
    __tablename__ = "blobs"
    digest: Mapped[str] = mapped_column(String(80), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = created_at_column()

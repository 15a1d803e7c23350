"""TUF metadata and channel pointers as rows, so every central replica serves and signs the same."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from central.db import Base, created_at_column


class TufFile(Base):
    """``metadata/<role>.json`` or ``targets/<model>/<channel>.json``, as signed."""

    __tablename__ = "tuf_files"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[dt.datetime] = created_at_column()

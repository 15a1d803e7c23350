"""Models, their monotonically numbered versions, and one bundle per target per version.

Every invariant that concurrency could break is a database constraint (unique version
numbers, one bundle per target per version).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from central.db import Base, created_at_column


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = created_at_column()


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "number", name="uq_version_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = created_at_column()
    created_by: Mapped[str] = mapped_column(String(64), default="")
    source_digest: Mapped[str] = mapped_column(String(80), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)  # once promoted: no new targets


class Bundle(Base):
    __tablename__ = "bundles"
    __table_args__ = (UniqueConstraint("version_id", "target", name="uq_bundle_target"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", ondelete="CASCADE"), index=True
    )
    target: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[bytes] = mapped_column(LargeBinary)  # the signed bytes, exactly as pushed
    manifest_digest: Mapped[str] = mapped_column(String(80))
    signature: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(80))
    quality_passed: Mapped[bool] = mapped_column(Boolean)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = created_at_column()
    created_by: Mapped[str] = mapped_column(String(64), default="")
    built_by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # enrolled worker
    verified_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attestation: Mapped[str | None] = mapped_column(Text, nullable=True)  # verifier's DSSE

"""Builds, their per-target jobs and logs, the workers that lease them, the build cache."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from central.db import Base, UTCDateTime, created_at_column, utcnow


class Build(Base):
    __tablename__ = "builds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    task: Mapped[str] = mapped_column(String(16))
    source_digest: Mapped[str] = mapped_column(String(80))
    request: Mapped[bytes] = mapped_column(LargeBinary)  # the submitted BuildRequest (JSON)
    may_promote: Mapped[bool] = mapped_column(Boolean, default=False)  # submitter's scope
    state: Mapped[str] = mapped_column(String(24), index=True)  # BuildState
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    promoted_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = created_at_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("build_id", "target", name="uq_job_target"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(24), index=True)  # JobState
    cache_key: Mapped[str] = mapped_column(String(80), index=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    history: Mapped[list[str]] = mapped_column(JSON, default=list)
    result_manifest: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    builder: Mapped[str | None] = mapped_column(String(64), nullable=True)  # who built it
    verify_attempts: Mapped[int] = mapped_column(Integer, default=0)
    attestation: Mapped[str | None] = mapped_column(Text, nullable=True)  # the verifier's DSSE
    result_signature: Mapped[str | None] = mapped_column(Text, nullable=True)  # model.sig
    # since when no live worker could build (queued) or verify (built) it; None: one can
    waiting_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def note(self, text: str) -> None:
        """Append to the history (a JSON list: reassigned so the change is persisted)."""
        self.history = [*self.history, text]
        self.updated_at = utcnow()


class JobLog(Base):
    __tablename__ = "job_logs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    line: Mapped[str] = mapped_column(Text)


class BuildCache(Base):
    """Verified results only, keyed on the inputs and the building worker's *registered*
    toolchain; points at the version that holds them."""

    __tablename__ = "build_cache"
    cache_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    manifest: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = created_at_column()
    model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)

"""Catalog rows: bindings, products (by stream sequence), stored vectors and re-embedding runs."""

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

from central.db import Base, UTCDateTime, created_at_column


class CatalogRow(Base):
    """A catalog; created by its first update. Unbound (no model) until ``PUT /v1/catalogs``."""

    __tablename__ = "catalogs"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    index_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    target: Mapped[str] = mapped_column(String(100), default="onnx-int8")
    channel: Mapped[str] = mapped_column(String(100), default="stable")
    stage_channel: Mapped[str] = mapped_column(String(100), default="candidate")
    chunk: Mapped[int] = mapped_column(Integer, default=64)
    # JSON {field: "str"|"number"|"bool"}: a field keeps its first type (an index needs that)
    field_types: Mapped[bytes] = mapped_column(LargeBinary, default=b"{}")
    created_at: Mapped[dt.datetime] = created_at_column()


class CatalogItem(Base):
    """The newest state of one product; ``seq`` is the stream sequence that set it, so updates
    applied out of order (or twice) never roll a product back."""

    __tablename__ = "catalog_items"
    catalog: Mapped[str] = mapped_column(
        String(200), ForeignKey("catalogs.name", ondelete="CASCADE"), primary_key=True
    )
    product_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    text: Mapped[str] = mapped_column(Text, default="")
    fields: Mapped[bytes] = mapped_column(LargeBinary, default=b"{}")  # JSON object
    digest: Mapped[str] = mapped_column(String(64), default="")
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)


class CatalogVector(Base):
    """One product text embedded by one model version's bundle: written once (first write of a
    key wins; ``POST …/runs`` with ``discard_vectors`` forgets a run's vectors)."""

    __tablename__ = "catalog_vectors"
    catalog: Mapped[str] = mapped_column(
        String(200), ForeignKey("catalogs.name", ondelete="CASCADE"), primary_key=True
    )
    product_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(100), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, unit length
    written_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = created_at_column()


class EmbedRun(Base):
    """Re-embedding one catalog with one model version, then its index, then (optionally)
    promoting index and model together."""

    __tablename__ = "embed_runs"
    __table_args__ = (
        UniqueConstraint("catalog", "model", "version", "target", name="uq_embed_run"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    catalog: Mapped[str] = mapped_column(
        String(200), ForeignKey("catalogs.name", ondelete="CASCADE")
    )
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(100))
    dim: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    done_at_start: Mapped[int] = mapped_column(Integer, default=0)
    promote: Mapped[bool] = mapped_column(Boolean, default=True)
    build_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    index_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[dt.datetime] = created_at_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # a replica's claim (indexing, promoting): another takes a stale one over
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    progress_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # the last time what was missing was sent again (a run whose progress stalled)
    republished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

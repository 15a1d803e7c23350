"""The catalog queue: catalogs, their products, stored vectors and re-embedding runs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogs",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("index_name", sa.String(200), nullable=True),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("stage_channel", sa.String(100), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("field_types", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "catalog_items",
        sa.Column(
            "catalog",
            sa.String(200),
            sa.ForeignKey("catalogs.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("product_id", sa.String(256), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("fields", sa.LargeBinary(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "catalog_vectors",
        sa.Column(
            "catalog",
            sa.String(200),
            sa.ForeignKey("catalogs.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("product_id", sa.String(256), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("target", sa.String(100), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("written_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "embed_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "catalog",
            sa.String(200),
            sa.ForeignKey("catalogs.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("done_at_start", sa.Integer(), nullable=False),
        sa.Column("promote", sa.Boolean(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("index_version", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("republished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("catalog", "model", "version", "target", name="uq_embed_run"),
    )


def downgrade() -> None:
    for table in ("embed_runs", "catalog_vectors", "catalog_items", "catalogs"):
        op.drop_table(table)

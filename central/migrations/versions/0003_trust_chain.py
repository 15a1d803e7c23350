"""Trust chain: enrolled workers with keys, bound and expiring tokens, independent
verification of built bundles, sealed versions, verified-only build cache.

Columns are only added (both engines add them in place). Existing workers were never
enrolled: they keep their rows but cannot lease until an admin enrols them. Existing bundles
were registered before verification existed: they count as unverified.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

ADDED: list[tuple[str, sa.Column]] = [
    ("tokens", sa.Column("expires_at", TS, nullable=True)),
    ("tokens", sa.Column("worker", sa.String(64), nullable=True)),
    ("workers", sa.Column("allowed_targets", sa.JSON(), nullable=False, server_default="[]")),
    ("workers", sa.Column("requires", sa.JSON(), nullable=False, server_default="{}")),
    ("workers", sa.Column("public_key", sa.Text(), nullable=True)),
    ("workers", sa.Column("key_id", sa.String(80), nullable=True)),
    ("workers", sa.Column("enrolled_at", TS, nullable=True)),
    ("workers", sa.Column("disabled_at", TS, nullable=True)),
    ("workers", sa.Column("disabled_reason", sa.Text(), nullable=False, server_default="")),
    ("workers", sa.Column("revoked_keys", sa.JSON(), nullable=False, server_default="[]")),
    ("jobs", sa.Column("builder", sa.String(64), nullable=True)),
    ("jobs", sa.Column("verify_attempts", sa.Integer(), nullable=False, server_default="0")),
    ("jobs", sa.Column("attestation", sa.Text(), nullable=True)),
    ("jobs", sa.Column("result_signature", sa.Text(), nullable=True)),
    ("builds", sa.Column("may_promote", sa.Boolean(), nullable=False, server_default=sa.false())),
    ("build_cache", sa.Column("model", sa.String(64), nullable=True)),
    ("build_cache", sa.Column("version", sa.Integer(), nullable=True)),
    ("build_cache", sa.Column("worker", sa.String(64), nullable=True)),
    ("versions", sa.Column("sealed", sa.Boolean(), nullable=False, server_default=sa.false())),
    ("bundles", sa.Column("built_by", sa.String(64), nullable=True)),
    ("bundles", sa.Column("verified_by", sa.String(64), nullable=True)),
    ("bundles", sa.Column("attestation", sa.Text(), nullable=True)),
]


def upgrade() -> None:
    for table, column in ADDED:
        op.add_column(table, column)
    # a version that a channel ever pointed at is sealed; the old build cache held
    # unverified results: drop them (they are rebuilt, and verified, on demand)
    op.execute(
        "UPDATE versions SET sealed = true WHERE id IN (SELECT v.id FROM versions v "
        "JOIN channel_events e ON e.version = v.number JOIN channels c ON c.id = e.channel_id "
        "AND c.model_id = v.model_id)"
    )
    op.execute("DELETE FROM build_cache")


def downgrade() -> None:
    for table, column in reversed(ADDED):
        op.drop_column(table, column.name)

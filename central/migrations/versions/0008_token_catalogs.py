"""Tokens bound to catalogs: an embed worker's token reaches its own catalogs and no other.

Downgrading revokes every bound token first: without the column it would reach every catalog.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("catalogs", sa.JSON(), nullable=True))


def downgrade() -> None:
    tokens = sa.table(
        "tokens",
        sa.column("catalogs", sa.JSON()),
        sa.column("revoked_at", sa.DateTime(timezone=True)),
    )
    bound = sa.and_(
        tokens.c.catalogs.is_not(None),
        sa.cast(tokens.c.catalogs, sa.Text()) != "null",  # a JSON null is not a binding
        tokens.c.revoked_at.is_(None),
    )
    op.execute(tokens.update().where(bound).values(revoked_at=dt.datetime.now(dt.UTC)))
    op.drop_column("tokens", "catalogs")

"""Tokens bound to catalogs: an embed worker's token reaches its own catalogs and no other.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("catalogs", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("tokens", "catalogs")

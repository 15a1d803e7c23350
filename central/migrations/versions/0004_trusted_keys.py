"""Publisher keys trusted at run time (``/v1/keys/trusted``, ``central keys trust``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trusted_publisher_keys",
        sa.Column("key_id", sa.String(80), primary_key=True),
        sa.Column("public_pem", sa.Text(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("added_by", sa.String(64), nullable=False),
        sa.Column("added_at", TS, nullable=False),
        sa.Column("removed_by", sa.String(64), nullable=True),
        sa.Column("removed_at", TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("trusted_publisher_keys")

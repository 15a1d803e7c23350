"""TUF metadata and channel pointers in the database (shared by every central replica).

The files a replica signed under ``HOME/tuf`` before this are imported on its first start.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tuf_files",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tuf_files")

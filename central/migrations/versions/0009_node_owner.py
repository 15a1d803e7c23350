"""Fleet nodes owned by the token that reports them: another token's heartbeat cannot
overwrite a node's report while that token is live.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("token_id", sa.Integer(), nullable=True))
    op.create_index("ix_nodes_token_id", "nodes", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_nodes_token_id", table_name="nodes")
    op.drop_column("nodes", "token_id")

"""Typed columns: lists and documents as JSON, float epochs as UTC timestamps.

tokens.scopes (CSV), workers.targets (CSV), jobs.history (newline text) become JSON lists;
workers.capabilities / workers.toolchain (JSON bytes) become JSON; workers.last_seen and
jobs.lease_expires (float epoch seconds) become timestamps. Existing rows are carried over.

Each column is replaced by add → copy → drop → rename, which both SQLite (>= 3.35, native
DROP/RENAME COLUMN) and PostgreSQL run in place: no table is recreated, so rows referencing
``jobs`` through a cascading foreign key are never touched.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _csv(value: Any) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def _lines(value: Any) -> list[str]:
    return [v for v in (value or "").split("\n") if v]


def _json_bytes(value: Any) -> Any:
    if value is None:
        return {}
    return json.loads(bytes(value).decode() or "{}")


def _epoch(value: Any) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(float(value), dt.UTC)


def _list_to_csv(value: Any) -> str:
    return ",".join(value or [])


def _list_to_lines(value: Any) -> str:
    return "\n".join(value or [])


def _to_json_bytes(value: Any) -> bytes:
    return json.dumps(value or {}).encode()


def _to_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _retype(
    table: str,
    column: str,
    new_type: sa.types.TypeEngine,
    convert: Callable[[Any], Any],
    *,
    nullable: bool,
    placeholder: str | None,
) -> None:
    """Replace ``table.column`` by a column of ``new_type`` holding ``convert(old value)``.

    A NOT NULL column is added with a placeholder server default (SQLite cannot add one
    without it, nor alter it later); PostgreSQL drops the placeholder once rows are copied.
    """
    tmp = f"{column}__new"
    default = None if nullable or placeholder is None else sa.text(placeholder)
    op.add_column(table, sa.Column(tmp, new_type, nullable=nullable, server_default=default))
    bind = op.get_bind()
    t = sa.table(table, sa.column("id"), sa.column(column), sa.column(tmp, new_type))
    for row_id, old in bind.execute(sa.select(t.c.id, t.c[column])).all():
        bind.execute(sa.update(t).where(t.c.id == row_id).values({tmp: convert(old)}))
    op.drop_column(table, column)
    op.alter_column(table, tmp, new_column_name=column)
    if default is not None and bind.dialect.name != "sqlite":
        op.alter_column(table, column, server_default=None, existing_type=new_type)


TS = sa.DateTime(timezone=True)
ZERO_TS = "'1970-01-01 00:00:00+00:00'"
# table, column, (new type, up, placeholder), (old type, down, placeholder), nullable
COLUMNS: list[tuple[str, str, tuple, tuple, bool]] = [
    ("tokens", "scopes", (sa.JSON(), _csv, "'[]'"), (sa.String(128), _list_to_csv, "''"), False),
    ("workers", "targets", (sa.JSON(), _csv, "'[]'"), (sa.String(256), _list_to_csv, "''"), False),
    (
        "workers",
        "capabilities",
        (sa.JSON(), _json_bytes, "'{}'"),
        (sa.LargeBinary(), _to_json_bytes, "''"),
        False,
    ),
    (
        "workers",
        "toolchain",
        (sa.JSON(), _json_bytes, "'{}'"),
        (sa.LargeBinary(), _to_json_bytes, "''"),
        False,
    ),
    ("workers", "last_seen", (TS, _epoch, ZERO_TS), (sa.Float(), _to_epoch, "0"), False),
    ("jobs", "history", (sa.JSON(), _lines, "'[]'"), (sa.Text(), _list_to_lines, "''"), False),
    ("jobs", "lease_expires", (TS, _epoch, None), (sa.Float(), _to_epoch, None), True),
]


def upgrade() -> None:
    for table, column, (new_type, up, placeholder), _old, nullable in COLUMNS:
        _retype(table, column, new_type, up, nullable=nullable, placeholder=placeholder)


def downgrade() -> None:
    for table, column, _new, (old_type, down, placeholder), nullable in reversed(COLUMNS):
        _retype(table, column, old_type, down, nullable=nullable, placeholder=placeholder)

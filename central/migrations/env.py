"""Alembic environment. Migrations run on a connection handed over by central.db
(``config.attributes["connection"]``), so they share the service's async engine."""

from __future__ import annotations

from alembic import context

from central.schema import metadata

target_metadata = metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("central migrations run through central.db.migrate()")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()

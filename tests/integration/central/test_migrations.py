"""Alembic migrations and the ORM models describe the same schema, on SQLite and PostgreSQL,
and migration 0002 carries existing rows over (CSV/text lists → JSON, float epochs → UTC)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from central.db import Database, alembic_config, migrate
from central.schema import metadata


def _sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"


@pytest.fixture
def db_url(tmp_path, database_url):
    return database_url or _sqlite_url(tmp_path)


def _run(url: str, fn):
    async def go():
        db = Database(url)
        try:
            async with db.engine.begin() as conn:
                return await conn.run_sync(fn)
        finally:
            await db.close()

    return asyncio.run(go())


def test_models_and_migrations_do_not_drift(db_url):
    async def up():
        db = Database(db_url)
        await migrate(db.engine)
        await db.close()

    asyncio.run(up())

    def diff(conn):
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)

    assert _run(db_url, diff) == []


def _upgrade(revision: str):
    def fn(conn):
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    return fn


def test_0002_carries_existing_rows_over(db_url):
    _run(db_url, _upgrade("0001"))

    def seed(conn):
        conn.execute(
            sa.text(
                "INSERT INTO tokens (id, name, token_hash, scopes, created_at) "
                "VALUES (1, 'ops', 'sha256:x', 'push,promote', :now)"
            ),
            {"now": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO workers (id, name, capabilities, targets, toolchain, last_seen) "
                "VALUES (1, 'w', :caps, 'onnx-fp32,onnx-int8', :tc, 1767225600.5)"
            ),
            {"caps": b'{"arch": "x86_64"}', "tc": b'{"onnx": "1.23.2"}'},
        )
        conn.execute(
            sa.text(
                "INSERT INTO builds (id, model, task, source_digest, request, state, created_at, "
                "created_by, detail) VALUES (1, 'm', 'embedding', 'd', :req, 'running', :now, 'a', '')"
            ),
            {"req": b"{}", "now": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, build_id, target, state, cache_key, attempts, history, "
                "reason, cached, updated_at, lease_expires) VALUES (1, 1, 'onnx-fp32', 'running', "
                "'k', 1, :hist, '', false, :now, 1767225660.0)"
            ),
            {"hist": "attempt 1: leased\nattempt 1: lease expired", "now": dt.datetime(2026, 1, 1)},
        )

    _run(db_url, seed)
    _run(db_url, _upgrade("head"))

    def read(conn):
        t = {
            name: sa.Table(name, sa.MetaData(), autoload_with=conn)
            for name in ("tokens", "workers", "jobs")
        }
        return (
            conn.execute(sa.select(t["tokens"].c.scopes)).scalar_one(),
            conn.execute(
                sa.select(
                    t["workers"].c.targets,
                    t["workers"].c.capabilities,
                    t["workers"].c.toolchain,
                    t["workers"].c.last_seen,
                )
            ).one(),
            conn.execute(sa.select(t["jobs"].c.history, t["jobs"].c.lease_expires)).one(),
        )

    scopes, worker, job = _run(db_url, read)
    assert scopes == ["push", "promote"]
    targets, caps, toolchain, last_seen = worker
    assert targets == ["onnx-fp32", "onnx-int8"]
    assert caps == {"arch": "x86_64"} and toolchain == {"onnx": "1.23.2"}
    assert _utc(last_seen) == dt.datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=dt.UTC)
    history, lease_expires = job
    assert history == ["attempt 1: leased", "attempt 1: lease expired"]
    assert _utc(lease_expires) == dt.datetime(2026, 1, 1, 0, 1, 0, tzinfo=dt.UTC)


def _utc(value):
    if isinstance(value, str):  # SQLite hands back the stored text
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def test_read_only_commands_never_migrate(tmp_path, capsys):
    """`central gc --dry-run` and the listings change nothing: on a schema that is not this
    central's (an older service still running on it) they refuse, naming both revisions, and
    leave it where it was; a writing command migrates as before."""
    from central.cli import main
    from central.db import schema_behind

    home = tmp_path / "central"
    for argv in (["token", "list"], ["gc", "--dry-run"]):  # no central here: nothing created
        assert main([*argv, "--home", str(home)]) == 1
        assert "no central database" in capsys.readouterr().err
        assert not home.exists()
    home.mkdir()
    url = f"sqlite+aiosqlite:///{home / 'central.db'}"
    _run(url, _upgrade("0007"))

    def revision() -> str | None:
        return _run(url, lambda conn: MigrationContext.configure(conn).get_current_revision())

    for argv in (
        ["gc", "--dry-run"],
        ["token", "list"],
        ["workers", "list"],
        ["keys", "list"],
        ["tuf", "root"],
    ):
        assert main([*argv, "--home", str(home)]) == 1, argv
        err = capsys.readouterr().err
        assert "revision 0007" in err and "read-only" in err, (argv, err)
        assert revision() == "0007"
    assert main(["token", "create", "--scope", "pull", "--home", str(home)]) == 0
    assert revision() != "0007"

    async def behind():
        db = Database(url)
        try:
            return await schema_behind(db.engine)
        finally:
            await db.close()

    assert asyncio.run(behind()) is None
    assert main(["token", "list", "--home", str(home)]) == 0


def test_downgrading_0008_revokes_catalog_bound_tokens(db_url):
    """Without the column a bound token would reach every catalog: the downgrade revokes it,
    and leaves unbound tokens (a JSON null included) as they were."""
    _run(db_url, _upgrade("0008"))

    def seed(conn):
        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        rows = [(1, "bound", '["shoes"]'), (2, "unbound", None), (3, "json-null", "null")]
        for id_, name, catalogs in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO tokens (id, name, token_hash, scopes, created_at, catalogs) "
                    "VALUES (:id, :name, :hash, '[\"embed\"]', :now, :catalogs)"
                ),
                {
                    "id": id_,
                    "name": name,
                    "hash": f"sha256:{id_}",
                    "now": now,
                    "catalogs": catalogs,
                },
            )

    _run(db_url, seed)

    def downgrade(conn):
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")

    _run(db_url, downgrade)

    def read(conn):
        t = sa.Table("tokens", sa.MetaData(), autoload_with=conn)
        assert "catalogs" not in t.c
        return dict(conn.execute(sa.select(t.c.name, t.c.revoked_at)).all())

    revoked = _run(db_url, read)
    assert revoked["bound"] is not None
    assert revoked["unbound"] is None and revoked["json-null"] is None

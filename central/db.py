"""Engine, sessions, migrations and the declarative base, for SQLite (default) and PostgreSQL.

SQLite: WAL journal, a busy timeout, and ``BEGIN IMMEDIATE`` for every transaction so writers
are serialised by the database instead of failing with "database is locked" halfway through.
PostgreSQL: row locks (``FOR UPDATE``; ``SKIP LOCKED`` for job leases) where it matters.
Each feature folder declares its tables on :class:`Base` in its own ``models.py``;
:mod:`central.schema` imports them all (Alembic and the drift test need the whole schema).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.types import TypeDecorator

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
T = TypeVar("T")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on both engines (SQLite returns naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    pass


def created_at_column() -> Any:
    return mapped_column(UTCDateTime(), default=utcnow)


def iso(t: dt.datetime | None) -> str:
    """A timestamp for the wire ("" for none), seconds precision, always with the UTC offset."""
    if t is None:
        return ""
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.isoformat(timespec="seconds")


def make_engine(url: str, *, writer: bool = True) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_connect(dbapi_conn, _record) -> None:  # pragma: no cover - driver hook
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn) -> None:  # pragma: no cover - driver hook
            # Writers take the write lock up front (no lock upgrade deadlocks); readers do
            # not block anyone under WAL.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the schema to head (idempotent)."""

    def _upgrade(sync_conn) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def schema_behind(engine: AsyncEngine) -> str | None:
    """None when the schema is at head; else what it is at (a read-only command must not
    migrate a database, e.g. one an older service still runs on)."""

    def _check(sync_conn) -> str | None:
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        current = MigrationContext.configure(sync_conn).get_current_revision()
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        if current == head:
            return None
        return f"the database schema is at revision {current or 'none'}, this central's is {head}"

    async with engine.connect() as conn:
        return await conn.run_sync(_check)


async def retry_integrity(attempt: Callable[[], Awaitable[T]], *, attempts: int = 3) -> T:
    """Run a transaction again when it lost a race on a unique constraint (e.g. two first
    pushes creating the same model row); the last IntegrityError propagates."""
    tries = 1
    while True:
        try:
            return await attempt()
        except IntegrityError:
            if tries >= attempts:
                raise
            tries += 1


class Database:
    """``session()`` for reads, ``transaction()`` for writes. On SQLite they use separate
    engines so reads never queue behind the single writer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.read_engine = (
            make_engine(url, writer=False) if url.startswith("sqlite") else self.engine
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.read_sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def serialize(self, s: AsyncSession, key: int) -> None:
        """Hold lock ``key`` until ``s``'s transaction ends: PostgreSQL's transaction-level
        advisory lock (SQLite: its single writer already serializes every write)."""
        if self.is_postgres:
            await s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    async def try_serialize(self, s: AsyncSession, space: int, key: int) -> bool:
        """Take lock (``space``, ``key``) until ``s``'s transaction ends if it is free now;
        False when another transaction holds it (PostgreSQL's two-int4 advisory lock, a key
        space apart from :meth:`serialize`'s; SQLite: always True, its writer serializes).
        For routes any token may call: a waiting transaction would hold a pooled connection."""
        if not self.is_postgres:
            return True
        got = await s.execute(
            text("SELECT pg_try_advisory_xact_lock(:space, :key)"),
            {"space": _int4(space), "key": _int4(key)},
        )
        return bool(got.scalar_one())

    async def ping(self) -> str | None:
        """None when the database answers, else why not (readiness; never raises)."""
        try:
            async with self.session() as s:
                await s.execute(text("SELECT 1"))
            return None
        except Exception as exc:
            return f"database unreachable: {exc}"

    async def close(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def _int4(v: int) -> int:
    """``v``'s low 32 bits as PostgreSQL's signed int4."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v

"""KeyTrust against a real SQLite database: two replicas (two KeyTrust objects on one
database), the cache window, and the in-transaction recheck that closes it for pushes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from artifacts.errors import InputError, Unprocessable
from artifacts.signing import generate_keypair
from central.audit.service import AuditLog
from central.db import Database, migrate
from central.keys.service import KeyTrust


def run(home: Path, work):
    async def go():
        db = Database(f"sqlite+aiosqlite:///{home / 'central.db'}")
        await migrate(db.engine)
        try:
            return await work(db)
        finally:
            await db.close()

    home.mkdir(parents=True, exist_ok=True)
    return asyncio.run(go())


def test_an_untrust_on_another_replica_refuses_the_next_push_at_once(tmp_path):
    _, pub, kid = generate_keypair(tmp_path / "k")

    async def work(db):
        audit = AuditLog(db)
        a = KeyTrust(db, audit, tmp_path / "a-files")
        b = KeyTrust(db, audit, tmp_path / "b-files")
        info, created = await a.trust(pub.read_text(), "release", "admin")
        assert created and info.key_id == kid
        assert kid in (await b.current()).keys  # b's cache now holds it
        await a.untrust(kid, "admin")
        assert kid not in (await a.current()).keys  # at once where it changed
        assert kid in (await b.current()).keys  # b's read is up to TRUST_CACHE_S old ...
        async with db.transaction() as s:  # ... but the push's own transaction checks again
            with pytest.raises(Unprocessable, match="no longer trusted"):
                await b.still_trusted(s, kid)
        _, again = await b.trust(pub.read_text(), "release-2", "admin")
        assert again  # trusted again after an untrust
        async with db.transaction() as s:
            await a.still_trusted(s, kid)
        results = await asyncio.gather(
            a.trust(pub.read_text(), "x", "admin"), b.trust(pub.read_text(), "y", "admin")
        )
        assert [created for _, created in results] == [False, False]  # already trusted

    run(tmp_path / "home", work)


def test_private_keys_are_refused_with_a_warning(tmp_path):
    priv, pub, _ = generate_keypair(tmp_path / "k")

    async def work(db):
        kt = KeyTrust(db, AuditLog(db), tmp_path / "files")
        with pytest.raises(InputError, match="treat that private key as exposed"):
            await kt.trust(pub.read_text() + priv.read_text(), "x", "admin")
        with pytest.raises(InputError, match="key name"):
            await kt.trust(pub.read_text(), "n" * 100_000, "admin")
        assert await kt.list() == []

    run(tmp_path / "home", work)

"""TUF metadata in the database, shared by replicas: one signing sequence across processes'
working copies, a failed change leaves nothing half-published, an old working copy is
imported once, and a replica with other online keys is refused (real SQLite / PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from artifacts.errors import NotFoundError
from central.db import Database, migrate
from central.tuf.repository import ChannelPointer, TufRepository
from central.tuf.shared import SharedTuf, TufKeysMismatch


def pointer(version: int, model: str = "m", channel: str = "stable") -> ChannelPointer:
    return ChannelPointer(model, channel, version, {"onnx-int8": f"sha256:{version:064x}"})


@pytest.fixture
def db(database_url, tmp_path):
    """The database's URL; each test opens it inside its own event loop (:func:`run`)."""
    return database_url or f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"


def run(url: str, test) -> None:
    async def main() -> None:
        database = Database(url)
        try:
            await migrate(database.engine)
            await test(database)
        finally:
            await database.close()

    asyncio.run(main())


def replica(tmp_path, database, name: str, keys: str = "online") -> SharedTuf:
    return SharedTuf(
        database,
        TufRepository(
            tmp_path / name / "tuf",
            offline_keys=tmp_path / "offline",
            online_keys=tmp_path / keys,
        ),
    )


async def doc(tuf: SharedTuf, name: str) -> dict:
    return json.loads(await tuf.metadata(name))["signed"]


async def consistent(tuf: SharedTuf) -> bool:
    """The timestamp names the snapshot, the snapshot every targets role's current version."""
    ts, snap = await doc(tuf, "timestamp.json"), await doc(tuf, "snapshot.json")
    if ts["meta"]["snapshot.json"]["version"] != snap["version"]:
        return False
    for role, meta in snap["meta"].items():
        if (await doc(tuf, role))["version"] != meta["version"]:
            return False
    return True


def test_two_replicas_sign_one_sequence(tmp_path, db):
    async def go(database: Database) -> None:
        a, b = replica(tmp_path, database, "a"), replica(tmp_path, database, "b")
        await a.start()
        await b.start()  # the repository exists: b only checks it can sign for it
        before = (await doc(a, "timestamp.json"))["version"]
        await asyncio.gather(
            *((a if i % 2 else b).publish(pointer(i, model=f"m{i % 3}")) for i in range(1, 13))
        )
        assert (await doc(b, "timestamp.json"))["version"] == before + 12  # none lost
        assert await consistent(a)
        for m in range(3):  # four signatures per model role (created at 1), whoever signed
            assert (await doc(a, f"model-m{m}.json"))["version"] == 5
            published = json.loads(await b.target(f"m{m}", "stable"))["version"]
            assert published % 3 == m
        assert await a.key_problem() is None and await b.key_problem() is None

    run(db, go)


def test_a_failed_change_publishes_nothing_and_the_next_repairs(tmp_path, db, monkeypatch):
    async def go(database: Database) -> None:
        tuf = replica(tmp_path, database, "a")
        await tuf.start()
        await tuf.publish(pointer(1))
        before = {n: await tuf.metadata(n) for n in ("timestamp.json", "model-m.json")}

        def power_cut(*_a, **_k):
            raise OSError("power cut")

        monkeypatch.setattr(tuf.repo, "_snapshot_and_timestamp", power_cut)
        with pytest.raises(OSError, match="power cut"):
            await tuf.publish(pointer(2))  # the model role was re-signed in the working copy
        monkeypatch.undo()
        for name, body in before.items():  # ... but nothing of it was published
            assert await tuf.metadata(name) == body
        assert json.loads(await tuf.target("m", "stable"))["version"] == 1
        await tuf.publish(pointer(2))
        assert json.loads(await tuf.target("m", "stable"))["version"] == 2
        assert await consistent(tuf)

    run(db, go)


def test_a_working_copy_from_before_is_imported_once(tmp_path, db):
    old = TufRepository(
        tmp_path / "a" / "tuf", offline_keys=tmp_path / "offline", online_keys=tmp_path / "online"
    )
    old.init()
    asyncio.run(old.publish(pointer(4)))
    files = old.files()

    async def go(database: Database) -> None:
        tuf = replica(tmp_path, database, "a")
        await tuf.start()
        assert await tuf.metadata("timestamp.json") == files["metadata/timestamp.json"]
        assert await tuf.target("m", "stable") == files["targets/m/stable.json"]
        shutil.rmtree(tmp_path / "a" / "tuf" / "metadata")  # the database is the copy now
        await tuf.publish(pointer(5))
        assert json.loads(await tuf.target("m", "stable"))["version"] == 5
        assert await consistent(tuf)

    run(db, go)


def test_a_replica_with_other_online_keys_is_refused(tmp_path, db):
    async def go(database: Database) -> None:
        await replica(tmp_path, database, "a").start()
        rogue = replica(tmp_path, database, "rogue", keys="rogue-online")
        with pytest.raises(TufKeysMismatch, match="online"):
            await rogue.start()
        problem = await rogue.key_problem()
        assert problem is not None and "online" in problem
        with pytest.raises(TufKeysMismatch):
            await rogue.publish(pointer(1))
        assert not (tmp_path / "rogue-online").exists()  # it made no keys of its own

    run(db, go)


def test_rotating_where_the_online_keys_are_not_changes_nothing(tmp_path, db):
    """`central tuf rotate root` on the offline-keys machine without the online keys must not
    re-sign the snapshot and timestamp with keys it made up (every edge would refuse them)."""

    async def go(database: Database) -> None:
        a = replica(tmp_path, database, "a")
        await a.start()
        await a.publish(pointer(1))
        before = {n: await a.metadata(n) for n in ("root.json", "snapshot.json", "timestamp.json")}
        offline_host = replica(tmp_path, database, "offline-host", keys="not-here")
        with pytest.raises(TufKeysMismatch, match="online"):
            await offline_host.rotate("root")
        for name, body in before.items():
            assert await a.metadata(name) == body
        assert not (tmp_path / "not-here").exists()
        # a rotation that fails after making the new key (here: the targets key is not on
        # this host) puts the old key back: the replicas' keys still sign
        models_key = (tmp_path / "online" / "models" / "publisher.key").read_bytes()
        (tmp_path / "offline" / "targets").rename(tmp_path / "targets-elsewhere")
        with pytest.raises(NotFoundError, match="offline targets key"):
            await a.rotate("models")
        (tmp_path / "targets-elsewhere").rename(tmp_path / "offline" / "targets")
        assert (tmp_path / "online" / "models" / "publisher.key").read_bytes() == models_key
        assert await a.key_problem() is None
        new = await a.rotate("timestamp")  # with the online keys it works (and a new root)
        assert new and (await doc(a, "root.json"))["version"] == 2
        assert await consistent(a)

    run(db, go)


def test_a_registry_with_channels_gets_no_new_root_by_accident(tmp_path, db):
    """Upgrading: a replica without the old working copy starting first must not mint a new
    root (edges trust the old one); the replica that has it imports it, and a working copy of
    another root is set aside, not overwritten."""
    from central.channels.models import Channel
    from central.registry.models import Model

    old = TufRepository(
        tmp_path / "a" / "tuf", offline_keys=tmp_path / "offline", online_keys=tmp_path / "online"
    )
    old.init()
    asyncio.run(old.publish(pointer(3)))

    async def go(database: Database) -> None:
        async with database.transaction() as s:
            m = Model(name="m", last_version=3)
            s.add(m)
            await s.flush()
            s.add(Channel(model_id=m.id, name="stable", version=3, seq=1))
        with pytest.raises(TufKeysMismatch, match="no TUF metadata"):
            await replica(tmp_path, database, "fresh").start()
        assert not await replica(tmp_path, database, "fresh").exists()
        await replica(tmp_path, database, "a").start()  # the old copy is imported
        assert (
            json.loads(await replica(tmp_path, database, "a").target("m", "stable"))["version"] == 3
        )
        stray = TufRepository(
            tmp_path / "b" / "tuf", offline_keys=tmp_path / "off-b", online_keys=tmp_path / "online"
        )
        stray.init()  # another root entirely, in b's working copy
        await replica(tmp_path, database, "b").start()
        aside = list((tmp_path / "b" / "tuf").glob("replaced-*"))
        assert len(aside) == 1 and (aside[0] / "metadata" / "root.json").is_file()
        assert (tmp_path / "b" / "tuf" / "metadata" / "root.json").read_bytes() == (
            await replica(tmp_path, database, "b").metadata("root.json")
        )

    run(db, go)

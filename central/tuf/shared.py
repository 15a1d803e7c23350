"""The TUF repository shared by every central replica: files in the database, signing serialised.

:class:`~central.tuf.repository.TufRepository` signs on a working copy of the files
(``HOME/tuf``). Each change runs in one database transaction that first takes a lock
(PostgreSQL: a transaction-level advisory lock; SQLite: its single writer), loads every file
into the working copy, signs, and writes back what changed; so two replicas never sign from
stale versions, and an edge reads (from the database) either all of a change or none of it.
A working copy from before this existed is imported on the first start.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import select
from tuf.api.metadata import Metadata

from artifacts.errors import NotFoundError
from artifacts.names import check_name
from central.channels.models import Channel
from central.db import Database, utcnow
from central.tuf.models import TufFile
from central.tuf.repository import (
    METADATA_FILE,
    ChannelPointer,
    TufKeysMismatch,
    TufRepository,
)

T = TypeVar("T")
A = TypeVar("A")
log = logging.getLogger("shipyard.central.tuf")
LOCK_KEY = 0x5475_6600  # "Tuf": the advisory lock every replica's signing takes


class SharedTuf:
    def __init__(self, db: Database, repo: TufRepository) -> None:
        self.db = db
        self.repo = repo
        self._local = asyncio.Lock()

    async def _change(self, op: Callable[[], T], *, skip_keys: tuple[str, ...] = ()) -> T:
        return await self._change_with(None, lambda _: op(), skip_keys=skip_keys)

    async def _change_with(
        self,
        read: Callable[[], Awaitable[A]] | None,
        op: Callable[[A | None], T],
        *,
        skip_keys: tuple[str, ...] = (),
    ) -> T:
        """``op(await read())`` under the lock: what ``read`` sees (the channel rows) is the
        latest committed state, so whichever replica signs last signs the newest pointer."""
        async with self._local, self.db.transaction() as s:
            await self.db.serialize(s, LOCK_KEY)
            value = await read() if read is not None else None
            rows = {n: bytes(b) for n, b in (await s.execute(select(TufFile.name, TufFile.body)))}
            if rows:
                await asyncio.to_thread(self.repo.materialise, rows)
            before = rows  # empty: a working copy from before (if any) is imported whole
            if self.repo.initialised:
                problem = await asyncio.to_thread(
                    lambda: self.repo.online_key_problem(skip=skip_keys)
                )
                if problem is not None:
                    raise TufKeysMismatch(problem)
            result = await asyncio.to_thread(op, value)
            after = await asyncio.to_thread(self.repo.files)
            for name, body in after.items():
                if before.get(name) != body:
                    row = await s.get(TufFile, name)
                    if row is None:
                        s.add(TufFile(name=name, body=body))
                    else:
                        row.body, row.updated_at = body, utcnow()
            return result

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self, *, new_root: bool = False) -> None:
        """Create the repository (first start of a new registry), import a pre-existing working
        copy, and refuse to start with online keys the shared root does not list. A registry
        that already has channels but no metadata in the database gets no new root here (that
        would strand every edge): its old working copy must be imported, or ``central tuf init``
        run on purpose (``new_root``)."""
        await self._set_aside_foreign_copy()
        async with self.db.session() as s:
            has_channels = (await s.execute(select(Channel.id).limit(1))).first() is not None

        def create() -> None:
            if self.repo.initialised:
                return
            if has_channels and not new_root:
                raise TufKeysMismatch(
                    "this registry has channels but no TUF metadata in its database: start the "
                    "replica whose HOME/tuf holds it first (it is imported), or create a new "
                    "root on purpose with `central tuf init` (edges then need the new root.json)"
                )
            self.repo.init()

        await self._change(create)

    async def _set_aside_foreign_copy(self) -> None:
        """A working copy of another repository (another first root) is moved aside, not
        overwritten (an older root of this repository is only a stale copy: refreshed)."""
        async with self.db.session() as s:
            row = await s.get(TufFile, "metadata/1.root.json")
        local = self.repo.metadata_dir / "1.root.json"
        if row is None or not local.is_file() or local.read_bytes() == bytes(row.body):
            return
        aside = self.repo.root / f"replaced-{int(time.time())}-{uuid.uuid4().hex[:8]}"
        aside.mkdir(parents=True)
        for part in (self.repo.metadata_dir, self.repo.targets_dir):
            if part.exists():
                part.rename(aside / part.name)
        log.warning("TUF working copy of another root moved to %s; the database's is used", aside)

    async def key_problem(self) -> str | None:
        """For readiness: None when this replica can sign for the shared root."""
        try:
            async with self.db.session() as s:
                root = await s.get(TufFile, "metadata/root.json")
                targets = await s.get(TufFile, "metadata/targets.json")
            if root is None or targets is None:
                return "no TUF repository yet"
            return await asyncio.to_thread(
                self.repo.online_key_problem,
                Metadata.from_bytes(bytes(root.body)),
                Metadata.from_bytes(bytes(targets.body)),
            )
        except Exception as exc:
            return f"TUF metadata unreadable: {exc}"

    # ---- changes ---------------------------------------------------------------------------

    async def publish(self, pointer: ChannelPointer) -> None:
        await self._change(lambda: self.repo._publish(pointer))

    async def publish_latest(self, read: Callable[[], Awaitable[list[ChannelPointer]]]) -> None:
        """The pointers ``read`` gives, read once the lock is held, in one change (one
        snapshot and timestamp): a promotion, or every channel at start."""
        await self._change_with(read, lambda pointers: self.repo._publish_many(pointers or []))

    async def refresh(self) -> None:
        await self._change(self.repo._refresh)

    async def rotate(self, role: str) -> str:
        """Needs the offline keys and the online keys (the snapshot and timestamp are re-signed;
        the rotated role's own old key may be lost). An online role's new key must then reach
        every replica. Should the change not commit, the role's old key is put back."""
        keys = self.repo.key_dir(role)
        backup = keys.with_name(f".{role}.before-rotation")
        shutil.rmtree(backup, ignore_errors=True)
        if keys.is_dir():
            shutil.copytree(keys, backup)
        try:
            new = await self._change(lambda: self.repo.rotate(role), skip_keys=(role,))
        except BaseException:
            if backup.is_dir():
                shutil.rmtree(keys, ignore_errors=True)
                backup.rename(keys)
            raise
        shutil.rmtree(backup, ignore_errors=True)
        return new

    # ---- reads (what edges fetch) ----------------------------------------------------------

    async def _read(self, name: str, what: str) -> bytes:
        async with self.db.session() as s:
            row = await s.get(TufFile, name)
        if row is None:
            raise NotFoundError(f"no {what}")
        return bytes(row.body)

    async def metadata(self, name: str) -> bytes:
        if not METADATA_FILE.fullmatch(name):
            raise NotFoundError(f"no TUF metadata named {name!r}")
        return await self._read(f"metadata/{name}", f"TUF metadata named {name!r}")

    async def target(self, model: str, channel: str) -> bytes:
        name = (
            f"targets/{check_name(model, 'model name')}/{check_name(channel, 'channel name')}.json"
        )
        return await self._read(name, f"channel pointer for {model}:{channel}")

    async def root_json(self) -> bytes:
        return await self.metadata("root.json")

    async def exists(self) -> bool:
        """Whether the database holds a repository (a root)."""
        async with self.db.session() as s:
            return await s.get(TufFile, "metadata/root.json") is not None

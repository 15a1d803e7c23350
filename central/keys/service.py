"""Which publisher keys central accepts pushed bundles from: the files in
``home/trusted_keys`` (read at start; the bootstrap) plus the keys trusted at run time, kept in
the database so every replica agrees. A replica re-reads them at most every ``TRUST_CACHE_S``
(at once after a change it made itself), so trusting or untrusting a key needs no restart.

Built bundles are not affected: they are signed by enrolled workers' keys (``central workers``).
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.errors import ConflictError, InputError, NotFoundError, Unprocessable
from artifacts.names import check_name
from artifacts.signing import TrustedKeys, key_id_of, public_key_from_pem, public_pem
from artifacts.wire import TrustedKeyInfo
from central.audit.service import AuditLog
from central.db import Database, iso, retry_integrity, utcnow
from central.keys.models import TrustedPublisherKey

TRUST_CACHE_S = 2.0
MAX_PEM_BYTES = 4096


class KeyTrust:
    def __init__(self, db: Database, audit: AuditLog, files_dir: Path) -> None:
        self.db = db
        self.audit = audit
        self.files_dir = files_dir
        files_dir.mkdir(parents=True, exist_ok=True)
        self.from_files = TrustedKeys.from_paths([files_dir])
        self._cached: tuple[float, TrustedKeys] | None = None
        self._generation = 0  # bumped by every change here: a read that raced one is not cached

    def _file_key_ids(self) -> set[str]:
        return set(self.from_files.keys)

    async def current(self) -> TrustedKeys:
        """The keys a pushed bundle may be signed by, now."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < TRUST_CACHE_S:
            return cached[1]
        generation = self._generation
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(TrustedPublisherKey).where(TrustedPublisherKey.removed_at.is_(None))
                )
            ).scalars()
            pems = [r.public_pem.encode() for r in rows]
        trusted = TrustedKeys.of(*pems)
        for key in self.from_files.keys.values():
            trusted.add(key)
        if generation == self._generation:
            self._cached = (time.monotonic(), trusted)
        return trusted

    async def still_trusted(self, s: AsyncSession, key_id: str) -> None:
        """Inside a push's inserting transaction: the signer is trusted *now* (a key untrusted
        on another replica after this one's cached read is refused here, not 2 s later)."""
        if key_id in self.from_files.keys:
            return
        row = (
            await s.execute(
                select(TrustedPublisherKey)
                .where(
                    TrustedPublisherKey.key_id == key_id,
                    TrustedPublisherKey.removed_at.is_(None),
                )
                .with_for_update(read=True)
            )
        ).scalar_one_or_none()
        if row is None:
            raise Unprocessable(f"the bundle's signer {key_id} is no longer trusted")

    async def list(self) -> list[TrustedKeyInfo]:
        out = [
            TrustedKeyInfo(key_id=kid, name="(file)", source="file", added_by="", added_at="")
            for kid in sorted(self._file_key_ids())
        ]
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(TrustedPublisherKey)
                    .where(TrustedPublisherKey.removed_at.is_(None))
                    .order_by(TrustedPublisherKey.added_at)
                )
            ).scalars()
            out += [
                TrustedKeyInfo(
                    key_id=r.key_id,
                    name=r.name,
                    source="api",
                    added_by=r.added_by,
                    added_at=iso(r.added_at),
                )
                for r in rows
            ]
        return out

    async def trust(self, pem: str, name: str, actor: str) -> tuple[TrustedKeyInfo, bool]:
        """Trust a public key (idempotent: the same key again is a no-op, ``created`` False)."""
        check_name(name[:80], "key name")
        if len(pem.encode()) > MAX_PEM_BYTES:
            raise InputError(f"public_key is over {MAX_PEM_BYTES} bytes")
        if "PRIVATE KEY" in pem:
            raise InputError(
                "public_key holds a PRIVATE KEY: send the .pub file — and treat that private key "
                "as exposed (it left its host)"
            )
        key = public_key_from_pem(pem.encode(), source="public_key")
        kid = key_id_of(key)
        canonical = public_pem(key).decode()
        if kid in self._file_key_ids():
            return await self._info(kid), False
        created = await retry_integrity(lambda: self._trust_row(kid, canonical, name, actor))
        self._generation += 1
        self._cached = None
        return await self._info(kid), created

    async def _trust_row(self, kid: str, pem: str, name: str, actor: str) -> bool:
        """One attempt (a concurrent first trust of the same key on another replica makes the
        insert lose a unique race: retried, it finds the row)."""
        async with self.db.transaction() as s:
            row = await s.get(TrustedPublisherKey, kid, with_for_update=True)
            if row is not None and row.removed_at is None:
                return False
            if row is None:
                s.add(TrustedPublisherKey(key_id=kid, public_pem=pem, name=name, added_by=actor))
            else:  # trusted again after an untrust (the audit log keeps the history)
                row.public_pem, row.name, row.added_by = pem, name, actor
                row.added_at, row.removed_at, row.removed_by = utcnow(), None, None
            await s.flush()
            self.audit.record(s, actor, "key.trust", kid, detail=name)
        return True

    async def untrust(self, key_id: str, actor: str) -> TrustedKeyInfo:
        if key_id in self._file_key_ids():
            raise ConflictError(
                f"{key_id} is trusted by a file in {self.files_dir}: remove the file and restart"
            )
        async with self.db.transaction() as s:
            row = await s.get(TrustedPublisherKey, key_id, with_for_update=True)
            if row is None or row.removed_at is not None:
                raise NotFoundError(f"no trusted key {key_id!r}")
            row.removed_at, row.removed_by = utcnow(), actor
            await s.flush()
            self.audit.record(s, actor, "key.untrust", key_id, detail=row.name)
            info = _info(row)
        self._generation += 1
        self._cached = None
        return info

    async def _info(self, key_id: str) -> TrustedKeyInfo:
        return next(k for k in await self.list() if k.key_id == key_id)


def _info(row: TrustedPublisherKey) -> TrustedKeyInfo:
    return TrustedKeyInfo(
        key_id=row.key_id,
        name=row.name,
        source="api",
        added_by=row.added_by,
        added_at=iso(row.added_at),
        removed_at=iso(row.removed_at) if row.removed_at else None,
    )

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

from artifacts.errors import ConflictError, InputError, NotFoundError
from artifacts.names import check_name
from artifacts.signing import TrustedKeys, key_id_of, public_key_from_pem, public_pem
from artifacts.wire import TrustedKeyInfo
from central.audit.service import AuditLog
from central.db import Database, iso, utcnow
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

    def _file_key_ids(self) -> set[str]:
        return set(self.from_files.keys)

    async def current(self) -> TrustedKeys:
        """The keys a pushed bundle may be signed by, now."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < TRUST_CACHE_S:
            return cached[1]
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
        self._cached = (time.monotonic(), trusted)
        return trusted

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
        check_name(name, "key name")
        if len(pem.encode()) > MAX_PEM_BYTES:
            raise InputError(f"public_key is over {MAX_PEM_BYTES} bytes")
        key = public_key_from_pem(pem.encode(), source="public_key")
        kid = key_id_of(key)
        canonical = public_pem(key).decode()
        if kid in self._file_key_ids():
            return await self._info(kid), False
        async with self.db.transaction() as s:
            row = await s.get(TrustedPublisherKey, kid, with_for_update=True)
            if row is not None and row.removed_at is None:
                return _info(row), False
            if row is None:
                row = TrustedPublisherKey(
                    key_id=kid, public_pem=canonical, name=name, added_by=actor
                )
                s.add(row)
            else:  # trusted again after an untrust
                row.public_pem, row.name, row.added_by = canonical, name, actor
                row.added_at, row.removed_at, row.removed_by = utcnow(), None, None
            await s.flush()
            self.audit.record(s, actor, "key.trust", kid, detail=name)
            info = _info(row)
        self._cached = None
        return info, True

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

"""Wires the parts of the central service together and owns their lifecycle."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import text

from artifacts import atomic
from artifacts.signing import PUBLIC_KEY_FILE, TrustedKeys, generate_keypair, load_signing_key
from central.blobs import LocalBlobStore
from central.config import CentralConfig
from central.db.session import Database, migrate
from central.registry import Registry

log = logging.getLogger("shipyard.central")

ADMIN_TOKEN_FILE = "admin.token"


class Service:
    def __init__(self, config: CentralConfig) -> None:
        self.config = config
        self.home = config.home_path
        self.db: Database | None = None  # type: ignore[assignment]
        self.registry: Registry | None = None  # type: ignore[assignment]
        self.builds = None
        self.fleet = None
        self.admin_token_path: Path | None = None

    async def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        self.db = Database(self.config.db_url)
        await migrate(self.db.engine)
        blobs = LocalBlobStore(self.config.blobs_path)
        self.trusted = self._trusted_keys()
        self.registry = Registry(self.db, blobs, self.trusted)
        await self._ensure_admin_token()
        from central.builds import BuildService
        from central.fleet import Fleet

        self.builds = BuildService(self)
        self.fleet = Fleet(self.db)
        await self.builds.start()

    async def stop(self) -> None:
        if self.builds is not None:
            await self.builds.stop()
        if self.db is not None:
            await self.db.close()

    def _trusted_keys(self) -> TrustedKeys:
        """Publisher keys this registry accepts: ``home/trusted_keys/*.pub`` plus its own build
        key (created on first start; the in-process build worker signs with it)."""
        keys_dir = self.config.keys_path
        if not (keys_dir / "publisher.key").exists():
            generate_keypair(keys_dir)
        self.signing_key = load_signing_key(keys_dir / "publisher.key")
        trusted_dir = self.config.trusted_keys_path
        trusted_dir.mkdir(parents=True, exist_ok=True)
        own = trusted_dir / "central-build.pub"
        if not own.exists():
            atomic.write_bytes(own, (keys_dir / PUBLIC_KEY_FILE).read_bytes())
        return TrustedKeys.from_paths([trusted_dir])

    async def _ensure_admin_token(self) -> None:
        assert self.registry is not None
        path = self.home / ADMIN_TOKEN_FILE
        self.admin_token_path = path
        if await self.registry.token_count() == 0:
            token = await self.registry.create_token("admin", ["admin"], actor="first-start")
            atomic.write_bytes(path, (token + "\n").encode(), mode=0o600)
            log.warning("first start: created an admin token in %s (keep it secret)", path)

    async def ready(self) -> tuple[bool, str]:
        try:
            assert self.db is not None
            async with self.db.session() as s:
                await s.execute(text("SELECT 1"))
            return True, "ok"
        except Exception as exc:  # readiness reports, never raises
            return False, f"database unreachable: {exc}"

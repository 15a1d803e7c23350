"""Builds the feature services once, wires their collaborators explicitly, owns the lifecycle.

The app injects each service into the routes that need it (litestar dependencies); nothing
reaches another feature through this object.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from artifacts import atomic
from central.audit.service import AuditLog
from central.auth.service import TokenService
from central.blobs.service import BlobService
from central.blobs.store import blob_store_for
from central.builds.finalize import Finalizer
from central.builds.index_jobs import IndexService
from central.builds.leases import LeaseService
from central.builds.local_workers import LocalWorkers
from central.builds.reaper import Reaper
from central.builds.service import BuildService
from central.builds.signal import JobsChanged
from central.catalogs.queue import CentralQueue
from central.catalogs.service import CatalogService
from central.channels.service import ChannelService
from central.db import Database, migrate
from central.fleet.service import FleetService
from central.keys.service import KeyTrust
from central.registry.service import RegistryService
from central.settings import CentralConfig
from central.tuf.repository import TufRepository
from central.tuf.shared import SharedTuf
from central.workers.service import WorkerService

log = logging.getLogger("shipyard.central")

ADMIN_TOKEN_FILE = "admin.token"


class Services:
    def __init__(self, config: CentralConfig) -> None:
        config.home_path.mkdir(parents=True, exist_ok=True)
        os.chmod(config.home_path, 0o700)
        self.config = config
        self.db = Database(config.db_url)
        self.audit = AuditLog(self.db)
        # Publisher keys: home/trusted_keys/*.pub plus those trusted at run time (database).
        # Central itself signs nothing: built bundles are signed by the enrolled workers' keys.
        self.key_trust = KeyTrust(self.db, self.audit, config.trusted_keys_path)
        self.tokens = TokenService(self.db, self.audit)
        self.blobs = BlobService(self.db, blob_store_for(config), self.audit)
        self.registry = RegistryService(
            self.db, self.blobs, self.key_trust.current, self.audit, self.key_trust.still_trusted
        )
        self.tuf = SharedTuf(
            self.db,
            TufRepository(
                config.tuf_path,
                offline_keys=Path(config.tuf_offline_keys) if config.tuf_offline_keys else None,
                online_keys=Path(config.tuf_online_keys) if config.tuf_online_keys else None,
                timestamp_expiry_s=config.tuf_timestamp_expiry_s,
            ),
        )
        self.channels = ChannelService(self.db, self.audit, self.tuf)
        self.finalizer = Finalizer(self.db, self.channels, self.audit)
        self.workers = WorkerService(
            self.db, self.tokens, self.channels, self.audit, self.finalizer
        )
        self.fleet = FleetService(
            self.db, self.audit, config.fleet_max_nodes_per_token, claims=config.fleet_claims
        )
        jobs_changed = JobsChanged()
        self.builds = BuildService(
            self.db,
            self.blobs,
            self.registry,
            self.finalizer,
            jobs_changed,
            config,
        )
        self.indexes = IndexService(self.builds, self.blobs)
        self.leases = LeaseService(
            self.db, self.blobs, self.registry, self.workers, self.finalizer, jobs_changed, config
        )
        self.reaper = Reaper(self.db, self.leases, self.finalizer, config.worker_deadline_s)
        self.local_workers = LocalWorkers(config, self.workers)
        self.catalogs = CatalogService(
            self.db,
            self.blobs,
            self.builds,
            self.channels,
            self.audit,
            CentralQueue(config.nats_url) if config.nats_url else None,
        )
        self.channels.on_promote.append(self.catalogs.on_promote)

    async def start(self) -> None:
        await migrate(self.db.engine)
        await self._ensure_admin_token()
        await self.tuf.start()
        await self.channels.publish_all()
        self.reaper.start()
        self.catalogs.start()
        self._tuf_task = asyncio.create_task(self._keep_metadata_fresh(), name="tuf-timestamp")
        await self.local_workers.start()

    async def _keep_metadata_fresh(self) -> None:
        """Re-sign the timestamp (and online roles near expiry) four times per expiry period."""
        interval = self.config.tuf_refresh_s or max(1.0, self.config.tuf_timestamp_expiry_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tuf.refresh()
            except Exception:  # keep trying; edges report stale metadata meanwhile
                log.exception("refreshing TUF metadata")

    async def stop(self) -> None:
        if getattr(self, "_tuf_task", None) is not None:
            self._tuf_task.cancel()
        await self.reaper.stop()
        await self.catalogs.stop()
        await self.local_workers.stop()
        await self.blobs.store.close()
        await self.db.close()

    async def _ensure_admin_token(self) -> None:
        if await self.tokens.count() == 0:
            token = await self.tokens.create("admin", ["admin"], actor="first-start")
            path = self.config.home_path / ADMIN_TOKEN_FILE
            atomic.write_bytes(path, (token + "\n").encode(), mode=0o600)
            log.warning("first start: created an admin token in %s (keep it secret)", path)

    def providers(self) -> dict[str, object]:
        """What routes may ask for, by parameter name."""
        return {
            "config": self.config,
            "audit_log": self.audit,
            "tokens": self.tokens,
            "blobs": self.blobs,
            "registry": self.registry,
            "channels": self.channels,
            "builds": self.builds,
            "indexes": self.indexes,
            "catalog_service": self.catalogs,
            "leases": self.leases,
            "fleet": self.fleet,
            "workers": self.workers,
            "tuf": self.tuf,
            "db": self.db,
            "key_trust": self.key_trust,
        }

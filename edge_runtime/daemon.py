"""The edge daemon: probe once, then run one :class:`ModelService` per configured model."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import msgspec

from artifacts.client import RegistryClient
from artifacts.errors import InputError
from artifacts.probe import probe_node
from artifacts.signing import TrustedKeys
from edge_runtime.config import EdgeConfig
from edge_runtime.metrics import Metrics
from edge_runtime.runtime import ModelService
from edge_runtime.sync import BundleCache, Syncer

log = logging.getLogger("shipyard.edge")


class EdgeDaemon:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.started_at = time.time()
        keys = [Path(k).expanduser() for k in config.registry.trusted_keys]
        if not keys:
            raise InputError(
                "[registry] trusted_keys is empty: the edge never loads a bundle it cannot verify"
            )
        self.trusted = TrustedKeys.from_paths(keys)
        self.caps = probe_node()
        self.metrics = Metrics()
        self.client = RegistryClient(
            config.registry.url, config.token(), timeout=config.registry.timeout_s
        )
        self.cache = BundleCache(config.cache_dir)
        syncer = Syncer(self.client, self.cache, self.caps, config.backends.policy(), self.trusted)
        self.models = {
            m.name: ModelService(m, config, syncer, self.cache, self.trusted, self.metrics)
            for m in config.models
        }
        self.node = config.server.node_name or socket.gethostname()

    async def start(self) -> None:
        log.info("edge %s: %s, %s", self.node, self.caps.cpu_model, ", ".join(self.caps.cpu_isa))
        for svc in self.models.values():
            await svc.start()

    async def stop(self) -> None:
        for svc in self.models.values():
            await svc.stop()
        self.client.close()

    @property
    def ready(self) -> bool:
        return all(s.state == "ready" for s in self.models.values())

    def status(self) -> dict:
        return {
            "node": self.node,
            "ready": self.ready,
            "uptime_s": round(time.time() - self.started_at, 1),
            "registry": self.config.registry.url,
            "capabilities": msgspec.to_builtins(self.caps),
            "policy": msgspec.to_builtins(self.config.backends.policy()),
            "models": [s.status() for s in self.models.values()],
        }

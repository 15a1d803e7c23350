"""The edge node's lifecycle: probe once, then run one :class:`ModelService` per configured
model; heartbeat to central's fleet view; report status."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from pathlib import Path

import anyio
import msgspec
import numpy as np
import stamina

from artifacts.cli.procs import rss_mb
from artifacts.client import RegistryClient
from artifacts.errors import InputError
from artifacts.probe import probe_node
from artifacts.sdnotify import Notifier
from artifacts.signing import TrustedKeys
from artifacts.states import EventKind
from artifacts.targets import SelectionPolicy
from artifacts.tracing import Tracing
from artifacts.wire import NodeModel, NodeReport
from edge_runtime import memory
from edge_runtime.batching.queue import Batcher
from edge_runtime.channel_metadata import ChannelMetadata
from edge_runtime.config import EdgeConfig
from edge_runtime.embedq.bulk_models import BulkModels
from edge_runtime.embedq.worker import EmbedWorker
from edge_runtime.http.api_keys import KeyRing
from edge_runtime.metrics import Metrics
from edge_runtime.model_service import ModelService
from edge_runtime.search.service import IndexService
from edge_runtime.sync import BundleCache, Syncer

log = logging.getLogger("shipyard.edge")


def _run_pinned(pinned: object, batch: list) -> np.ndarray:
    return pinned.run(batch)  # type: ignore[attr-defined]


class EdgeNode:
    def __init__(self, config: EdgeConfig, tracing: Tracing | None = None) -> None:
        memory.limit_arenas()
        self.config = config
        t = config.tracing
        self.tracing = tracing or Tracing(
            t.service_name, endpoint=t.otlp_endpoint, sample_ratio=t.sample_ratio
        )
        self.started_at = time.time()
        keys = [Path(k).expanduser() for k in config.registry.trusted_keys]
        if not keys:
            raise InputError(
                "[registry] trusted_keys is empty: the edge never loads a bundle it cannot verify"
            )
        self.trusted = TrustedKeys.from_paths(keys)
        self.caps = probe_node(full=False)
        self.metrics = Metrics()
        self.client = RegistryClient(
            config.registry.url,
            config.token(),
            timeout=config.registry.timeout_s,
            blob_mirror=config.registry.blob_mirror,
            mirror_repository=config.registry.blob_mirror_repository,
        )
        self.cache = BundleCache(config.cache_dir)
        self.metadata = (
            ChannelMetadata(
                config.registry.url,
                config.token(),
                Path(config.registry.tuf_root).expanduser(),
                config.cache_dir / "tuf",
                config.registry.timeout_s,
            )
            if config.registry.tuf_root
            else None
        )
        if self.metadata is not None:
            started, metadata = time.time(), self.metadata
            self.metrics.metadata_age.set_function(
                lambda: time.time() - (metadata.refreshed_at or started)
            )
        syncer = Syncer(
            self.client,
            self.cache,
            self.caps,
            config.backends.policy(),
            self.trusted,
            self.metadata,
        )
        self.models = {
            m.name: ModelService(m, config, syncer, self.cache, self.trusted, self.metrics)
            for m in config.models
        }
        # Catalog indexes: synced like models (own policy: the model allow-list is for models).
        index_syncer = Syncer(
            self.client, self.cache, self.caps, SelectionPolicy(), self.trusted, self.metadata
        )
        self.indexes = {}
        for ix in config.indexes:
            svc = self.models[ix.model]
            self.indexes[ix.name] = IndexService(
                ix, config, index_syncer, self.cache, self.trusted, svc.serving_version
            )
            svc.swap_gates.append(self.indexes[ix.name].swap_gate)
            svc.swap_hold_s = max(svc.swap_hold_s, ix.hold_swap_s)
        self.node = config.server.node_name or socket.gethostname()
        keys_file = config.server.api_keys_file
        self.api_keys = KeyRing(Path(keys_file).expanduser() if keys_file else None)
        self.notifier = Notifier()  # systemd's notify socket, when run as a Type=notify unit
        self._bulk_batchers: dict[str, Batcher] = {}
        self.embed_worker = (
            EmbedWorker(
                config.embed_worker,
                self.client,
                BulkModels(
                    Syncer(
                        self.client,
                        self.cache,
                        self.caps,
                        config.backends.policy(),
                        self.trusted,
                        None,  # jobs name a version; its bundles are verified by signature
                    ),
                    self.trusted,
                    config.backends.settings(),
                ),
                self._batcher_for,
                config.batching.latency_target_ms,
                self.node,
            )
            if config.embed_worker.enabled
            else None
        )

    def _batcher_for(self, model: str) -> Batcher:
        """The serving model's batcher (bulk waits behind its traffic), else one of its own."""
        if model in self.models:
            return self.models[model].batcher
        if model not in self._bulk_batchers:
            b = Batcher(
                f"bulk-{model}",
                self.config.batching,
                _run_pinned,
                self.metrics,
                on_idle=memory.trim,
            )
            b.start()
            self._bulk_batchers[model] = b
        return self._bulk_batchers[model]

    async def start(self) -> None:
        log.info("edge %s: %s, %s", self.node, self.caps.cpu_model, ", ".join(self.caps.cpu_isa))
        stamina.instrumentation.set_on_retry_hooks(
            []
        )  # the sync loop reports its own failures, once each
        try:  # only the main thread may; a node run inside a test thread reloads by call
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (RuntimeError, ValueError, NotImplementedError):
            log.debug("SIGHUP reload not available in this thread")
        for svc in self.models.values():
            await svc.start()
        for ix in self.indexes.values():
            await ix.start()
        self._heartbeat = asyncio.create_task(self._heartbeat_forever(), name="fleet-heartbeat")
        if self.embed_worker is not None:
            await self.embed_worker.start()

    def reload(self) -> None:
        """SIGHUP (systemd's ExecReload): what is safe to change in a running node — the API
        keys. Everything else in edge.toml takes a restart (a node never half-applies it)."""
        if self.api_keys.enabled:
            self.api_keys.reload()
        log.info(
            "SIGHUP: API keys %s; other settings apply on restart",
            "reloaded" if self.api_keys.enabled else "not configured",
        )

    def describe(self) -> str:
        """One line for systemd's STATUS=: what each model serves, or why not yet."""
        parts = []
        for s in self.models.values():
            if s.serving is not None:
                parts.append(f"{s.name} v{s.serving.version} {s.serving.target}")
            else:
                parts.append(f"{s.name}: {s.public_reason}")
        return ("serving " if self.ready else "starting: ") + "; ".join(parts)

    async def stop(self) -> None:
        if getattr(self, "_heartbeat", None) is not None:
            self._heartbeat.cancel()
        if self.embed_worker is not None:
            await self.embed_worker.stop()
        for b in self._bulk_batchers.values():
            await b.stop()
        for ix in self.indexes.values():
            await ix.stop()
        for svc in self.models.values():
            await svc.stop()
        self.client.close()
        self.tracing.shutdown()

    def report(self) -> NodeReport:
        models = []
        for s in self.models.values():
            events = list(s.events)
            models.append(
                NodeModel(
                    model=s.name,
                    channel=s.channel,
                    state=s.state,
                    reason=s.reason[:1000],  # a report is bounded (central: 64 KiB)
                    version=s.serving.version if s.serving else None,
                    target=s.serving.target if s.serving else None,
                    fallbacks=sum(e.kind is EventKind.FALLBACK for e in events),
                    errors=sum(
                        e.kind.is_problem and e.kind is not EventKind.FALLBACK for e in events
                    ),
                    p50_ms=s.batch_p50_ms(),
                )
            )
        return NodeReport(
            node=self.node, arch=self.caps.arch, capabilities=self.caps, models=models
        )

    async def _heartbeat_forever(self) -> None:
        """Tell central what this node serves (fleet view); best effort, never fatal."""
        interval = max(5.0, self.config.registry.poll_interval_s)
        sent_sig, sent_at = None, 0.0
        last_error = ""
        while True:
            report = self.report()
            sig = [(m.state, m.version, m.target, m.fallbacks) for m in report.models]
            due = time.monotonic() - sent_at >= interval
            if due or (sig != sent_sig and not last_error):  # on change, else periodically
                try:
                    await anyio.to_thread.run_sync(self.client.heartbeat_node, report)
                    sent_sig, sent_at = sig, time.monotonic()
                except Exception as exc:
                    # a refusal (another token reports this node, a quota) does not fix
                    # itself: say so once per new reason; repeats at debug
                    level = logging.WARNING if str(exc) != last_error else logging.DEBUG
                    log.log(level, "fleet heartbeat failed: %s", exc)
                    # retried after the interval, not every second, whatever changes here
                    # meanwhile (each try costs central a transaction and an audit row)
                    last_error, sent_sig, sent_at = str(exc), sig, time.monotonic()
                else:
                    last_error = ""
            await asyncio.sleep(1.0)

    @property
    def ready(self) -> bool:
        return all(s.ready for s in self.models.values())

    def status(self) -> dict:
        return {
            "node": self.node,
            "ready": self.ready,
            "uptime_s": round(time.time() - self.started_at, 1),
            "rss_mb": round(rss_mb(), 1),
            "registry": self.config.registry.url,
            "channel_metadata": "tuf"
            if self.metadata is not None
            else "registry answers (no tuf_root)",
            "capabilities": msgspec.to_builtins(self.caps),
            "policy": msgspec.to_builtins(self.config.backends.policy()),
            "models": [s.status() for s in self.models.values()],
            "indexes": [ix.status() for ix in self.indexes.values()],
            "embed_worker": self.embed_worker.status() if self.embed_worker else None,
        }

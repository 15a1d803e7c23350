"""Prometheus metrics of one edge process (its own registry: no global state)."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.0,
    2.0,
    5.0,
    10.0,
)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._on_render: list[weakref.WeakMethod] = []
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU seconds, open fds
        self.metadata_age = Gauge(
            "shipyard_metadata_age_seconds",
            "Seconds since the signed channel (TUF) metadata last refreshed; NaN without TUF",
            registry=r,
        )
        self.metadata_age.set_function(lambda: math.nan)
        self.requests = Counter(
            "shipyard_requests_total",
            "Requests by outcome",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "shipyard_request_seconds",
            "Request latency",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "shipyard_queue_seconds",
            "Time items waited for a batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "shipyard_batch_size", "Items per batch", ["model"], buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "shipyard_batch_tokens",
            "Padded tokens per batch",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "shipyard_inference_seconds",
            "Backend time per batch",
            ["model", "target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter(
            "shipyard_cache_hits_total", "Result-cache hits", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "shipyard_cache_misses_total", "Result-cache misses", ["model"], registry=r
        )
        self.cache_evictions = Gauge(
            "shipyard_cache_evictions", "Result-cache evictions so far", ["model"], registry=r
        )
        self.cache_bytes = Gauge("shipyard_cache_bytes", "Result-cache size", ["model"], registry=r)
        self.active = Gauge(
            "shipyard_active_backend",
            "1 for the backend serving a model",
            ["model", "target", "version"],
            registry=r,
        )
        self.fallbacks = Counter(
            "shipyard_fallback_events_total",
            "Backend fallbacks",
            ["model", "from_target", "to_target", "reason"],
            registry=r,
        )
        self.rejected = Counter(
            "shipyard_rejected_total", "429 Too Many Requests", ["model"], registry=r
        )
        self.expired = Counter(
            "shipyard_deadline_exceeded_total", "504 deadline exceeded", ["model"], registry=r
        )
        self.queued_tokens = Gauge(
            "shipyard_queued_tokens", "Tokens waiting for a batch", ["model"], registry=r
        )
        self.admission_limit = Gauge(
            "shipyard_admission_limit_tokens", "Adaptive admission limit", ["model"], registry=r
        )
        self.api_keys = Counter(
            "shipyard_api_key_requests_total",
            "Requests by API key and what the key check decided",
            ["key", "outcome"],
            registry=r,
        )
        self.sync_errors = Counter(
            "shipyard_sync_errors_total",
            "Failed sync rounds with the registry, by kind",
            ["model", "kind"],
            registry=r,
        )
        self.degraded = Gauge(
            "shipyard_model_degraded",
            "1 while a model serves an older version because the newest failed here",
            ["model"],
            registry=r,
        )
        self.ready = Gauge(
            "shipyard_model_ready", "1 when a model is serving", ["model"], registry=r
        )

    def of_batcher(self, model: str) -> BatcherMetrics:
        """The batcher's series for one model, looked up once (a ``labels()`` call takes a lock
        and a dict look-up: several per request on the hot path)."""
        return BatcherMetrics(
            rejected=self.rejected.labels(model),
            expired=self.expired.labels(model),
            queued_tokens=self.queued_tokens.labels(model),
            admission_limit=self.admission_limit.labels(model),
            batch_size=self.batch_size.labels(model),
            batch_tokens=self.batch_tokens.labels(model),
            queue=self.queue.labels(model),
        )

    def on_render(self, flush: Callable[[], object]) -> None:
        """Call the bound method ``flush`` before each :meth:`render` (on the event loop): work
        put off past answers lands in the scrape. Held weakly (a replaced batcher goes)."""
        self._on_render.append(weakref.WeakMethod(flush))  # type: ignore[arg-type]

    def render(self) -> bytes:
        live = []
        for ref in self._on_render:
            flush = ref()
            if flush is not None:
                flush()
                live.append(ref)
        self._on_render = live
        return generate_latest(self.registry)


@dataclass(frozen=True)
class BatcherMetrics:
    """One model's batcher series (prometheus children)."""

    rejected: Any
    expired: Any
    queued_tokens: Any
    admission_limit: Any
    batch_size: Any
    batch_tokens: Any
    queue: Any

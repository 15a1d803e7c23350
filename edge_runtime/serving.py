"""The inference path every API shares: model lookup, result cache, tokenisation off the
event loop, the batcher, usage accounting. Framework-free (the HTTP layer only translates)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import numpy as np

from artifacts.textproc import Item, softmax
from edge_runtime.errors import BadRequest, NotReady, UnknownModel
from edge_runtime.result_cache import normalise
from edge_runtime.runtime import ModelService


@dataclass
class Usage:
    prompt_tokens: int = 0
    truncated: int = 0
    cached: int = 0


@dataclass
class Result:
    outputs: np.ndarray
    usage: Usage
    service: ModelService
    version: int
    target: str


class Inference:
    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.max_inputs = daemon.config.batching.max_inputs_per_request
        self.default_timeout_ms = daemon.config.server.request_timeout_ms

    def service(self, name: str | None, task: str) -> ModelService:
        services = self.daemon.models
        if name is None or name == "":
            matching = [
                s
                for s in services.values()
                if s.serving is None or s.serving.manifest.model.task == task
            ]
            if len(matching) != 1:
                raise BadRequest(
                    f"say which model: this node serves {', '.join(services) or 'none'}"
                )
            svc = matching[0]
        else:
            svc = services.get(name)
            if svc is None:
                raise UnknownModel(
                    f"model {name!r} is not served here; served: {', '.join(services) or 'none'}"
                )
        if svc.serving is None:
            raise NotReady(f"model {svc.name} is not ready: {svc.reason}")
        actual = svc.serving.manifest.model.task
        if actual != task:
            raise BadRequest(
                f"model {svc.name} is a {actual} model; this endpoint serves {task} models"
            )
        return svc

    def deadline(self, timeout_ms: str | None) -> float:
        ms = self.default_timeout_ms
        if timeout_ms:
            try:
                ms = min(float(timeout_ms), 10 * self.default_timeout_ms)
            except ValueError:
                raise BadRequest(
                    f"X-Request-Timeout-Ms must be a number, got {timeout_ms!r}"
                ) from None
            if ms <= 0:
                raise BadRequest("X-Request-Timeout-Ms must be positive")
        return time.monotonic() + ms / 1000

    def check_count(self, n: int) -> None:
        if n == 0:
            raise BadRequest("input is empty")
        if n > self.max_inputs:
            raise BadRequest(
                f"{n} inputs exceed the limit of {self.max_inputs} per request; split the request"
            )

    async def run(self, svc: ModelService, items: list[Item], deadline: float) -> Result:
        model = svc.serving
        if model is None:
            raise NotReady(f"model {svc.name} is not ready: {svc.reason}")
        version, task = model.version, model.manifest.model.task
        cache = svc.cache_results
        metrics = self.daemon.metrics
        usage = Usage()
        outputs: list[np.ndarray | None] = [None] * len(items)
        keys = [
            (
                svc.name,
                version,
                task,
                normalise(it) if isinstance(it, str) else (normalise(it[0]), normalise(it[1])),
            )
            for it in items
        ]
        misses = []
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is None:
                misses.append(i)
            else:
                outputs[i] = hit[0]
                usage.prompt_tokens += hit[1]
                usage.truncated += hit[2]
                usage.cached += 1
        if cache.enabled:
            metrics.cache_hits.labels(svc.name).inc(usage.cached)
            metrics.cache_misses.labels(svc.name).inc(len(misses))
        if misses:
            svc.batcher.tokenising += 1
            try:
                miss_items = [items[i] for i in misses]
                encoded = (
                    model.encoder.encode(miss_items)
                    if len(miss_items) <= 2  # a thread hop costs more than encoding one query
                    else await anyio.to_thread.run_sync(model.encoder.encode, miss_items)
                )
            finally:
                svc.batcher.tokenising -= 1
            results = await svc.batcher.submit(encoded, deadline)
            for i, enc, out in zip(misses, encoded, results, strict=True):
                outputs[i] = out
                usage.prompt_tokens += len(enc)
                usage.truncated += int(enc.truncated)
                cache.put(keys[i], (out, len(enc), int(enc.truncated)))
            metrics.cache_evictions.labels(svc.name).set(cache.stats.evictions)
            metrics.cache_bytes.labels(svc.name).set(cache.bytes)
        serving = svc.serving
        return Result(
            outputs=np.stack(outputs),
            usage=usage,
            service=svc,
            version=version,
            target=serving.target if serving else model.target,
        )


def probabilities(logits: np.ndarray) -> np.ndarray:
    return softmax(logits.astype(np.float64)).astype(np.float32)

"""The inference path every API shares: model lookup, validation, result cache, tokenisation
off the event loop, the batcher, post-processing into typed results. Framework-free."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
import numpy as np

from artifacts.errors import NotReady
from artifacts.textproc import Item
from edge_runtime.config import EdgeConfig
from edge_runtime.errors import BadRequest, UnknownModel
from edge_runtime.inference.result_cache import normalise
from edge_runtime.inference.results import (
    Classified,
    Embeddings,
    Reranked,
    Usage,
    predict,
    probabilities,
    rank,
)
from edge_runtime.metrics import Metrics
from edge_runtime.model_service import ModelService

INLINE_ENCODE = 2  # up to this many texts are tokenised on the loop: a thread hop costs more


@dataclass
class Raw:
    """Model outputs for one request's items, in request order."""

    outputs: np.ndarray
    usage: Usage
    version: int
    target: str


def check_texts(value: object, field: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(
            f"{field} must be a string or a list of strings (token-id input is not supported)"
        )
    for i, v in enumerate(value):
        if not v.strip():
            raise BadRequest(f"{field}[{i}] is empty")
    return value


class Inference:
    def __init__(
        self, models: Mapping[str, ModelService], config: EdgeConfig, metrics: Metrics
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.max_inputs = config.batching.max_inputs_per_request
        self.default_timeout_ms = config.server.request_timeout_ms

    # ---- request checks --------------------------------------------------------------------

    def service(self, name: str | None, task: str) -> ModelService:
        if not name:
            matching = [
                s
                for s in self.models.values()
                if s.serving is None or s.serving.manifest.model.task == task
            ]
            if len(matching) != 1:
                raise BadRequest(
                    f"say which model: this node serves {', '.join(self.models) or 'none'}"
                )
            svc = matching[0]
        else:
            found = self.models.get(name)
            if found is None:
                raise UnknownModel(
                    f"model {name!r} is not served here; served: {', '.join(self.models) or 'none'}"
                )
            svc = found
        if svc.serving is None:
            raise NotReady(f"model {svc.name} is not ready: {svc.reason}")
        actual = svc.serving.manifest.model.task
        if actual != task:
            raise BadRequest(
                f"model {svc.name} is a {actual} model; this endpoint serves {task} models"
            )
        return svc

    def deadline(self, timeout_ms: str | None) -> float:
        ms = float(self.default_timeout_ms)
        if timeout_ms:
            try:
                ms = min(float(timeout_ms), 10.0 * self.default_timeout_ms)
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

    # ---- the three tasks -------------------------------------------------------------------

    async def embed(
        self, model: str | None, texts: object, deadline: float, *, dimensions: int | None = None
    ) -> Embeddings:
        items = check_texts(texts, "input")
        self.check_count(len(items))
        svc = self.service(model, "embedding")
        dim = svc.serving.manifest.io.dim if svc.serving else 0
        if dimensions is not None and dimensions != dim:
            raise BadRequest(f"dimensions must be {dim} for {svc.name} (it cannot be shortened)")
        raw = await self.run(svc, list(items), deadline)
        return Embeddings(
            svc.name, raw.version, raw.target, raw.usage, vectors=raw.outputs.astype(np.float32)
        )

    async def rerank(
        self,
        model: str | None,
        query: str,
        documents: object,
        deadline: float,
        *,
        top_n: int | None = None,
        raw_scores: bool = False,
    ) -> Reranked:
        if not isinstance(query, str) or not query.strip():
            raise BadRequest("query is empty")
        if documents is None:
            raise BadRequest("documents is required")
        docs = check_texts(documents, "documents")
        self.check_count(len(docs))
        if top_n is not None and top_n < 1:
            raise BadRequest("top_n must be >= 1")
        svc = self.service(model, "rerank")
        raw = await self.run(svc, [(query, d) for d in docs], deadline)
        logits = raw.outputs[:, 0].astype(np.float32)
        ranked = rank(logits, top_n=top_n, raw_scores=raw_scores)
        return Reranked(
            svc.name,
            raw.version,
            raw.target,
            raw.usage,
            documents=docs,
            logits=logits,
            ranked=ranked,
        )

    async def classify(
        self, model: str | None, texts: object, deadline: float, *, top_k: int | None = None
    ) -> Classified:
        items = check_texts(texts, "input")
        self.check_count(len(items))
        svc = self.service(model, "classify")
        labels = svc.serving.manifest.model.labels if svc.serving else []
        raw = await self.run(svc, list(items), deadline)
        probs = probabilities(raw.outputs)
        return Classified(
            svc.name,
            raw.version,
            raw.target,
            raw.usage,
            probabilities=probs,
            predictions=predict(probs, labels, top_k),
        )

    # ---- the shared path -------------------------------------------------------------------

    async def run(self, svc: ModelService, items: list[Item], deadline: float) -> Raw:
        model = svc.serving
        if model is None:
            raise NotReady(f"model {svc.name} is not ready: {svc.reason}")
        version, task = model.version, model.manifest.model.task
        cache = svc.cache_results
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
            self.metrics.cache_hits.labels(svc.name).inc(usage.cached)
            self.metrics.cache_misses.labels(svc.name).inc(len(misses))
        if misses:
            svc.batcher.tokenising += 1
            try:
                miss_items = [items[i] for i in misses]
                encoded = (
                    model.encoder.encode(miss_items)
                    if len(miss_items) <= INLINE_ENCODE
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
            self.metrics.cache_evictions.labels(svc.name).set(cache.stats.evictions)
            self.metrics.cache_bytes.labels(svc.name).set(cache.bytes)
        serving = svc.serving
        return Raw(
            outputs=np.stack(outputs),  # type: ignore[arg-type]
            usage=usage,
            version=version,
            target=serving.target if serving else model.target,
        )

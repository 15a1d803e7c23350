"""The inference path every API shares: model lookup, validation, result cache, tokenisation
off the event loop, the batcher, post-processing into typed results. Framework-free."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
import numpy as np

from artifacts.errors import NotReady, Overloaded, PayloadTooLarge
from artifacts.textproc import Item
from artifacts.tracing import Tracing
from edge_runtime.batching.queue import BatchTiming
from edge_runtime.config import EdgeConfig
from edge_runtime.errors import BadRequest, UnknownModel
from edge_runtime.inference.result_cache import text_key
from edge_runtime.inference.results import (
    Classified,
    Embeddings,
    Reranked,
    Usage,
    predict,
    probabilities,
    rank,
)
from edge_runtime.loaded_model import LoadedModel
from edge_runtime.metrics import Metrics
from edge_runtime.model_service import ModelService

_F32 = np.dtype(np.float32)
INLINE_ENCODE = 2  # up to this many texts are tokenised on the loop: a thread hop costs more
CHARS_PER_TOKEN_LIMIT = 32  # default per-input limit: far past any text max_length keeps


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
        self,
        models: Mapping[str, ModelService],
        config: EdgeConfig,
        metrics: Metrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.tracing = tracing or Tracing("shipyard-edge")
        self.max_inputs = config.batching.max_inputs_per_request
        self.default_timeout_ms = config.server.request_timeout_ms
        self.limits = config.limits

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
            raise NotReady(f"model {svc.name} is not ready ({svc.public_reason})")
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
                asked = float(timeout_ms)
            except ValueError:
                raise BadRequest(
                    f"X-Request-Timeout-Ms must be a number, got {timeout_ms!r}"
                ) from None
            if not math.isfinite(asked) or asked <= 0:  # NaN would disable the deadline
                raise BadRequest(
                    f"X-Request-Timeout-Ms must be a positive number of ms, got {timeout_ms!r}"
                )
            ms = min(asked, 10.0 * self.default_timeout_ms)
        return time.monotonic() + ms / 1000

    def check_size(self, svc: ModelService, texts: list[str], field: str) -> int:
        """Characters per input and per request within the limits; the request's total."""
        per_input = self.limits.max_chars_per_input
        if per_input <= 0 and svc.serving is not None:
            per_input = CHARS_PER_TOKEN_LIMIT * svc.serving.manifest.tokenizer.max_length
        total = 0
        for i, text in enumerate(texts):
            if per_input > 0 and len(text) > per_input:
                raise PayloadTooLarge(
                    f"{field}[{i}] has {len(text)} characters; the limit is {per_input} per "
                    f"input ({svc.name} reads at most "
                    f"{svc.serving.manifest.tokenizer.max_length if svc.serving else '?'} tokens)"
                )
            total += len(text)
        if total > self.limits.max_chars_per_request:
            raise PayloadTooLarge(
                f"the request holds {total} characters; the limit is "
                f"{self.limits.max_chars_per_request} per request — split it"
            )
        return total

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
        chars = self.check_size(svc, items, "input")
        dim = svc.serving.manifest.io.dim if svc.serving else 0
        if dimensions is not None and dimensions != dim:
            raise BadRequest(f"dimensions must be {dim} for {svc.name} (it cannot be shortened)")
        raw = await self.run(svc, list(items), deadline, chars)
        out = raw.outputs  # float32 from every backend: no conversion call on the c=1 path
        return Embeddings(
            svc.name,
            raw.version,
            raw.target,
            raw.usage,
            vectors=out if out.dtype is _F32 else out.astype(np.float32),
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
        self.check_size(svc, [query], "query")
        chars = self.check_size(svc, [query, *docs], "documents")
        raw = await self.run(svc, [(query, d) for d in docs], deadline, chars)
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
        chars = self.check_size(svc, items, "input")
        labels = svc.serving.manifest.model.labels if svc.serving else []
        raw = await self.run(svc, list(items), deadline, chars)
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

    async def run(
        self, svc: ModelService, items: list[Item], deadline: float, chars: int = 0
    ) -> Raw:
        """The request is pinned to the model serving when it arrives: its cache keys,
        tokeniser and every batch of its items use that version, and a swap waits for it."""
        model = svc.pin()
        try:
            return await self._run_pinned(svc, model, items, deadline, chars)
        finally:
            svc.unpin(model)

    async def _run_pinned(
        self, svc: ModelService, model: LoadedModel, items: list[Item], deadline: float, chars: int
    ) -> Raw:
        version, task = model.version, model.manifest.model.task
        cache = svc.cache_results
        usage = Usage()
        tracing = self.tracing.enabled
        if cache.enabled or tracing:
            outputs, keys, misses = self._lookup(svc, version, task, items, usage)
        else:  # the c=1 path with the cache off: no span to open, nothing to look up
            outputs, keys, misses = [None] * len(items), [], list(range(len(items)))
        if misses:
            todo = items if len(misses) == len(items) else [items[i] for i in misses]
            if tracing:
                with self.tracing.span("tokenize", **{"shipyard.items": len(misses)}) as span:
                    encoded = await self._tokenise(svc, model, todo, chars)
                    span.set_attribute("shipyard.tokens", sum(len(e) for e in encoded))
            else:
                encoded = await self._tokenise(svc, model, todo, chars)
            timings: list[BatchTiming] | None = [] if tracing else None
            enqueued = time.time_ns() if tracing else 0
            results = await svc.batcher.submit(encoded, deadline, model, timings)
            if timings:
                self._trace_batches(enqueued, timings, model)
            for i, enc, out in zip(misses, encoded, results, strict=True):
                outputs[i] = out
                usage.prompt_tokens += len(enc)
                usage.truncated += int(enc.truncated)
                if keys:
                    cache.put(keys[i], (out, len(enc), int(enc.truncated)))
            if keys:  # the cache changed
                self.metrics.cache_evictions.labels(svc.name).set(cache.stats.evictions)
                self.metrics.cache_bytes.labels(svc.name).set(cache.bytes)
        if len(outputs) > 1:
            stacked = np.stack(outputs)  # type: ignore[arg-type]
        else:  # never a view of a cached output; without a cache, this request's own row
            stacked = outputs[0][None].copy() if keys else outputs[0][None]  # type: ignore[index]
        return Raw(
            outputs=stacked,
            usage=usage,
            version=version,
            target=model.target,
        )

    def _lookup(
        self, svc: ModelService, version: int, task: str, items: list[Item], usage: Usage
    ) -> tuple[list[np.ndarray | None], list, list[int]]:
        """(outputs with the cached ones filled in, cache keys, indices of the misses), in a
        ``cache`` span; hits are counted into ``usage`` and the cache metrics."""
        cache = svc.cache_results
        outputs: list[np.ndarray | None] = [None] * len(items)
        keys = [(svc.name, version, task, text_key(it)) for it in items] if cache.enabled else []
        misses = []
        with self.tracing.span("cache", **{"shipyard.items": len(items)}) as span:
            for i, key in enumerate(keys):
                hit = cache.get(key)
                if hit is None:
                    misses.append(i)
                else:
                    outputs[i] = hit[0]
                    usage.prompt_tokens += hit[1]
                    usage.truncated += hit[2]
                    usage.cached += 1
            if span is not None:
                span.set_attributes(
                    {"shipyard.cache.enabled": cache.enabled, "shipyard.cache.hits": usage.cached}
                )
        if cache.enabled:
            self.metrics.cache_hits.labels(svc.name).inc(usage.cached)
            self.metrics.cache_misses.labels(svc.name).inc(len(misses))
        else:
            misses = list(range(len(items)))
        return outputs, keys, misses

    def _trace_batches(self, enqueued_ns: int, timings: list[BatchTiming], model) -> None:
        """The queue wait, then each batch that ran this request's items with its backend call
        (measured on the batcher; recorded here, in the request's trace)."""
        first = min(t.started_ns for t in timings)
        self.tracing.record("queue", enqueued_ns, first)
        for t in timings:
            batch = self.tracing.record(
                "batch",
                t.started_ns,
                t.ended_ns,
                **{"shipyard.batch.size": t.size, "shipyard.batch.padded_tokens": t.padded_tokens},
            )
            self.tracing.record(
                "inference",
                t.infer_start_ns,
                t.infer_end_ns,
                parent=batch,
                **{"shipyard.backend": model.target, "shipyard.model.version": model.version},
            )

    async def _tokenise(
        self, svc: ModelService, model: LoadedModel, items: list[Item], chars: int
    ) -> list:
        """Off the event loop (but for a couple of short texts), within the model's budget of
        characters being tokenised at once: past it, 429 before any work is done."""
        b = svc.batcher
        if b.tokenising_chars and b.tokenising_chars + chars > self.limits.max_tokenising_chars:
            self.metrics.rejected.labels(svc.name).inc()
            raise Overloaded(
                f"{svc.name} is tokenising {b.tokenising_chars} characters already (limit "
                f"{self.limits.max_tokenising_chars}); retry shortly",
                1.0,
            )
        b.tokenising += 1
        b.tokenising_chars += chars
        try:
            if len(items) <= INLINE_ENCODE and chars <= 4096:
                return model.encoder.encode(items)
            return await anyio.to_thread.run_sync(model.encoder.encode, items)
        finally:
            b.tokenising -= 1
            b.tokenising_chars -= chars

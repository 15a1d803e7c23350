"""``/v1/search``: embed the query with the serving model (result cache included), search the
catalog index built for *that* model version, optionally rerank the hits with a cross-encoder
on the same node. Framework-free, like :mod:`edge_runtime.inference.engine`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio

from edge_runtime.errors import BadRequest, UnknownModel
from edge_runtime.inference.engine import CHARS_PER_TOKEN_LIMIT, Inference
from edge_runtime.inference.results import Served
from edge_runtime.search.catalog_index import Hit
from edge_runtime.search.service import IndexMismatch, IndexService, lock_mismatch

MAX_TOP_K = 1000
MAX_RERANK = 256


@dataclass(frozen=True)
class RerankStage:
    model: str
    top_n: int = 50


@dataclass(frozen=True)
class SearchQuery:
    query: str
    top_k: int = 10
    model: str | None = None
    index: str | None = None
    filter: object = None
    rerank: RerankStage | None = None


@dataclass
class Searched(Served):
    index: str = ""
    index_version: int = 0
    embedded_with: str = ""  # the bundle target the catalog was embedded with
    hits: list[Hit] = field(default_factory=list)
    rerank_scores: list[float] | None = None
    reranked_by: str | None = None


class Searcher:
    def __init__(self, inference: Inference, indexes: Mapping[str, IndexService]) -> None:
        self.inference = inference
        self.indexes = indexes

    def _index(self, q: SearchQuery) -> IndexService:
        if q.index is not None:
            found = self.indexes.get(q.index)
            if found is None:
                raise UnknownModel(
                    f"index {q.index!r} is not served here; served: "
                    f"{', '.join(self.indexes) or 'none'}"
                )
            if q.model is not None and q.model != found.model:
                raise BadRequest(
                    f"index {q.index!r} holds vectors of {found.model!r}, not {q.model!r}"
                )
            return found
        matching = [ix for ix in self.indexes.values() if q.model in (None, ix.model)]
        if len(matching) != 1:
            raise BadRequest(
                "say which index: "
                + (
                    f"this node has {', '.join(self.indexes)}"
                    if self.indexes
                    else "this node has no [[indexes]] configured"
                )
            )
        return matching[0]

    @staticmethod
    def check(q: SearchQuery) -> None:
        if not isinstance(q.query, str) or not q.query.strip():
            raise BadRequest("query is empty")
        if not 1 <= q.top_k <= MAX_TOP_K:
            raise BadRequest(f"top_k must be between 1 and {MAX_TOP_K}")
        if q.rerank is not None:
            if not 1 <= q.rerank.top_n <= MAX_RERANK:
                raise BadRequest(f"rerank.top_n must be between 1 and {MAX_RERANK}")
            if q.top_k > q.rerank.top_n:
                raise BadRequest(
                    "top_k must be <= rerank.top_n (the reranked hits are the results)"
                )

    def _documents(self, reranker: str, hits: list[Hit]) -> list[str]:
        """Hit texts cut to what the reranker accepts per input and per request: a long
        catalog description is the catalog's business, not a reason to refuse the query."""
        svc = self.inference.service(reranker, "rerank")
        per_input = self.inference.limits.max_chars_per_input
        if per_input <= 0 and svc.serving is not None:
            per_input = CHARS_PER_TOKEN_LIMIT * svc.serving.manifest.tokenizer.max_length
        share = self.inference.limits.max_chars_per_request // (len(hits) + 2)
        cap = max(1, min(per_input or share, share))
        return [h.text[:cap] for h in hits]

    async def search(self, q: SearchQuery, deadline: float) -> Searched:
        self.check(q)
        ix = self._index(q)
        svc = self.inference.service(ix.model, "embedding")
        chars = self.inference.check_size(svc, [q.query], "query")
        raw = await self.inference.run(svc, [q.query], deadline, chars)
        # The index of the version that embedded the query (kept while that version serves).
        catalog = ix.for_model_version(raw.version)
        serving = svc.serving
        if serving is not None and serving.version == raw.version:
            why = lock_mismatch(catalog.model, serving.manifest, serving.bundle.digest)
            if why is not None:
                raise IndexMismatch(f"index {ix.name} v{catalog.version}: {why}")
        fetch = q.rerank.top_n if q.rerank else q.top_k
        # Off the event loop, at most `search_threads` at once per index: a search that has to
        # scan (a filter far from the query) delays other searches, never the node.
        hits = await anyio.to_thread.run_sync(
            catalog.search, raw.outputs[0], fetch, q.filter, limiter=ix.limiter
        )
        result = Searched(
            svc.name,
            raw.version,
            raw.target,
            raw.usage,
            index=ix.name,
            index_version=catalog.version,
            embedded_with=catalog.model.target,
            hits=hits[: q.top_k],
        )
        if q.rerank is not None and hits:
            ranked = await self.inference.rerank(
                q.rerank.model, q.query, self._documents(q.rerank.model, hits), deadline
            )
            order = ranked.ranked[: q.top_k]
            result.hits = [hits[d.index] for d in order]
            result.rerank_scores = [d.score for d in order]
            result.reranked_by = f"{ranked.model} v{ranked.version} {ranked.target}"
        return result

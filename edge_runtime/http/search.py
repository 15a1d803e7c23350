"""``POST /v1/search``: products for a query from the catalog index of the serving model version.

``{"query": "running shoes", "top_k": 10, "filter": {"in_stock": true, "price": {"lt": 100}},
"rerank": {"model": "product-reranker", "top_n": 50}}``; ``model``/``index`` name them when a
node serves several. 409 when the serving model version has no index here (embeddings still work).
"""

from __future__ import annotations

import msgspec
from litestar import Request, Response, post

from edge_runtime.http.observe import Observed, served_headers
from edge_runtime.http.openai import _deadline, require_json, usage_of
from edge_runtime.http.schemas import EmbeddingsUsage
from edge_runtime.search.engine import RerankStage, Searcher, SearchQuery

Scalar = str | int | float | bool
# A filter is a flat map (no deeper nesting is even decoded): field -> value | {op: value | [values]}
FilterValue = Scalar | dict[str, Scalar | list[Scalar]]


class RerankOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    top_n: int = 50


class SearchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    query: str
    top_k: int = 10
    model: str | None = None
    index: str | None = None
    filter: dict[str, FilterValue] | None = None
    rerank: RerankOptions | None = None
    return_text: bool = True


class SearchHit(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    score: float
    fields: dict[str, str | float | bool | None] = {}
    text: str | None = None
    rerank_score: float | None = None


class SearchResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    model_version: int
    query_target: str
    index: str
    index_version: int
    embedded_with: str
    results: list[SearchHit]
    usage: EmbeddingsUsage
    reranked_by: str | None = None
    object: str = "search"


@post("/v1/search", status_code=200)
async def search(request: Request, data: SearchRequest) -> Response[SearchResponse]:
    with Observed(request, "search") as obs:
        require_json(request)
        searcher: Searcher = request.app.state["searcher"]
        r = await searcher.search(
            SearchQuery(
                query=data.query,
                top_k=data.top_k,
                model=data.model,
                index=data.index,
                filter=data.filter,
                rerank=RerankStage(data.rerank.model, data.rerank.top_n) if data.rerank else None,
            ),
            _deadline(request),
        )
        obs.model = r.model
        scores: list[float | None] = (
            list(r.rerank_scores) if r.rerank_scores else [None] * len(r.hits)
        )
        hits = [
            SearchHit(
                id=h.id,
                score=round(h.score, 6),
                fields=h.fields,
                text=h.text if data.return_text else None,
                rerank_score=s,
            )
            for h, s in zip(r.hits, scores, strict=True)
        ]
        headers = served_headers(r, obs.started)
        headers["X-Shipyard-Index-Version"] = str(r.index_version)
        return Response(
            SearchResponse(
                model=r.model,
                model_version=r.version,
                query_target=r.target,
                index=r.index,
                index_version=r.index_version,
                embedded_with=r.embedded_with,
                results=hits,
                usage=usage_of(r.usage),
                reranked_by=r.reranked_by,
            ),
            headers=headers,
        )


handlers = [search]

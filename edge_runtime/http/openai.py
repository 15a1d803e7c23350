"""OpenAI-compatible embeddings, Cohere/TEI-style rerank, classify: wire format ↔ inference.

* ``POST /v1/embeddings``  float or base64 (little-endian float32), so the ``openai`` client works
* ``POST /v1/rerank``      results sorted best first
* ``POST /v1/classify``    labels + scores
"""

from __future__ import annotations

import numpy as np
from litestar import Request, Response, post

from artifacts.errors import UnsupportedMediaType
from edge_runtime.http.observe import Observed, served_headers
from edge_runtime.http.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
    Prediction,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
)
from edge_runtime.inference.engine import Inference
from edge_runtime.inference.results import Embeddings, Usage

_LE_F32 = np.dtype("<f4")


def _inference(request: Request) -> Inference:
    return request.app.state["inference"]


def _deadline(request: Request) -> float:
    return _inference(request).deadline(request.headers.get("x-request-timeout-ms"))


def media_type_error(content_type: str | None) -> UnsupportedMediaType | None:
    """The error for a body that is not declared JSON (None: it is)."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return None
    return UnsupportedMediaType(f"expected Content-Type application/json, got {ctype or 'none'}")


def require_json(request: Request) -> None:
    if (error := media_type_error(request.headers.get("content-type"))) is not None:
        raise error


def usage_of(u: Usage) -> EmbeddingsUsage:
    return EmbeddingsUsage(
        prompt_tokens=u.prompt_tokens,
        total_tokens=u.prompt_tokens,
        truncated_inputs=u.truncated,
        cached_inputs=u.cached,
    )


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request, data: EmbeddingsRequest) -> Response[EmbeddingsResponse]:
    """OpenAI-compatible embeddings; ``encoding_format: base64`` returns little-endian float32."""
    with Observed(request, "embeddings") as obs:
        require_json(request)
        r = await _inference(request).embed(
            data.model, data.input, _deadline(request), dimensions=data.dimensions
        )
        obs.model = r.model
        return Response(
            embeddings_response(r, data.encoding_format), headers=served_headers(r, obs.started)
        )


def embeddings_response(r: Embeddings, encoding_format: str) -> EmbeddingsResponse:
    """The OpenAI body: float lists, or base64 of little-endian float32.

    Few numpy calls: answered right after a model run, each costs 5-15 µs on the caches the
    run cooled (against under 1 µs hot). base64 rows are slices of one byte view, which msgspec
    encodes as base64 itself."""
    vectors = r.vectors
    if vectors.dtype is not _LE_F32 or not vectors.flags.c_contiguous:
        vectors = np.ascontiguousarray(vectors, dtype=_LE_F32)
    if encoding_format == "base64":
        flat, row = vectors.data.cast("B"), vectors.shape[1] * 4
        items = [
            EmbeddingItem(index=i, embedding=flat[i * row : (i + 1) * row])  # type: ignore[arg-type]
            for i in range(vectors.shape[0])
        ]
    else:
        items = [EmbeddingItem(index=i, embedding=v) for i, v in enumerate(vectors.tolist())]
    return EmbeddingsResponse(data=items, model=r.model, usage=usage_of(r.usage))


@post("/v1/rerank", status_code=200)
async def rerank(request: Request, data: RerankRequest) -> Response[RerankResponse]:
    """Score documents against a query with a cross-encoder; results sorted, best first.
    ``relevance_score`` is sigmoid(logit) unless ``raw_scores``."""
    with Observed(request, "rerank") as obs:
        require_json(request)
        docs = data.documents if data.documents is not None else data.texts
        r = await _inference(request).rerank(
            data.model,
            data.query,
            docs,
            _deadline(request),
            top_n=data.top_n,
            raw_scores=data.raw_scores,
        )
        obs.model = r.model
        results = [
            RerankResult(
                index=d.index,
                relevance_score=d.score,
                document=RerankDocument(text=r.documents[d.index])
                if data.return_documents
                else None,
            )
            for d in r.ranked
        ]
        return Response(
            RerankResponse(model=r.model, results=results, usage=usage_of(r.usage)),
            headers=served_headers(r, obs.started),
        )


@post("/v1/classify", status_code=200)
async def classify(request: Request, data: ClassifyRequest) -> Response[ClassifyResponse]:
    """Labels and scores (softmax over the model's labels)."""
    with Observed(request, "classify") as obs:
        require_json(request)
        r = await _inference(request).classify(
            data.model, data.input, _deadline(request), top_k=data.top_k
        )
        obs.model = r.model
        preds = [
            Prediction(index=i, label=p.label, score=p.score, scores=p.scores)
            for i, p in enumerate(r.predictions)
        ]
        return Response(
            ClassifyResponse(model=r.model, data=preds, usage=usage_of(r.usage)),
            headers=served_headers(r, obs.started),
        )


handlers = [embeddings, rerank, classify]

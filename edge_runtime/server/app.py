"""The edge node's HTTP API. Translation only: the inference path lives in
:mod:`edge_runtime.serving`; errors leave as ``application/problem+json``.

* ``POST /v1/embeddings``  OpenAI-compatible (float or base64), so the ``openai`` client works
* ``POST /v1/rerank``      Cohere / text-embeddings-inference style, sorted scores
* ``POST /v1/classify``    labels + scores
* KServe v2 Open Inference Protocol (``tritonclient[http]`` works, binary tensors included)
* ``GET /metrics`` (Prometheus), ``GET /v1/status``, ``GET /healthz``, ``GET /readyz``
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import numpy as np
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from artifacts.errors import ShipyardError
from artifacts.textproc import sigmoid
from edge_runtime.daemon import EdgeDaemon
from edge_runtime.errors import BadRequest, EdgeError, Overloaded
from edge_runtime.server import kserve
from edge_runtime.server.schemas import (
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
from edge_runtime.server.shedding import ShedWhenSaturated
from edge_runtime.serving import Inference, Result, probabilities

log = logging.getLogger("shipyard.edge.http")
PROBLEM = "application/problem+json"
_problem_encoder = msgspec.json.Encoder()


def problem(status: int, title: str, detail: str, headers: dict | None = None) -> Response:
    body = _problem_encoder.encode({"title": title, "status": status, "detail": detail})
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def _edge_error(_req: Request, exc: ShipyardError) -> Response:
    status = exc.status if isinstance(exc, EdgeError) else 400
    headers = {"Retry-After": str(int(exc.retry_after_s))} if isinstance(exc, Overloaded) else None
    return problem(status, type(exc).__name__, str(exc), headers)


def _http_error(_req: Request, exc: HTTPException) -> Response:
    detail = str(exc.detail)
    if getattr(exc, "extra", None):
        detail = f"{detail}: {exc.extra}"
    return problem(exc.status_code, type(exc).__name__, detail, exc.headers)


def _unexpected(req: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", req.method, req.url.path)
    return problem(500, "InternalServerError", f"{type(exc).__name__}: {exc}")


def _inference(request: Request) -> Inference:
    return request.app.state["inference"]


def _headers(r: Result, started: float | None = None) -> dict[str, str]:
    headers = {
        "X-Shipyard-Model": r.service.name,
        "X-Shipyard-Model-Version": str(r.version),
        "X-Shipyard-Backend": r.target,
    }
    if started is not None:  # time inside the handler (the client sees it in its devtools)
        headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1e3:.3f}"
    return headers


def _require_json(request: Request) -> None:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(
            status_code=415, detail=f"expected Content-Type application/json, got {ctype or 'none'}"
        )


def _texts(value: Any, field: str) -> list[str]:
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


def _record(request: Request, endpoint: str, model: str, status: int, started: float) -> None:
    metrics = request.app.state["daemon"].metrics
    metrics.requests.labels(model, endpoint, str(status)).inc()
    metrics.latency.labels(model, endpoint).observe(time.perf_counter() - started)


class _Timed:
    """Count every request (errors too) in the metrics."""

    def __init__(self, request: Request, endpoint: str) -> None:
        self.request, self.endpoint, self.model = request, endpoint, "-"
        self.started = time.perf_counter()

    def __enter__(self) -> _Timed:
        return self

    def __exit__(self, exc_type, exc, _tb) -> None:
        status = (
            200 if exc is None else getattr(exc, "status", None) or getattr(exc, "status_code", 500)
        )
        _record(self.request, self.endpoint, self.model, int(status), self.started)


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request, data: EmbeddingsRequest) -> Response[EmbeddingsResponse]:
    """OpenAI-compatible embeddings; ``encoding_format: base64`` returns little-endian float32."""
    with _Timed(request, "embeddings") as t:
        _require_json(request)
        inf = _inference(request)
        texts = _texts(data.input, "input")
        inf.check_count(len(texts))
        svc = inf.service(data.model, "embedding")
        t.model = svc.name
        if data.dimensions is not None and data.dimensions != svc.serving.manifest.io.dim:
            raise BadRequest(
                f"dimensions must be {svc.serving.manifest.io.dim} for {svc.name} (it cannot be shortened)"
            )
        r = await inf.run(svc, texts, inf.deadline(request.headers.get("x-request-timeout-ms")))
        vectors = r.outputs.astype("<f4", copy=False)
        if data.encoding_format == "base64":
            items = [
                EmbeddingItem(index=i, embedding=base64.b64encode(v.tobytes()).decode())
                for i, v in enumerate(vectors)
            ]
        else:
            items = [EmbeddingItem(index=i, embedding=v.tolist()) for i, v in enumerate(vectors)]
        usage = EmbeddingsUsage(
            prompt_tokens=r.usage.prompt_tokens,
            total_tokens=r.usage.prompt_tokens,
            truncated_inputs=r.usage.truncated,
            cached_inputs=r.usage.cached,
        )
        return Response(
            EmbeddingsResponse(data=items, model=svc.name, usage=usage),
            headers=_headers(r, t.started),
        )


@post("/v1/rerank", status_code=200)
async def rerank(request: Request, data: RerankRequest) -> Response[RerankResponse]:
    """Score documents against a query with a cross-encoder; results sorted, best first.
    ``relevance_score`` is sigmoid(logit) unless ``raw_scores``."""
    with _Timed(request, "rerank") as t:
        _require_json(request)
        inf = _inference(request)
        if not data.query.strip():
            raise BadRequest("query is empty")
        docs = data.documents if data.documents is not None else data.texts
        if docs is None:
            raise BadRequest("documents is required")
        docs = _texts(docs, "documents")
        inf.check_count(len(docs))
        if data.top_n is not None and data.top_n < 1:
            raise BadRequest("top_n must be >= 1")
        svc = inf.service(data.model, "rerank")
        t.model = svc.name
        r = await inf.run(
            svc,
            [(data.query, d) for d in docs],
            inf.deadline(request.headers.get("x-request-timeout-ms")),
        )
        logits = r.outputs[:, 0].astype(np.float64)
        scores = logits if data.raw_scores else sigmoid(logits)
        order = np.argsort(-scores, kind="stable")[: data.top_n or len(docs)]
        results = [
            RerankResult(
                index=int(i),
                relevance_score=float(scores[i]),
                document=RerankDocument(text=docs[i]) if data.return_documents else None,
            )
            for i in order
        ]
        usage = EmbeddingsUsage(
            prompt_tokens=r.usage.prompt_tokens,
            total_tokens=r.usage.prompt_tokens,
            truncated_inputs=r.usage.truncated,
            cached_inputs=r.usage.cached,
        )
        return Response(
            RerankResponse(model=svc.name, results=results, usage=usage),
            headers=_headers(r, t.started),
        )


@post("/v1/classify", status_code=200)
async def classify(request: Request, data: ClassifyRequest) -> Response[ClassifyResponse]:
    """Labels and scores (softmax over the model's labels)."""
    with _Timed(request, "classify") as t:
        _require_json(request)
        inf = _inference(request)
        texts = _texts(data.input, "input")
        inf.check_count(len(texts))
        svc = inf.service(data.model, "classify")
        t.model = svc.name
        r = await inf.run(svc, texts, inf.deadline(request.headers.get("x-request-timeout-ms")))
        labels = svc.serving.manifest.model.labels or [str(i) for i in range(r.outputs.shape[1])]
        probs = probabilities(r.outputs)
        k = data.top_k or len(labels)
        preds = []
        for i, row in enumerate(probs):
            best = int(row.argmax())
            top = np.argsort(-row, kind="stable")[:k]
            preds.append(
                Prediction(
                    index=i,
                    label=labels[best],
                    score=float(row[best]),
                    scores={labels[j]: float(row[j]) for j in top},
                )
            )
        usage = EmbeddingsUsage(
            prompt_tokens=r.usage.prompt_tokens,
            total_tokens=r.usage.prompt_tokens,
            truncated_inputs=r.usage.truncated,
            cached_inputs=r.usage.cached,
        )
        return Response(
            ClassifyResponse(model=svc.name, data=preds, usage=usage),
            headers=_headers(r, t.started),
        )


@get("/v1/status", sync_to_thread=False)
def status(request: Request) -> dict:
    """What is loaded, why it was chosen, what was excluded or failed, queue and cache state."""
    return request.app.state["daemon"].status()


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "live"}


@get("/readyz", sync_to_thread=False)
def readyz(request: Request) -> Response:
    daemon: EdgeDaemon = request.app.state["daemon"]
    if daemon.ready:
        return Response({"status": "ready"})
    reasons = {s.name: s.reason for s in daemon.models.values() if s.state != "ready"}
    return problem(503, "NotReady", "; ".join(f"{k}: {v}" for k, v in reasons.items()))


@get("/metrics", sync_to_thread=False, media_type="text/plain; version=0.0.4")
def metrics(request: Request) -> Response:
    return Response(
        request.app.state["daemon"].metrics.render(), media_type="text/plain; version=0.0.4"
    )


def create_app(daemon: EdgeDaemon):
    """The ASGI app: overload shedding in front of the litestar application."""
    return ShedWhenSaturated(create_litestar(daemon), daemon)


def create_litestar(daemon: EdgeDaemon) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await daemon.start()
        try:
            yield
        finally:
            await daemon.stop()

    return Litestar(
        route_handlers=[
            embeddings,
            rerank,
            classify,
            status,
            healthz,
            readyz,
            metrics,
            *kserve.handlers,
        ],
        lifespan=[lifespan],
        state=State({"daemon": daemon, "inference": Inference(daemon)}),
        exception_handlers={
            ShipyardError: _edge_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        request_max_body_size=daemon.config.server.max_body_bytes,
        logging_config=None,  # the process configures logging, not the framework
        openapi_config=OpenAPIConfig(title="Shipyard edge", version="1", path="/schema"),
    )

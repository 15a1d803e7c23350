"""The edge node's HTTP API: the routers of :mod:`.openai` and :mod:`.kserve`, status,
health and metrics, overload shedding in front. Translation only: the inference path lives
in :mod:`edge_runtime.inference`; errors leave as ``application/problem+json``.

* ``POST /v1/embeddings``, ``/v1/rerank``, ``/v1/classify`` (:mod:`.openai`)
* KServe v2 Open Inference Protocol (:mod:`.kserve`; ``tritonclient[http]`` works)
* ``GET /metrics`` (Prometheus), ``GET /v1/status``, ``GET /healthz``, ``GET /readyz``
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from artifacts.sdnotify import announce_ready
from artifacts.tracing import Traced
from artifacts.wire import Problem
from edge_runtime.http import kserve, openai, search
from edge_runtime.http.api_keys import RequireApiKey
from edge_runtime.http.fast_path import FastEmbeddings
from edge_runtime.http.problems import HANDLERS, problem_response
from edge_runtime.http.shedding import ShedWhenSaturated
from edge_runtime.inference.engine import Inference
from edge_runtime.node import EdgeNode
from edge_runtime.search.engine import Searcher


@get("/v1/status", sync_to_thread=False)
def status(request: Request) -> dict:
    """What is loaded, why it was chosen, what was excluded or failed, queue and cache state."""
    return request.app.state["node"].status()


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "live"}


@get("/readyz", sync_to_thread=False)
def readyz(request: Request) -> Response:
    node: EdgeNode = request.app.state["node"]
    if node.ready:
        return Response({"status": "ready"})
    reasons = "; ".join(f"{s.name}: {s.public_reason}" for s in node.models.values() if not s.ready)
    return problem_response(Problem(title="NotReady", status=503, detail=reasons))


@get("/metrics", sync_to_thread=False, media_type="text/plain; version=0.0.4")
def metrics(request: Request) -> Response:
    return Response(request.app.state["metrics"].render(), media_type="text/plain; version=0.0.4")


def create_app(node: EdgeNode) -> Traced:
    """The ASGI app: the API-key check, then overload shedding, then the embeddings fast path
    (:mod:`.fast_path`), then the litestar app."""
    inference = Inference(node.models, node.config, node.metrics, node.tracing)
    fast = FastEmbeddings(
        create_litestar(node, inference),
        inference,
        node.metrics,
        node.config.server.max_body_bytes,
    )
    return Traced(
        RequireApiKey(ShedWhenSaturated(fast, node), node.api_keys, node.metrics), node.tracing
    )


def create_litestar(node: EdgeNode, inference: Inference) -> Litestar:
    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await node.start()
        node.notifier.start_watchdog()
        server = node.config.server
        announce = asyncio.create_task(
            announce_ready(
                node.notifier, lambda: node.ready, node.describe, (server.host, server.port)
            ),
            name="sd-ready",
        )
        try:
            yield
        finally:
            announce.cancel()
            await node.notifier.stop_watchdog()
            await node.stop()

    searcher = Searcher(inference, node.indexes)
    return Litestar(
        route_handlers=[
            *openai.handlers,
            *search.handlers,
            *kserve.handlers,
            status,
            healthz,
            readyz,
            metrics,
        ],
        lifespan=[lifespan],
        state=State(
            {"node": node, "inference": inference, "searcher": searcher, "metrics": node.metrics}
        ),
        exception_handlers=HANDLERS,
        request_max_body_size=node.config.server.max_body_bytes,
        logging_config=None,  # the process configures logging, not the framework
        openapi_config=OpenAPIConfig(title="Shipyard edge", version="1", path="/schema"),
    )

"""One request's trace through a real edge node (the SDK's in-memory exporter): the server span
continues the caller's traceparent and names the route; under it the cache lookup, the
tokenisation, the queue wait, and the batch with its backend call; the trace id comes back in
X-Trace-Id. A repeat is answered by the cache: no tokenisation, no batch."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from artifacts.tracing import Tracing
from tests.integration.edge_runtime.conftest import edge_config
from tests.servers import EdgeServer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_span_tree_of_one_embeddings_request(shared_stack, publisher_keys, tmp_path):
    exporter = InMemorySpanExporter()
    cfg = edge_config(
        shared_stack.url,
        shared_stack.token("pull", name="edge"),
        publisher_keys[1],
        [("tiny-embedding", "stable")],
        tmp_path / "cache",
    )
    edge = EdgeServer(cfg, tracing=Tracing("shipyard-edge", exporter=exporter)).start()
    try:
        edge.wait(lambda st: st["models"][0]["state"] == "ready")
        exporter.clear()
        body = {"model": "tiny-embedding", "input": ["red running shoes", "blue desk lamp"]}
        r = httpx.post(
            f"{edge.url}/v1/embeddings",
            json=body,
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-trace-id"] == TRACE
        spans = {s.name: s for s in exporter.get_finished_spans()}
        root = spans["POST /v1/embeddings"]
        assert root.kind == SpanKind.SERVER and root.parent.span_id == int(PARENT, 16)
        assert root.attributes["http.route"] == "/v1/embeddings"
        assert root.attributes["http.response.status_code"] == 200
        assert all(s.context.trace_id == int(TRACE, 16) for s in spans.values())
        for child in ("cache", "tokenize", "queue", "batch"):
            assert spans[child].parent.span_id == root.context.span_id, child
        inference = spans["inference"]
        assert inference.parent.span_id == spans["batch"].context.span_id
        assert inference.attributes["shipyard.backend"] in (
            "onnx-int8",
            "openvino-int8",
            "onnx-fp32",
        )
        assert spans["batch"].attributes["shipyard.batch.size"] == 2
        assert spans["tokenize"].attributes["shipyard.tokens"] > 0
        assert spans["queue"].start_time <= spans["batch"].start_time
        assert spans["batch"].start_time <= inference.start_time <= inference.end_time

        exporter.clear()  # the same texts again: the result cache answers
        httpx.post(f"{edge.url}/v1/embeddings", json=body, timeout=30).raise_for_status()
        names = {s.name for s in exporter.get_finished_spans()}
        assert "tokenize" not in names and "batch" not in names
        cache = next(s for s in exporter.get_finished_spans() if s.name == "cache")
        assert cache.attributes["shipyard.cache.hits"] == 2
    finally:
        edge.stop()


def test_tracing_off_sends_no_header_and_imports_nothing_extra(
    shared_stack, publisher_keys, tmp_path
):
    cfg = edge_config(
        shared_stack.url,
        shared_stack.token("pull", name="edge2"),
        publisher_keys[1],
        [("tiny-embedding", "stable")],
        tmp_path / "cache",
    )
    edge = EdgeServer(cfg).start()
    try:
        edge.wait(lambda st: st["models"][0]["state"] == "ready")
        r = httpx.post(
            f"{edge.url}/v1/embeddings",
            json={"model": "tiny-embedding", "input": ["x"]},
            timeout=30,
        )
        assert r.status_code == 200 and "x-trace-id" not in r.headers
        assert not edge.node.tracing.enabled
    finally:
        edge.stop()

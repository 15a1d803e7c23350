"""An edge node under hostile input: bounded work per request (decided before tokenising),
strict headers, a KServe parser that cannot be made to recurse, bounded metric labels, API
keys with per-key rate limits — against a real node serving the tiny models."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import psutil
import pytest

from edge_runtime.http.api_keys import add_key
from tests.integration.edge_runtime.conftest import edge_config
from tests.servers import EdgeServer

MODELS = (("tiny-embedding", "stable"), ("tiny-rerank", "stable"), ("tiny-classify", "stable"))


@pytest.fixture(scope="module")
def edge(shared_stack, publisher_keys, tmp_path_factory):
    cfg = edge_config(
        shared_stack.url,
        shared_stack.token("pull", name="edge-hostile"),
        publisher_keys[1],
        MODELS,
        tmp_path_factory.mktemp("hostile-cache"),
        result_cache={"max_bytes": 0},
    )
    server = EdgeServer(cfg).start()
    server.wait_ready(120)
    yield server
    server.stop()


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_a_4_mib_rerank_body_is_refused_at_once_with_the_limit_named(edge):
    proc = psutil.Process()
    rss = proc.memory_info().rss
    query = "trail running shoe with carbon plate " * 100_000  # ~3.7 MB, one text
    body = {"model": "tiny-rerank", "query": query, "documents": ["shoe"] * 32}
    t0 = time.perf_counter()
    r = httpx.post(f"{edge.url}/v1/rerank", json=body, timeout=30)
    took = time.perf_counter() - t0
    assert r.status_code == 413, r.text
    assert "limit is" in r.json()["detail"] and "per input" in r.json()["detail"]
    assert took < 1.0, took
    assert proc.memory_info().rss - rss < 50 << 20


def test_the_request_total_is_bounded_too(edge):
    docs = ["x" * 4000] * 600  # each within the per-input limit, 2.4 M characters together
    r = httpx.post(
        f"{edge.url}/v1/rerank",
        json={"model": "tiny-rerank", "query": "shoe", "documents": docs},
        timeout=30,
    )
    assert r.status_code == 413 and "per request" in r.json()["detail"], r.text


def test_a_long_query_against_many_documents_is_tokenised_once_and_answers(edge):
    query = " ".join(["lightweight waterproof trail running shoe"] * 90)  # ~3.8 K characters
    docs = [f"product {i}: " + "breathable mesh upper with rock plate " * 20 for i in range(64)]
    t0 = time.perf_counter()
    r = httpx.post(
        f"{edge.url}/v1/rerank",
        json={"model": "tiny-rerank", "query": query, "documents": docs},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 64
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("value", ["NaN", "inf", "-5", "0", "soon"])
def test_deadlines_that_are_not_positive_numbers_are_refused(edge, value):
    r = httpx.post(
        f"{edge.url}/v1/embeddings",
        json={"model": "tiny-embedding", "input": "shoe"},
        headers={"X-Request-Timeout-Ms": value},
    )
    assert r.status_code == 400 and "X-Request-Timeout-Ms" in r.json()["detail"], r.text


def test_kserve_nesting_and_element_counts_are_bounded_before_parsing(edge):
    url = f"{edge.url}/v2/models/tiny-embedding/infer"
    deep = '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ' + (
        "[" * 50_000 + '"x"' + "]" * 50_000 + "}]}"
    )
    r = httpx.post(url, content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nests deeper" in r.json()["detail"], r.text
    many = '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [' + (
        ",".join(["1"] * 200_000) + "]}]}"
    )
    r = httpx.post(url, content=many, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "elements" in r.json()["detail"], r.text
    # a string that merely looks nested is fine
    ok = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["[" * 500 + '"']}]
    }
    assert httpx.post(url, json=ok).status_code == 200


def test_unknown_model_names_never_become_metric_labels(edge):
    for i in range(20):
        r = httpx.post(f"{edge.url}/v2/models/nope-{i}/infer", json={"inputs": []})
        assert r.status_code in (400, 404)
        r = httpx.post(f"{edge.url}/v1/embeddings", json={"model": f"nope-{i}", "input": "x"})
        assert r.status_code == 404
    metrics = httpx.get(f"{edge.url}/metrics").text
    assert "nope-" not in metrics


def test_an_unexpected_error_answers_500_without_internals(edge):
    svc = edge.node.models["tiny-embedding"]
    original = svc.cache_results.get

    def broken(_key):
        raise RuntimeError("secret internal detail /etc/passwd")

    svc.cache_results.max_bytes = 1 << 20  # enabled, so the broken lookup runs
    svc.cache_results.get = broken
    try:
        r = httpx.post(f"{edge.url}/v1/embeddings", json={"model": "tiny-embedding", "input": "x"})
    finally:
        svc.cache_results.get = original
        svc.cache_results.max_bytes = 0
    assert r.status_code == 500
    assert "secret" not in r.text and "RuntimeError" not in r.text
    assert re.fullmatch(r"[0-9a-f]{16}", r.json()["request_id"])


def test_shed_and_refused_requests_are_counted_alike(shared_stack, publisher_keys, tmp_path):
    """Every 429 is in shipyard_requests_total{status="429"} as well as in
    shipyard_rejected_total, whether the middleware shed it or admission refused it."""
    cfg = edge_config(
        shared_stack.url,
        shared_stack.token("pull", name="edge-flood"),
        publisher_keys[1],
        (("tiny-embedding", "stable"),),
        tmp_path / "cache",
        result_cache={"max_bytes": 0},
        batching={"max_queued_tokens": 64, "max_batch_tokens": 64, "adaptive": False},
    )
    edge = EdgeServer(cfg).start()
    try:
        edge.wait_ready(120)
        texts = [" ".join(["running shoe"] * 8) + f" {i}" for i in range(300)]

        async def flood() -> list[int]:
            async with httpx.AsyncClient(base_url=edge.url, timeout=30) as c:
                rs = await asyncio.gather(
                    *(
                        c.post("/v1/embeddings", json={"input": t, "model": "tiny-embedding"})
                        for t in texts
                    )
                )
            return [r.status_code for r in rs]

        codes = asyncio.run(flood())
        assert 429 in codes and 200 in codes, codes
        metrics = httpx.get(f"{edge.url}/metrics").text
        answered_429 = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("shipyard_requests_total{") and 'status="429"' in line
        )
        assert answered_429 == codes.count(429) == _metric(metrics, "shipyard_rejected_total")
    finally:
        edge.stop()


def test_api_keys_scopes_rates_and_reload(shared_stack, publisher_keys, tmp_path):
    keys = tmp_path / "keys"
    fe = add_key(keys, "search-fe", 3, ["infer"])
    ops = add_key(keys, "ops", 0, ["metrics", "status"])
    cfg = edge_config(
        shared_stack.url,
        shared_stack.token("pull", name="edge-keys"),
        publisher_keys[1],
        (("tiny-embedding", "stable"),),
        tmp_path / "cache",
        server={"api_keys_file": str(keys)},
    )
    edge = EdgeServer(cfg).start()
    try:
        deadline = time.monotonic() + 120
        while httpx.get(f"{edge.url}/readyz").status_code != 200:  # probes need no key
            assert time.monotonic() < deadline
            time.sleep(0.2)
        body = {"model": "tiny-embedding", "input": "trail shoe"}
        url = f"{edge.url}/v1/embeddings"
        assert httpx.post(url, json=body).status_code == 401
        assert (
            httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        assert httpx.post(url, json=body, headers={"X-Api-Key": ops}).status_code == 403
        as_fe = {"Authorization": f"Bearer {fe}"}
        answers = [httpx.post(url, json=body, headers=as_fe) for _ in range(8)]
        codes = [a.status_code for a in answers]
        # a burst of one second (3 at 3/s), refilled as time passes on a slow machine
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
        assert all(int(a.headers["retry-after"]) >= 1 for a in answers if a.status_code == 429)
        assert httpx.get(f"{edge.url}/metrics").status_code == 401
        for spelling in ("/v1/status/", "//v1/status", "/metrics/", "//metrics"):  # same scope
            assert httpx.get(f"{edge.url}{spelling}", headers=as_fe).status_code == 403, spelling
        metrics = httpx.get(f"{edge.url}/metrics", headers={"X-Api-Key": ops}).text
        allowed = f'shipyard_api_key_requests_total{{key="search-fe",outcome="allowed"}} {codes.count(200)}.0'
        assert allowed in metrics
        assert 'key="search-fe",outcome="rate-limited"' in metrics
        assert httpx.get(f"{edge.url}/v1/status", headers={"X-Api-Key": ops}).status_code == 200
        # rotate: a new key file, reloaded (SIGHUP in a real process; by call here)
        keys.write_text("")
        new = add_key(keys, "search-fe-2", 0, ["infer"])
        assert edge.node.api_keys.reload()
        assert httpx.post(url, json=body, headers=as_fe).status_code == 401
        ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {new}"})
        assert ok.status_code == 200
    finally:
        edge.stop()

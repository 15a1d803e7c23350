"""Serving through the HTTP API with real bundles: every API, real clients, bad input,
property-based requests, schemathesis, deadlines, runtime failover."""

import base64
import re
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifacts.textproc import run_items
from tests.integration.edge_runtime.conftest import edge_config
from tests.servers import EdgeServer

MODELS = (("tiny-embedding", "stable"), ("tiny-rerank", "stable"), ("tiny-classify", "stable"))


def _start_edge(url: str, token: str, publisher_pub, cache) -> EdgeServer:
    cfg = edge_config(
        url, token, publisher_pub, MODELS, cache, batching={"max_inputs_per_request": 64}
    )
    e = EdgeServer(cfg).start()
    e.wait_ready()
    return e


@pytest.fixture(scope="module")
def edge(shared_stack, publisher_keys, tmp_path_factory):
    """One node for the module's tests: they read, or restore what they change."""
    e = _start_edge(
        shared_stack.url,
        shared_stack.token("pull", name="edge"),
        publisher_keys[1],
        tmp_path_factory.mktemp("edge-cache"),
    )
    yield e
    e.stop()


@pytest.fixture
def own_edge(shared_stack, publisher_keys, tmp_path):
    """A node of its own, for a test that breaks it."""
    e = _start_edge(
        shared_stack.url, shared_stack.token("pull", name="edge"), publisher_keys[1], tmp_path
    )
    yield e
    e.stop()


def backend_direct(edge, name, items):
    """The serving backend run directly (no HTTP, no batcher, no cache)."""
    svc = edge.node.models[name]
    m = svc.serving
    return run_items(
        m.encoder,
        items,
        m.backend.infer,
        m.backend.input_names,
        pad_id=m.manifest.tokenizer.pad_token_id,
    )


TEXTS = [
    "wireless noise cancelling headphones",
    "trail running shoes size 44",
    "cast iron skillet 28 cm",
]


def test_embeddings_float_and_base64_match_backend(edge):
    c = httpx.Client(base_url=edge.url)
    r = c.post("/v1/embeddings", json={"input": TEXTS, "model": "tiny-embedding"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "tiny-embedding"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    want = backend_direct(edge, "tiny-embedding", TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (
        body["usage"]["prompt_tokens"] > 0
        and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]
    )
    assert r.headers["x-shipyard-model-version"] and r.headers["x-shipyard-backend"] == "onnx-int8"
    r = c.post(
        "/v1/embeddings",
        json={"input": TEXTS[0], "encoding_format": "base64", "model": "tiny-embedding"},
    )
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, want[0], atol=1e-5)
    assert r.json()["usage"]["cached_inputs"] == 1  # the head of the distribution is cached


def test_openai_client_unchanged(edge):
    from openai import OpenAI

    client = OpenAI(base_url=f"{edge.url}/v1", api_key="unused")
    res = client.embeddings.create(model="tiny-embedding", input=TEXTS)
    got = np.array([d.embedding for d in res.data], dtype=np.float32)
    want = backend_direct(edge, "tiny-embedding", TEXTS)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.9999
    assert res.usage.prompt_tokens > 0


def test_tritonclient_http_unchanged(edge):
    import tritonclient.http as th

    client = th.InferenceServerClient(edge.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny-embedding")
    meta = client.get_model_metadata("tiny-embedding")
    assert meta["inputs"][0]["name"] == "text" and meta["outputs"][0]["shape"] == [-1, 32]
    want = backend_direct(edge, "tiny-embedding", TEXTS)
    for binary in (False, True):
        inp = th.InferInput("text", [len(TEXTS)], "BYTES")
        inp.set_data_from_numpy(
            np.array([t.encode() for t in TEXTS], dtype=object), binary_data=binary
        )
        out = th.InferRequestedOutput("embedding", binary_data=binary)
        res = client.infer("tiny-embedding", [inp], outputs=[out])
        np.testing.assert_allclose(res.as_numpy("embedding"), want, atol=1e-5)
    q = th.InferInput("query", [1], "BYTES")
    q.set_data_from_numpy(np.array([b"running shoes"], dtype=object))
    d = th.InferInput("documents", [2], "BYTES")
    d.set_data_from_numpy(
        np.array([b"Nike trail running shoe", b"cast iron skillet"], dtype=object)
    )
    scores = client.infer("tiny-rerank", [q, d]).as_numpy("scores")
    want = backend_direct(
        edge,
        "tiny-rerank",
        [("running shoes", "Nike trail running shoe"), ("running shoes", "cast iron skillet")],
    )
    np.testing.assert_allclose(scores, want[:, 0], atol=1e-5)
    with pytest.raises(Exception, match="takes inputs"):
        client.infer("tiny-rerank", [inp])


def test_rerank_sorted_top_n_documents(edge):
    docs = [
        "Nike trail running shoe",
        "cast iron skillet",
        "running shoes for women",
        "olive oil 1L",
    ]
    r = httpx.post(
        f"{edge.url}/v1/rerank",
        json={
            "query": "running shoes",
            "documents": docs,
            "model": "tiny-rerank",
            "top_n": 3,
            "return_documents": True,
        },
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert all(x["document"]["text"] == docs[x["index"]] for x in results)
    logits = backend_direct(edge, "tiny-rerank", [("running shoes", d) for d in docs])[:, 0]
    assert [x["index"] for x in results] == list(np.argsort(-logits, kind="stable")[:3])
    raw = httpx.post(
        f"{edge.url}/v1/rerank",
        json={"query": "running shoes", "texts": docs, "raw_scores": True, "model": "tiny-rerank"},
    ).json()
    assert {x["index"]: x["relevance_score"] for x in raw["results"]} == pytest.approx(
        dict(enumerate(logits.tolist())), abs=1e-4
    )
    assert "document" not in raw["results"][0]


def test_classify_labels_and_scores(edge):
    r = httpx.post(
        f"{edge.url}/v1/classify", json={"input": TEXTS, "model": "tiny-classify", "top_k": 2}
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    logits = backend_direct(edge, "tiny-classify", TEXTS)
    for row, lg in zip(data, logits, strict=True):
        assert row["label"] == f"category-{int(lg.argmax())}"
        assert len(row["scores"]) == 2 and row["score"] == pytest.approx(
            max(row["scores"].values())
        )
    kserve = httpx.post(
        f"{edge.url}/v2/models/tiny-classify/infer",
        json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS}]},
    ).json()
    probs = np.array(kserve["outputs"][0]["data"]).reshape(kserve["outputs"][0]["shape"])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_truncation_is_reported_in_usage(edge):
    long = " ".join(["ultra light trail running shoe with carbon plate"] * 60)
    r = httpx.post(
        f"{edge.url}/v1/embeddings", json={"input": [long, "short"], "model": "tiny-embedding"}
    )
    assert r.status_code == 200
    usage = r.json()["usage"]
    assert usage["truncated_inputs"] == 1
    assert usage["prompt_tokens"] <= 128 + 10


BAD = [
    ({"input": [], "model": "tiny-embedding"}, 400, "input is empty"),
    ({"input": "", "model": "tiny-embedding"}, 400, "is empty"),
    ({"input": ["ok", "   "], "model": "tiny-embedding"}, 400, "input[1] is empty"),
    ({"input": ["x"] * 65, "model": "tiny-embedding"}, 400, "exceed the limit"),
    ({"input": [1, 2, 3], "model": "tiny-embedding"}, 400, "Expected `str`"),
    ({"input": [["a"]], "model": "tiny-embedding"}, 400, ""),
    ({"input": "x", "model": "nope"}, 404, "not served here"),
    ({"input": "x", "model": "tiny-rerank"}, 400, "is a rerank model"),
    ({"input": "x", "model": "tiny-embedding", "dimensions": 7}, 400, "dimensions"),
    ({"input": "x", "model": "tiny-embedding", "encoding_format": "hex"}, 400, ""),
    ({"model": "tiny-embedding"}, 400, ""),
]


@pytest.mark.parametrize(("body", "status", "match"), BAD)
def test_bad_embeddings_requests(edge, body, status, match):
    r = httpx.post(f"{edge.url}/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert match in r.json()["detail"]


SAME_ANSWER = [
    (b'{"input": ["trail shoe", "cast iron pan"], "model": "tiny-embedding"}', {}),
    (b'{"input": "x", "encoding_format": "base64"}', {}),
    (b'{"input": [1, 2]}', {}),
    (b"{not json", {}),
    (b"[1]", {}),
    (b"{}", {}),
    (b'{"input": "x", "encoding_format": "hex"}', {}),
    (b'{"input": "x", "model": "nope"}', {}),
    (b'{"input": "x", "model": "tiny-rerank"}', {}),
    (b'{"input": "x"}', {"content-type": "text/plain"}),
    (b'{"input": "x"}', {"x-request-timeout-ms": "NaN"}),
]


@pytest.mark.parametrize(("body", "headers"), SAME_ANSWER)
def test_the_fast_path_answers_as_the_framework_route_does(edge, body, headers):
    """``/v1/embeddings`` is answered by :mod:`edge_runtime.http.fast_path`; the framework's
    route (reached with a trailing slash) must give the same status, body and headers."""
    headers = {"content-type": "application/json", **headers}
    fast = httpx.post(f"{edge.url}/v1/embeddings", content=body, headers=headers)
    framework = httpx.post(f"{edge.url}/v1/embeddings/", content=body, headers=headers)
    assert fast.status_code == framework.status_code, (fast.text, framework.text)
    fast_body, framework_body = fast.json(), framework.json()
    if fast.status_code == 200:  # the second answer came from the result cache
        assert fast_body["usage"].pop("cached_inputs") == 0
        framework_body["usage"].pop("cached_inputs")
    assert fast_body == framework_body
    for name in ("content-type", "x-shipyard-model", "x-shipyard-model-version", "retry-after"):
        assert fast.headers.get(name) == framework.headers.get(name), name
    assert ("server-timing" in fast.headers) == ("server-timing" in framework.headers)


def test_the_fast_path_counts_every_answer_in_the_metrics(edge):
    def count(status: str) -> float:
        text = httpx.get(f"{edge.url}/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("shipyard_requests_total{")
            and 'endpoint="embeddings"' in line
            and f'status="{status}"' in line
        )

    ok, bad = count("200"), count("400")
    httpx.post(f"{edge.url}/v1/embeddings", json={"input": "x", "model": "tiny-embedding"})
    httpx.post(f"{edge.url}/v1/embeddings", json={"input": "x", "dimensions": 7})
    assert count("200") == ok + 1
    assert count("400") == bad + 1


def test_a_body_streamed_past_the_limit_is_refused_while_it_arrives(edge):
    """No Content-Length (chunked): the limit is enforced as the chunks come in."""

    def chunks():
        yield b'{"input": "'
        for _ in range(12):
            yield b"a" * (1 << 20)
        yield b'"}'

    r = httpx.post(
        f"{edge.url}/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "limit" in r.json()["detail"], r.text


def test_model_may_be_omitted_when_one_model_serves_the_task(edge):
    r = httpx.post(f"{edge.url}/v1/embeddings", json={"input": "x"})
    assert r.status_code == 200 and r.json()["model"] == "tiny-embedding"


def test_bad_transport_level_requests_and_server_keeps_serving(edge):
    url = f"{edge.url}/v1/embeddings"
    assert (
        httpx.post(
            url, content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert (
        httpx.post(
            url, content=b'{"input": "x"}', headers={"content-type": "text/plain"}
        ).status_code
        == 415
    )
    big = b'{"input": "' + b"a" * (10 << 20) + b'", "model": "tiny-embedding"}'
    assert (
        httpx.post(url, content=big, headers={"content-type": "application/json"}).status_code
        == 413
    )
    assert (
        httpx.post(
            f"{edge.url}/v1/rerank", json={"query": " ", "documents": ["a"], "model": "tiny-rerank"}
        ).status_code
        == 400
    )
    assert (
        httpx.post(f"{edge.url}/v1/rerank", json={"query": "q", "model": "tiny-rerank"}).status_code
        == 400
    )
    assert (
        httpx.post(
            f"{edge.url}/v1/rerank",
            json={"query": "q", "documents": ["a"], "top_n": 0, "model": "tiny-rerank"},
        ).status_code
        == 400
    )
    k = f"{edge.url}/v2/models/tiny-embedding/infer"
    for body in [
        {"inputs": []},
        {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]},
        {"inputs": [{"name": "wrong", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
    ]:
        assert httpx.post(k, json=body).status_code == 400
    assert (
        httpx.post(k, content=b"xx", headers={"inference-header-content-length": "99"}).status_code
        == 400
    )
    assert httpx.get(f"{edge.url}/v2/models/nope").status_code == 404
    assert (
        httpx.post(url, json={"input": "still serving", "model": "tiny-embedding"}).status_code
        == 200
    )


def test_deadline_exceeded_is_504(edge):
    r = httpx.post(
        f"{edge.url}/v1/embeddings",
        json={"input": ["a fresh text never cached"], "model": "tiny-embedding"},
        headers={"X-Request-Timeout-Ms": "0.0001"},
    )
    assert r.status_code == 504 and "deadline" in r.json()["detail"]
    assert (
        httpx.post(
            f"{edge.url}/v1/embeddings",
            json={"input": "x", "model": "tiny-embedding"},
            headers={"X-Request-Timeout-Ms": "soon"},
        ).status_code
        == 400
    )


def test_status_metrics_and_health(edge):
    httpx.post(f"{edge.url}/v1/embeddings", json={"input": TEXTS, "model": "tiny-embedding"})
    st = httpx.get(f"{edge.url}/v1/status").json()
    assert st["ready"] and {m["model"] for m in st["models"]} == {
        "tiny-embedding",
        "tiny-rerank",
        "tiny-classify",
    }
    emb = next(m for m in st["models"] if m["model"] == "tiny-embedding")
    assert emb["queue"]["batches"] >= 1 and emb["result_cache"]["entries"] >= 3
    metrics = httpx.get(f"{edge.url}/metrics").text
    for series in (
        "shipyard_requests_total",
        "shipyard_request_seconds_bucket",
        "shipyard_queue_seconds_bucket",
        "shipyard_batch_size_bucket",
        "shipyard_batch_tokens_bucket",
        "shipyard_cache_hits_total",
        "shipyard_cache_misses_total",
        "shipyard_active_backend",
        "shipyard_admission_limit_tokens",
    ):
        assert series in metrics, series
    assert httpx.get(f"{edge.url}/healthz").status_code == 200
    assert httpx.get(f"{edge.url}/readyz").status_code == 200
    assert httpx.get(f"{edge.url}/v2/health/ready").status_code == 200


def test_concurrent_requests_are_batched_and_correct(edge):
    texts = [f"product query number {i} with some words" for i in range(60)]
    want = backend_direct(edge, "tiny-embedding", texts)
    results = [None] * len(texts)

    def one(i):
        r = httpx.post(
            f"{edge.url}/v1/embeddings",
            json={"input": texts[i], "model": "tiny-embedding"},
            timeout=30,
        )
        results[i] = r.json()["data"][0]["embedding"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = np.array(results, dtype=np.float32)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    # batch-invariant: the same vector alone or in any batch (small and large batches run on
    # onnxruntime sessions with 1 and 2 threads; float summation order can flip an INT8
    # rounding, so "the same" means within 0.1%, far inside the gate's 0.99 invariance bar)
    assert cos.min() > 0.999


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
request_bodies = st.fixed_dictionaries(
    {},
    optional={
        "input": json_values | st.lists(st.text(max_size=30), max_size=5),
        "model": st.sampled_from(["tiny-embedding", "tiny-rerank", "tiny-classify", "nope"])
        | st.text(max_size=5),
        "query": st.text(max_size=20) | json_values,
        "documents": st.lists(st.text(max_size=30), max_size=5) | json_values,
        "top_n": st.integers(-3, 10) | json_values,
        "encoding_format": st.sampled_from(["float", "base64", "x"]),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=request_bodies, endpoint=st.sampled_from(["/v1/embeddings", "/v1/rerank", "/v1/classify"])
)
def test_property_no_5xx_for_any_json(edge, body, endpoint):
    r = httpx.post(f"{edge.url}{endpoint}", json=body, timeout=30)
    assert r.status_code < 500, (endpoint, body, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")


def test_schemathesis_finds_no_server_errors(edge, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{edge.url}/schema/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--request-timeout",
            "20",
            "--generation-deterministic",
            "--exclude-path-regex",
            "^/(metrics|v1/status)$",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_runtime_failover_keeps_admitted_requests(own_edge):
    edge = own_edge
    svc = edge.node.models["tiny-embedding"]
    failing = svc.serving
    real = failing.backend.infer
    calls = {"n": 0}

    def breaks_after_two(feeds):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("simulated device fault")
        return real(feeds)

    failing.backend.infer = breaks_after_two
    texts = [f"failover query {i}" for i in range(12)]
    codes = []

    def one(t):
        codes.append(
            httpx.post(
                f"{edge.url}/v1/embeddings",
                json={"input": t, "model": "tiny-embedding"},
                timeout=60,
            ).status_code
        )

    threads = [threading.Thread(target=one, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * len(texts)
    st_ = httpx.get(f"{edge.url}/v1/status").json()
    emb = next(m for m in st_["models"] if m["model"] == "tiny-embedding")
    assert emb["target"] != "onnx-int8"
    assert any(
        e["kind"] == "fallback" and "simulated device fault" in e["detail"] for e in emb["events"]
    )
    metrics = httpx.get(f"{edge.url}/metrics").text
    assert 'shipyard_fallback_events_total{from_target="onnx-int8"' in metrics


def test_a_lone_query_failing_on_the_event_loop_fails_over_on_the_inference_thread(own_edge):
    """A lone query runs on the event loop (no overlap for a second); when the backend fails
    there, the batch is retried on the inference thread, which fails over (opening another
    backend must not stall the event loop), and the request is answered."""
    edge = own_edge
    svc = edge.node.models["tiny-embedding"]
    failing = svc.serving
    ran_on: list[str] = []

    def broken(_feeds):
        ran_on.append(threading.current_thread().name)
        raise RuntimeError("simulated device fault")

    failing.backend.infer = broken
    failover_on: list[str] = []
    failover = svc._failover

    def recorded(model, exc):
        failover_on.append(threading.current_thread().name)
        return failover(model, exc)

    svc._failover = recorded
    time.sleep(1.2)  # nothing overlapped for INLINE_QUIET_S
    r = httpx.post(
        f"{edge.url}/v1/embeddings", json={"input": "one query", "model": "tiny-embedding"}
    )
    assert r.status_code == 200, r.text
    emb = next(
        m
        for m in httpx.get(f"{edge.url}/v1/status").json()["models"]
        if m["model"] == "tiny-embedding"
    )
    assert emb["target"] != "onnx-int8"
    assert not ran_on[0].startswith("infer-")  # tried on the event loop first
    assert ran_on[1].startswith("infer-tiny-embedding")  # then on the inference thread
    assert len(failover_on) == 1 and failover_on[0].startswith("infer-tiny-embedding")


def test_inline_queries_are_accounted_after_their_answer_and_before_a_scrape(own_edge):
    """Lone queries run on the event loop have their accounting put off past their answers
    (Batcher.later; the order is tested in the batcher's unit tests). On a real node a scrape
    still sees every answered query: in the inference histogram, the batch metrics and the
    tuner's waits, as a run on the inference thread is."""
    edge = own_edge
    svc = edge.node.models["tiny-embedding"]
    backend = svc.serving.backend
    infer = backend.infer
    ran_on: list[str] = []

    def recorded(feeds):
        ran_on.append(threading.current_thread().name)
        return infer(feeds)

    backend.infer = recorded
    time.sleep(1.2)  # nothing overlapped for INLINE_QUIET_S: lone queries run inline

    def counts() -> tuple[float, float]:
        text = httpx.get(f"{edge.url}/metrics").text
        inference = re.search(
            r'^shipyard_inference_seconds_count\{model="tiny-embedding"[^}]*\} (\S+)', text, re.M
        )
        batches = re.search(
            r'^shipyard_batch_size_count\{model="tiny-embedding"\} (\S+)', text, re.M
        )
        return float(inference[1]) if inference else 0.0, float(batches[1]) if batches else 0.0

    before, batches_before = counts()
    waits = len(svc.batcher.waits)
    for i in range(5):
        r = httpx.post(
            f"{edge.url}/v1/embeddings", json={"input": f"lone {i}", "model": "tiny-embedding"}
        )
        assert r.status_code == 200, r.text
    after, batches_after = counts()
    assert len(ran_on) == 5 and not any(name.startswith("infer-") for name in ran_on)
    assert after - before == 5 and batches_after - batches_before == 5
    assert len(svc.batcher.waits) - waits == 5 and svc.admission.queued_tokens == 0
    assert (
        'shipyard_queued_tokens{model="tiny-embedding"} 0.0'
        in httpx.get(f"{edge.url}/metrics").text
    )


def test_saturated_node_sheds_before_parsing(edge):
    services = list(edge.node.models.values())
    saved = [(s.admission.queued_tokens, s.admission.limit) for s in services]
    try:
        for s in services:
            s.admission.queued_tokens = int(s.admission.limit) + 1
        r = httpx.post(
            f"{edge.url}/v1/embeddings",
            content=b"this body is never parsed",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["title"] == "Overloaded"
        assert httpx.get(f"{edge.url}/v1/status").status_code == 200  # status stays reachable
        metrics = httpx.get(f"{edge.url}/metrics").text
        # shed before parsing: no model is known yet, so it is counted under "-" (once)
        assert 'shipyard_rejected_total{model="-"}' in metrics
        assert 'shipyard_requests_total{endpoint="embeddings",model="-",status="429"}' in metrics
    finally:
        for s, (q, lim) in zip(services, saved, strict=True):
            s.admission.queued_tokens, s.admission.limit = q, lim
    assert (
        httpx.post(
            f"{edge.url}/v1/embeddings", json={"input": "x", "model": "tiny-embedding"}
        ).status_code
        == 200
    )

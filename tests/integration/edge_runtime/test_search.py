"""/v1/search end to end: a real registry, real tiny model bundles, a real usearch index built
from them, a real edge node. Version lock across a model update, filters, rerank, deltas."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from artifacts.bundle import verify_bundle
from artifacts.client import BundleRef, PullTarget
from artifacts.publish import publish_version
from artifacts.signing import TrustedKeys
from builder.data.catalog import write_catalog
from builder.index import DeltaBuild, IndexBuild, build_delta, build_index
from edge_runtime.config import IndexSection
from tests.integration.edge_runtime.conftest import edge_config, push_version
from tests.servers import EdgeServer

INDEX = "tiny-catalog"
MODEL = "tiny-embedding"


def pull(client, name, version, target, dest, trusted):
    return client.pull_bundle(
        client.bundle_document(name, version, target),
        PullTarget(dest / f"{name}-{version}-{target}", dest / ".downloads"),
        trusted,
        expect=BundleRef(name, version, target),
    )


def publish_index(client, key, bundle_dir, channel="stable") -> int:
    v = publish_version(client, [verify_bundle(bundle_dir, None)], model=INDEX, key=key).version
    client.promote(INDEX, channel, v)
    return v


@pytest.fixture
def stack(admin_client, tiny_published, key, publisher_keys, tmp_path):
    """tiny-embedding v1 on stable and a catalog index for it (v1) on stable."""
    trusted = TrustedKeys.from_paths([publisher_keys[1]])
    model = pull(admin_client, MODEL, tiny_published["embedding"], "onnx-int8", tmp_path, trusted)
    catalog = write_catalog(tmp_path / "catalog.jsonl", 600)
    out = tmp_path / "index-v1"
    manifest = build_index(IndexBuild(model=model, catalog=catalog, name=INDEX, out=out, key=key))
    assert manifest.quality.passed, manifest.quality.attempts
    publish_index(admin_client, key, out)
    return {"model": model, "catalog": catalog, "trusted": trusted, "index_dir": out}


def start_edge(registry, publisher_keys, tmp_path, hold_swap_s=0.0) -> EdgeServer:
    cfg = edge_config(
        registry.url,
        registry.token("pull", name="edge"),
        publisher_keys[1],
        ((MODEL, "stable"), ("tiny-rerank", "stable")),
        tmp_path / "edge-cache",
        poll_interval_s=0.3,
    )
    cfg.indexes = [IndexSection(name=INDEX, model=MODEL, hold_swap_s=hold_swap_s)]
    edge = EdgeServer(cfg.validate()).start()
    edge.wait(lambda st: st["ready"] and st["indexes"][0]["state"] == "ready", 90)
    return edge


def search(edge, **body):
    return httpx.post(f"{edge.url}/v1/search", json=body, timeout=30)


def test_search_filters_rerank_and_errors(registry, stack, publisher_keys, tmp_path):
    edge = start_edge(registry, publisher_keys, tmp_path)
    try:
        records = [json.loads(line) for line in stack["catalog"].read_text().splitlines()]
        target = records[17]
        r = search(edge, query=target["text"], top_k=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == MODEL and body["index"] == INDEX
        assert body["model_version"] == 1 and body["index_version"] == 1
        assert body["embedded_with"] == "onnx-int8"
        assert body["results"][0]["id"] == target["id"]  # its own text finds it first
        assert r.headers["X-Shipyard-Index-Version"] == "1"
        # filters: every hit satisfies them, and they are the best such items
        f = {"category": target["fields"]["category"], "price": {"lt": 300}, "in_stock": True}
        hits = search(edge, query="a gift", top_k=20, filter=f).json()["results"]
        assert hits
        for h in hits:
            assert h["fields"]["category"] == f["category"]
            assert h["fields"]["price"] < 300 and h["fields"]["in_stock"] is True
        admitted = [
            r
            for r in records
            if r["fields"]["category"] == f["category"]
            and r["fields"]["price"] < 300
            and r["fields"]["in_stock"]
        ]
        assert len(hits) == min(20, len(admitted))
        # rerank: the cross-encoder reorders the first stage's hits
        rr = search(
            edge, query="running shoes", top_k=3, rerank={"model": "tiny-rerank", "top_n": 20}
        )
        assert rr.status_code == 200, rr.text
        rb = rr.json()
        assert len(rb["results"]) == 3 and rb["reranked_by"].startswith("tiny-rerank v")
        scores = [h["rerank_score"] for h in rb["results"]]
        assert scores == sorted(scores, reverse=True)
        # bad input: a clear 4xx, nothing served
        for bad, status in [
            ({"query": ""}, 400),
            ({"query": "x", "top_k": 0}, 400),
            ({"query": "x", "top_k": 5000}, 400),
            ({"query": "x", "filter": {"colour": "red"}}, 400),
            ({"query": "x", "filter": {"price": {"lt": "cheap"}}}, 400),
            ({"query": "x", "filter": {"price": {"between": [1, 2]}}}, 400),
            ({"query": "x", "filter": {"category": {"in": []}}}, 400),
            ({"query": "x", "index": "nope"}, 404),
            ({"query": "x", "model": "tiny-rerank"}, 400),
            ({"query": "x", "rerank": {"model": "tiny-rerank", "top_n": 0}}, 400),
            ({"query": "x", "surprise": 1}, 400),
            ({"query": "x", "top_k": 30, "rerank": {"model": "tiny-rerank", "top_n": 20}}, 400),
            ({"query": "x", "rerank": {"model": "tiny-rerank", "top_n": 999}}, 400),
            ({"query": "x", "filter": {"price": {"lt": 9**400}}}, 400),
            ({"query": "x", "filter": {"price": {"in": [[[1]]]}}}, 400),
            ({"query": "x", "filter": {"price": {"eq": {"a": 1}}}}, 400),
            ({"query": 5}, 400),
        ]:
            resp = search(edge, **bad)
            assert resp.status_code == status, (bad, resp.status_code, resp.text)
            assert resp.headers["content-type"].startswith("application/problem+json")
    finally:
        edge.stop()


def test_model_update_waits_for_its_index_then_search_never_mixes_versions(
    registry, admin_client, stack, tiny_builds, key, publisher_keys, tmp_path
):
    edge = start_edge(registry, publisher_keys, tmp_path, hold_swap_s=600)
    answers: list[tuple[int, int, int]] = []
    errors: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            r = search(edge, query="wireless headphones", top_k=3)
            if r.status_code == 200:
                b = r.json()
                answers.append((b["model_version"], b["index_version"], len(b["results"])))
            else:
                errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        # model v2 is promoted before its index exists: the node holds the update
        out, _ = tiny_builds["embedding"]
        v2 = push_version(admin_client, MODEL, [out / "onnx-int8", out / "onnx-fp32"], key)
        admin_client.promote(MODEL, "stable", v2)
        edge.wait(
            lambda st: any(e["kind"] == "update-held" for m in st["models"] for e in m["events"]),
            30,
        )
        assert edge.status()["models"][0]["version"] == 1  # still v1: its index is here
        # the index for v2 arrives: the model swaps, search follows, no request mixes them
        model2 = pull(admin_client, MODEL, v2, "onnx-int8", tmp_path, stack["trusted"])
        out2 = tmp_path / "index-v2"
        build_index(
            IndexBuild(model=model2, catalog=stack["catalog"], name=INDEX, out=out2, key=key)
        )
        publish_index(admin_client, key, out2)
        edge.wait(lambda st: st["models"][0]["version"] == v2, 60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(a[0] == v2 for a in answers):
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    st = edge.status()
    edge.stop()
    assert not errors, errors[:3]
    index_for = {1: 1, 2: v2}  # index v1 was built for model v1, index v2 for model v2
    assert {a[0] for a in answers} == {1, v2}
    for model_version, index_version, n in answers:
        assert index_for[model_version] == index_version and n == 3
    loaded = {x["model_version"]: x["index_version"] for x in st["indexes"][0]["loaded"]}
    assert loaded[v2] == 2


def test_missing_index_answers_409_and_embeddings_keep_working(
    registry, admin_client, stack, tiny_builds, key, publisher_keys, tmp_path
):
    edge = start_edge(registry, publisher_keys, tmp_path, hold_swap_s=0)
    try:
        out, _ = tiny_builds["embedding"]
        v2 = push_version(admin_client, MODEL, [out / "onnx-int8"], key)
        admin_client.promote(MODEL, "stable", v2)
        edge.wait(lambda st: st["models"][0]["version"] == v2, 60)
        r = search(edge, query="lamp", top_k=3)
        assert r.status_code == 409, r.text
        assert f"{MODEL} v{v2}" in r.json()["detail"]
        e = httpx.post(f"{edge.url}/v1/embeddings", json={"model": MODEL, "input": "lamp"})
        assert e.status_code == 200
    finally:
        edge.stop()


def test_delta_applies_without_rebuild(
    registry, admin_client, stack, key, publisher_keys, tmp_path
):
    edge = start_edge(registry, publisher_keys, tmp_path)
    try:
        records = [json.loads(line) for line in stack["catalog"].read_text().splitlines()]
        gone, changed = records[3], records[4]
        changes = tmp_path / "changes.jsonl"
        changes.write_text(
            "\n".join(
                json.dumps(r)
                for r in [
                    {
                        "id": "new-1",
                        "text": "Acme titanium camping stove",
                        "fields": {"price": 42.0, "in_stock": True, "category": "outdoor"},
                    },
                    {"id": gone["id"], "delete": True},
                    {
                        "id": changed["id"],
                        "text": changed["text"],
                        "fields": {**changed["fields"], "price": 1.0},
                    },
                ]
            )
            + "\n"
        )
        base = verify_bundle(
            pull(admin_client, INDEX, 1, "index-usearch", tmp_path, stack["trusted"]).path,
            stack["trusted"],
        )
        out = tmp_path / "delta"
        build_delta(DeltaBuild(base=base, model=stack["model"], changes=changes, out=out, key=key))
        v = publish_index(admin_client, key, out)
        st = edge.wait(lambda st: st["indexes"][0]["loaded"][0]["index_version"] == v, 30)
        assert st["indexes"][0]["loaded"][0]["base_version"] == 1
        hit = search(edge, query="Acme titanium camping stove", top_k=1).json()["results"][0]
        assert hit["id"] == "new-1" and hit["fields"]["category"] == "outdoor"
        ids = [h["id"] for h in search(edge, query=gone["text"], top_k=10).json()["results"]]
        assert gone["id"] not in ids
        top = search(edge, query=changed["text"], top_k=1).json()["results"][0]
        assert top["id"] == changed["id"] and top["fields"]["price"] == 1.0
        cheap = search(edge, query="x", top_k=5, filter={"price": {"lte": 1.0}}).json()["results"]
        assert [h["id"] for h in cheap] == [changed["id"]]
    finally:
        edge.stop()


def test_an_index_of_other_weights_with_the_same_version_number_is_refused(
    registry, admin_client, stack, key, publisher_keys, tmp_path
):
    """A rebuilt registry's "v1" is not the v1 the catalog was embedded with: the source
    weights digest in the index's lock tells them apart (409, embeddings keep working)."""
    import dataclasses

    import msgspec

    from builder.index import embed_catalog, index_bundle

    edge = start_edge(registry, publisher_keys, tmp_path)
    try:
        job = IndexBuild(
            model=stack["model"], catalog=stack["catalog"], name=INDEX, out=tmp_path / "x"
        )
        data = embed_catalog(job)
        foreign = msgspec.structs.replace(data.lock, source_digest="sha256:" + "7" * 64)
        index_bundle(dataclasses.replace(data, lock=foreign), INDEX, tmp_path / "foreign", key=key)
        v = publish_index(admin_client, key, tmp_path / "foreign")
        edge.wait(lambda st: st["indexes"][0]["loaded"][0]["index_version"] == v, 30)
        r = search(edge, query="lamp", top_k=3)
        assert r.status_code == 409, r.text
        assert "source weights differ" in r.json()["detail"]
        e = httpx.post(f"{edge.url}/v1/embeddings", json={"model": MODEL, "input": "lamp"})
        assert e.status_code == 200
    finally:
        edge.stop()

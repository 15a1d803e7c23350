"""Catalog indexes through the build service, with a real central on loopback and its two real
in-process workers: ``POST /v1/indexes`` builds a signed index on one worker and another
re-checks it before it is registered; ``PUT/DELETE /v1/indexes/{name}/items`` ship
cumulative deltas the same way; bad requests are refused before anything is queued."""

from __future__ import annotations

import json

import httpx
import pytest

from artifacts.bundle import restamp_bundle, verify_bundle
from artifacts.client import RegistryClient
from artifacts.digests import sha256_bytes
from artifacts.errors import ConflictError, Unprocessable
from artifacts.signing import TrustedKeys, generate_keypair, load_signing_key
from artifacts.wire import IndexBuildRequest, IndexItems
from tests.integration.central.test_builds import wait_build
from tests.servers import CentralServer

PRODUCTS = [
    {"id": f"sku-{i}", "text": f"{c} number {i}", "fields": {"price": float(i)}}
    for i, c in enumerate(["red shoe", "blue lamp", "green cup", "steel pan"] * 40)
]


def upload(c: RegistryClient, records: list, raw: bytes | None = None) -> str:
    data = raw if raw is not None else b"".join(json.dumps(r).encode() + b"\n" for r in records)
    digest = sha256_bytes(data)
    c.upload_blob(digest, data)
    return digest


def push_model(c: RegistryClient, tiny_builds, publisher_keys, tmp_path) -> int:
    """The tiny embedding model's onnx-int8 bundle, registered as ``emb`` by a publisher."""
    out, _ = tiny_builds["embedding"]
    number = c.create_version("emb")
    dest = tmp_path / "emb"
    restamp_bundle(
        out / "onnx-int8",
        dest,
        version=number,
        model="emb",
        key=load_signing_key(publisher_keys[0]),
    )
    c.push_bundle(verify_bundle(dest, TrustedKeys.from_paths([publisher_keys[1]])))
    return number


@pytest.fixture
def server(tmp_path, publisher_keys):
    s = CentralServer(
        tmp_path / "central",
        None,
        trusted=[publisher_keys[1]],
        local_workers=2,
        max_catalog_bytes=100_000,
    ).start()
    yield s
    s.stop()


@pytest.mark.slow
def test_index_and_deltas_built_and_verified_by_workers(
    server, tiny_builds, publisher_keys, tmp_path
):
    with RegistryClient(server.url, server.admin_token) as c:
        model_version = push_model(c, tiny_builds, publisher_keys, tmp_path)
        model_digest = sha256_bytes(c.bundle_document("emb", model_version, "onnx-int8").manifest)
        created = c.submit_index(
            IndexBuildRequest(
                name="catalog",
                catalog_blob=upload(c, PRODUCTS),
                model="emb",
                channel=None,
                version=model_version,
                promote_to="stable",
            )
        )
        info = wait_build(c, created.build_id, timeout=300)
        assert info.state == "passed" and info.promoted_to == "stable", info
        job = info.jobs[0]
        assert job.target == "index-usearch"
        spec = job.manifest["index"]
        assert spec["items"] == len(PRODUCTS) and spec["base_version"] == 0
        assert spec["model"] == {
            "name": "emb",
            "version": model_version,
            "target": "onnx-int8",
            "manifest_digest": model_digest,
            "source_digest": spec["model"]["source_digest"],
        }
        built = next(h for h in job.history if "built and signed by" in h).split()[6]
        verified = next(h for h in job.history if h.startswith("verified by")).split()[-1]
        assert {built, verified} == {"local-1", "local-2"}, job.history
        files = {f["path"] for f in job.manifest["files"]}
        assert {"index.usearch", "items.json", "provenance.json"} <= files
        assert c.channel("catalog", "stable").version == 1

        # a price change and a new product: a delta over v1, its next version
        put = c.change_index_items(
            "catalog",
            IndexItems(
                items=[
                    {"id": "sku-1", "text": "blue lamp number 1", "fields": {"price": 0.5}},
                    {"id": "new", "text": "teal rug"},
                ],
                promote_to="stable",
            ),
        )
        info = wait_build(c, put.build_id, timeout=300)
        assert info.state == "passed" and info.version == 2, info
        delta = info.jobs[0].manifest["index"]
        assert delta["base_version"] == 1 and delta["items"] == 2 and delta["deletes"] == 0

        # a delete accumulates over the newest delta: one delta per base, never a chain
        gone = c.change_index_items("catalog", IndexItems(ids=["sku-2"]))
        info = wait_build(c, gone.build_id, timeout=300)
        assert info.state == "passed" and info.version == 3, info
        delta = info.jobs[0].manifest["index"]
        assert delta["base_version"] == 1 and delta["items"] == 2 and delta["deletes"] == 1
        assert c.channel("catalog", "stable").version == 2  # not promoted: not asked


def test_bad_index_requests_are_refused_and_nothing_queued(
    server, tiny_builds, publisher_keys, tmp_path
):
    with RegistryClient(server.url, server.admin_token) as c:
        v = push_model(c, tiny_builds, publisher_keys, tmp_path)
        good = upload(c, PRODUCTS)
        bad_line = upload(c, [], raw=b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')

        def refused(message: str, **kw) -> None:
            req = {"name": "catalog", "catalog_blob": good, "model": "emb", "version": v} | kw
            with pytest.raises(Unprocessable, match=message):
                c.submit_index(IndexBuildRequest(**req))

        refused("line 2", catalog_blob=bad_line)
        refused("version emb v9 not found", version=9)
        refused("holds no onnx-fp32 bundle", target="onnx-fp32")
        refused("name exactly one of version or channel", version=None)
        refused("channel emb:stable points at no version", version=None, channel="stable")
        refused("index name", name="../etc")
        refused("only threshold is recall_at_10", recall_threshold=1.5)
        big = [{"id": f"p{i}", "text": "x" * 200} for i in range(600)]
        refused("over this service's 100000", catalog_blob=upload(c, big))
        with pytest.raises(ConflictError, match="'emb' holds models; choose another name"):
            c.submit_index(IndexBuildRequest(name="emb", catalog_blob=good, model="emb", version=v))
        with pytest.raises(
            Unprocessable, match="index 'catalog' not found: POST /v1/indexes first"
        ):
            c.change_index_items("catalog", IndexItems(ids=["sku-1"]))
        with pytest.raises(Unprocessable, match="no items"):
            c.change_index_items("catalog", IndexItems())
        assert c.builds() == []


def api(server, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or server.admin_token}"}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30, **kw)


@pytest.fixture
def bare(tmp_path, database_url, publisher_keys):
    """Central without workers: jobs stay queued unless a test leases them by hand."""
    s = CentralServer(
        tmp_path / "central", database_url, trusted=[publisher_keys[1]], local_workers=0
    ).start()
    yield s
    s.stop()


def test_a_model_whose_signer_was_untrusted_fails_the_job_not_the_workers(
    bare, tiny_builds, tmp_path
):
    """Refused at submit once untrusted; a job queued before is failed with the reason when a
    worker asks, instead of wedging every index-capable worker on the same lease error."""
    priv, pub, kid = generate_keypair(tmp_path / "release")
    r = api(bare, "POST", "/v1/keys/trusted", json={"public_key": pub.read_text(), "name": "rel"})
    assert r.status_code == 201, r.text
    with RegistryClient(bare.url, bare.admin_token) as c:
        number = c.create_version("emb")
        out, _ = tiny_builds["embedding"]
        restamp_bundle(
            out / "onnx-int8",
            tmp_path / "m",
            version=number,
            model="emb",
            key=load_signing_key(priv),
        )
        c.push_bundle(verify_bundle(tmp_path / "m", None))
        req = IndexBuildRequest(
            name="catalog", catalog_blob=upload(c, PRODUCTS), model="emb", version=number
        )
        queued = c.submit_index(req).build_id
        assert api(bare, "DELETE", f"/v1/keys/trusted/{kid}").status_code == 200
        with pytest.raises(Unprocessable, match="cannot be handed to a worker"):
            c.submit_index(req)
        worker, _ = bare.worker_client("ix-box", ["index-usearch"])
        assert worker.lease("ix-box", 0.5) is None
        info = wait_build(c, queued, timeout=30)
        assert info.state == "failed" and "cannot be handed to a worker" in info.jobs[0].reason
        worker.close()


def test_changes_build_only_on_promoted_or_own_versions_and_bad_bodies(
    bare, tiny_builds, publisher_keys, tmp_path
):
    """A build-token holder cannot make someone else's change land on their unpromoted index
    version (the newest by default), nor send deletes as products, huge version numbers or
    deep JSON."""
    from builder.index import IndexBuild, build_index

    with RegistryClient(bare.url, bare.admin_token) as c:
        push_model(c, tiny_builds, publisher_keys, tmp_path)
        catalog = tmp_path / "catalog.jsonl"
        catalog.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in PRODUCTS))
        model = verify_bundle(tmp_path / "emb", None)
        build_index(IndexBuild(model=model, catalog=catalog, name="catalog", out=tmp_path / "ix"))
        number = c.create_version("catalog")
        restamp_bundle(
            tmp_path / "ix",
            tmp_path / "ix1",
            version=number,
            key=load_signing_key(publisher_keys[0]),
        )
        c.push_bundle(verify_bundle(tmp_path / "ix1", None))  # admin's, never promoted
        stranger = bare.token("build", name="someone-else")
        change = {"items": [{"id": "sku-1", "text": "blue lamp number 1"}]}
        r = api(bare, "PUT", "/v1/indexes/catalog/items", stranger, json=change)
        assert r.status_code == 422 and "promoted or is yours" in r.text, r.text
        r = api(bare, "PUT", "/v1/indexes/catalog/items", stranger, json=change | {"version": 1})
        assert r.status_code == 403 and "never promoted" in r.text, r.text
        bad = {"items": [{"id": "sku-1", "delete": True}]}
        r = api(bare, "PUT", "/v1/indexes/catalog/items", json=bad)
        assert r.status_code == 422 and "remove products with DELETE" in r.text
        r = api(bare, "PUT", "/v1/indexes/catalog/items", json=change | {"version": 2**40})
        assert r.status_code == 400, r.text
        deep = "[" * 5000 + "]" * 5000
        r = httpx.put(
            f"{bare.url}/v1/indexes/catalog/items",
            content=f'{{"items": [{{"id": "x", "text": "t", "fields": {{"a": {deep}}}}}]}}',
            headers={
                "Authorization": f"Bearer {bare.admin_token}",
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        assert r.status_code in (400, 422), r.text
        assert c.builds() == []
        # the owner may: a delta over v1
        r = api(bare, "PUT", "/v1/indexes/catalog/items", json=change)
        assert r.status_code == 201, r.text
        assert c.build(r.json()["build_id"]).jobs[0].state == "waiting-for-capable-worker"

"""The catalog queue end to end with a real broker: our own ``nats-server`` (JetStream, file
store) on a free port, a real central with two in-process build workers, and real embed workers
(in an edge node, or as ``edge-runtime embed-worker`` processes that get SIGKILLed).

Checked: updates applied once (duplicates and redeliveries), re-embedding on promotion, the
index built from the queue's vectors (and re-verified by a worker) and shipped with its model
only after completion, kill -9 of a consumer mid-run, a broker restart mid-run, poison and
failing jobs dead-lettered with the reason, and the vectors endpoint refusing bad input.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import signal
import time
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest

from artifacts import embed_queue as eq
from artifacts import sourcetar
from artifacts.client import RegistryClient
from artifacts.digests import sha256_bytes
from artifacts.errors import ConflictError, ForbiddenError, NotFoundError, Unprocessable
from artifacts.signing import load_signing_key
from artifacts.targets import NodeCapabilities
from artifacts.wire import (
    BuildRequest,
    CatalogBinding,
    CatalogItemsRequest,
    RunRequest,
    VectorBatch,
    VectorItem,
)
from tests.integration.edge_runtime.conftest import edge_config, push_version
from tests.servers import CentralServer, EdgeServer, NatsServer

MODEL = "tiny-embedding"
NATS_SERVER = "/usr/sbin/nats-server"
TARGET = "onnx-fp32"  # runs on every x86 host (onnx-int8 may need VNNI)
WORDS = ["red shoe", "blue lamp", "green cup", "steel pan", "wool rug", "oak desk", "silk tie"]


def products(n: int, prefix: str = "sku") -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "text": f"{WORDS[i % 7]} model {i}", "fields": {"price": float(i)}}
        for i in range(n)
    ]


def wait_for(what, timeout: float = 120.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last: {got!r}")
        time.sleep(every)


def run_of(c: RegistryClient, catalog: str, version: int):
    return next((r for r in c.catalog(catalog).runs if r.version == version), None)


def ran(c: RegistryClient, catalog: str, version: int, state: str = "done"):
    def check():
        r = run_of(c, catalog, version)
        if r is not None and r.state == "failed" and state != "failed":
            raise AssertionError(f"run failed: {r.reason}")
        return r if r is not None and r.state == state else None

    return check


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def stack(request, tmp_path_factory, publisher_keys, tiny_builds):
    if not Path(NATS_SERVER).exists() and shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed (Debian: apt install nats-server)")
    root = tmp_path_factory.mktemp("catalog-queue")
    db_url, pg_name = None, None
    if request.param == "postgres":
        from bench.fixtures import create_pg_database

        db_url, pg_name = create_pg_database()
    nats = NatsServer(root / "nats").start()
    server = CentralServer(
        root / "central", db_url, trusted=[publisher_keys[1]], local_workers=2, nats_url=nats.url
    ).start()
    key = load_signing_key(publisher_keys[0])
    out, _ = tiny_builds["embedding"]
    with RegistryClient(server.url, server.admin_token) as c:
        versions = [push_version(c, MODEL, [out / TARGET], key) for _ in range(2)]
    yield {"nats": nats, "central": server, "versions": versions, "root": root}
    server.stop()
    nats.stop()
    if pg_name is not None:
        from bench.fixtures import drop_pg_database

        drop_pg_database(pg_name)


@pytest.fixture
def admin(stack):
    with RegistryClient(stack["central"].url, stack["central"].admin_token) as c:
        yield c


def bind(c: RegistryClient, catalog: str, **kw) -> None:
    c.bind_catalog(
        catalog,
        CatalogBinding(model=MODEL, index=f"{catalog}-index", target=TARGET, chunk=16, **kw),
    )


def worker_node(stack, publisher_keys, tmp_path, catalogs, **embed) -> EdgeServer:
    token = stack["central"].token("embed", name=f"embed-{tmp_path.name}")
    cfg = edge_config(
        stack["central"].url,
        token,
        publisher_keys[1],
        [],
        tmp_path / "edge-cache",
        embed_worker={
            "enabled": True,
            "nats_url": stack["nats"].url,
            "catalogs": catalogs,
            "ack_wait_s": 5.0,
            "backoff_s": 0.2,
            "max_attempts": 3,
        }
        | embed,
    )
    return EdgeServer(cfg).start()


def publish(
    c: RegistryClient, catalog: str, items: list[dict], deletes=(), change_id=None
) -> tuple[int, int]:
    req = CatalogItemsRequest(items=items, deletes=list(deletes), change_id=change_id)
    got = c.catalog_items(catalog, req)
    return got.stored, got.duplicates


def items_are(c: RegistryClient, catalog: str, n: int):
    return lambda: c.catalog(catalog).items == n


def test_reembedding_ships_the_index_and_model_together_after_completion(
    stack, admin, publisher_keys, tmp_path
):
    v1, v2 = stack["versions"]
    bind(admin, "shop")
    assert publish(admin, "shop", products(120), change_id="load-1") == (120, 0)
    # a retried request (same change_id): the broker drops the repeat
    assert publish(admin, "shop", products(120), change_id="load-1") == (0, 120)
    wait_for(items_are(admin, "shop", 120))
    edge = worker_node(stack, publisher_keys, tmp_path, ["shop"])
    try:
        admin.promote(MODEL, "candidate", v1)  # re-embeds shop with v1
        run = wait_for(ran(admin, "shop", v1), timeout=300)
        assert (run.done, run.total) == (120, 120) and run.index_version == 1
        assert admin.channel("shop-index", "stable").version == 1
        assert admin.channel(MODEL, "stable").version == v1
        manifest = admin.bundle_document("shop-index", 1, "index-usearch").manifest
        spec = json.loads(manifest)["index"]
        assert spec["items"] == 120 and spec["model"]["version"] == v1
        assert spec["model"]["target"] == TARGET

        # a price change, a new product and a removal while v2 re-embeds: all in v2's index
        admin.promote(MODEL, "candidate", v2)
        assert admin.channel(MODEL, "stable").version == v1  # not before completion
        publish(admin, "shop", [{"id": "sku-1", "text": "teal lamp model 1"}, *products(1, "new")])
        publish(admin, "shop", [], deletes=["sku-2"])
        wait_for(items_are(admin, "shop", 120))
        run = wait_for(ran(admin, "shop", v2), timeout=300)
        assert run.total == 120 and run.done == 120
        assert admin.channel(MODEL, "stable").version == v2
        idx = admin.channel("shop-index", "stable").version
        spec = json.loads(admin.bundle_document("shop-index", idx, "index-usearch").manifest)
        assert spec["index"]["model"]["version"] == v2 and spec["index"]["items"] == 120
        status = edge.status()["embed_worker"]
        assert status["dead"] == 0 and status["items"] >= 240
    finally:
        edge.stop()


def _worker_process(stack, publisher_keys, tmp_path, catalog: str):
    from artifacts.cli.procs import Child, free_port, python_cli

    token = stack["central"].token("embed", name=f"proc-{tmp_path.name}-{time.monotonic_ns()}")
    cache = tmp_path / f"cache-{time.monotonic_ns()}"
    toml = tmp_path / f"edge-{time.monotonic_ns()}.toml"
    toml.write_text(
        f"""
[registry]
url = "{stack["central"].url}"
token = "{token}"
trusted_keys = ["{publisher_keys[1]}"]

[cache]
dir = "{cache}"

[server]
port = {free_port()}

[embed_worker]
enabled = true
nats_url = "{stack["nats"].url}"
catalogs = ["{catalog}"]
ack_wait_s = 4.0
backoff_s = 0.2
max_attempts = 20
max_ack_pending = 4
"""
    )
    return Child(
        "embed-worker",
        python_cli("edge_runtime.cli", "embed-worker", "--config", str(toml)),
        toml.with_suffix(".log"),
    )


def _vector_rows(stack, catalog: str, version: int) -> int:
    from bench.embed_queue import vector_rows

    return vector_rows(stack["central"].cfg.db_url, catalog, version)


def test_kill_9_of_a_consumer_and_a_broker_restart_lose_and_double_nothing(
    stack, admin, publisher_keys, tmp_path
):
    v1, _ = stack["versions"]
    bind(admin, "bulk", stage_channel="bulk-stage", channel="bulk-serve")
    n = 600
    publish(admin, "bulk", products(n))
    wait_for(items_are(admin, "bulk", n))
    first = _worker_process(stack, publisher_keys, tmp_path, "bulk")
    admin.start_run("bulk", RunRequest(version=v1, promote=False))
    try:
        wait_for(lambda: (r := run_of(admin, "bulk", v1)) and r.done >= 48, timeout=180, every=0.05)
        first.signal(signal.SIGKILL)  # mid-run, jobs in flight and unacked
        done_at_kill = run_of(admin, "bulk", v1).done
        assert done_at_kill < n

        nats = stack["nats"]
        nats.kill(signal.SIGKILL)  # the broker too; it comes back on the same port and store
        time.sleep(1.0)
        nats.start()
        second = _worker_process(stack, publisher_keys, tmp_path, "bulk")
        try:
            run = wait_for(ran(admin, "bulk", v1), timeout=300)
        finally:
            second.signal(signal.SIGTERM)
        assert (run.done, run.total) == (n, n)
        assert _vector_rows(stack, "bulk", v1) == n  # each product once, whoever sent it twice
        spec = json.loads(
            admin.bundle_document("bulk-index", run.index_version, "index-usearch").manifest
        )
        assert spec["index"]["items"] == n
        assert admin.catalog("bulk").dead_letters == 0
    finally:
        first.signal(signal.SIGKILL)


async def _publish_raw(url: str, subject: str, payloads: list[bytes]) -> None:
    nc = await eq.connect(url, name="test")
    js = nc.jetstream()
    for i, p in enumerate(payloads):
        await eq.publish(js, subject, p, f"raw-{time.monotonic_ns()}-{i}")
    await nc.close()


async def _dead(url: str, catalog: str) -> list[tuple[bytes, str]]:
    nc = await eq.connect(url, name="test")
    js = nc.jetstream()
    sub = await js.pull_subscribe(eq.dead_subject(catalog), stream=eq.DEAD_STREAM)
    msgs = await sub.fetch(10, timeout=5)
    await nc.close()
    return [(m.data, m.headers.get(eq.REASON, "")) for m in msgs]


def test_poison_and_failing_jobs_are_dead_lettered_with_the_reason(
    stack, admin, publisher_keys, tiny_builds, tmp_path
):
    from artifacts.signing import generate_keypair

    v1, _ = stack["versions"]
    bind(admin, "poison", stage_channel="poison-stage", channel="poison-serve")
    publish(admin, "poison", products(3))
    wait_for(items_are(admin, "poison", 3))
    run = admin.start_run("poison", RunRequest(version=v1, promote=False))
    # a version central accepts (its signer is trusted there) that the node does not trust:
    # every attempt fails on the node, then the job is dead-lettered
    other_key, other_pub, _ = generate_keypair(tmp_path / "other")
    httpx.post(
        f"{stack['central'].url}/v1/keys/trusted",
        headers={"Authorization": f"Bearer {stack['central'].admin_token}"},
        json={"public_key": other_pub.read_text(), "name": "other-team"},
    ).raise_for_status()
    out, _ = tiny_builds["embedding"]
    untrusted = push_version(admin, MODEL, [out / TARGET], load_signing_key(other_key))
    bind(admin, "distrust", stage_channel="distrust-stage", channel="distrust-serve")
    publish(admin, "distrust", products(2))
    wait_for(items_are(admin, "distrust", 2))
    admin.start_run("distrust", RunRequest(version=untrusted, promote=False))
    edge = worker_node(stack, publisher_keys, tmp_path, ["poison", "distrust"])
    try:
        wait_for(lambda: run_of(admin, "poison", v1).done == 3, timeout=120)
        good = eq.EmbedJob(
            catalog="poison", model=MODEL, version=v1, target=TARGET, run=run.id, items=[]
        )
        lying = msgspec.structs.replace(
            good, items=[eq.JobItem(id="sku-0", text="not its text", digest="0" * 64)]
        )
        forged = msgspec.structs.replace(
            good,
            target="onnx-nope",
            items=[eq.JobItem(id="sku-0", text="x", digest=eq.text_digest("x"))],
        )
        asyncio.run(
            _publish_raw(
                stack["nats"].url,
                eq.jobs_subject("poison"),
                [b"{not json", msgspec.json.encode(lying), msgspec.json.encode(forged)],
            )
        )
        wait_for(lambda: admin.catalog("poison").dead_letters == 3, timeout=60)
        dead = dict(asyncio.run(_dead(stack["nats"].url, "poison")))
        assert "not an embed job" in dead[b"{not json"]
        assert "does not hash to its digest" in dead[msgspec.json.encode(lying)]
        assert f"run {run.id} embeds" in dead[msgspec.json.encode(forged)]  # never run
        wait_for(lambda: admin.catalog("distrust").dead_letters == 1, timeout=120)
        [(_, reason)] = asyncio.run(_dead(stack["nats"].url, "distrust"))
        assert "tiny-embedding" in reason, reason
        status = edge.status()["embed_worker"]
        assert status["retried"] >= 2 and status["dead"] == 4  # after max_attempts (3)
        assert run_of(admin, "distrust", untrusted).done == 0
    finally:
        edge.stop()


def test_duplicate_and_reordered_updates_change_nothing(stack, admin):
    bind(admin, "dups", stage_channel="dups-stage", channel="dups-serve")
    assert publish(admin, "dups", products(5)) == (5, 0)
    wait_for(items_are(admin, "dups", 5))
    # the same changes with fresh message ids (past the dedup window): applied, no effect
    updates = [eq.CatalogUpdate(op="upsert", id=p["id"], text=p["text"]) for p in products(5)]
    asyncio.run(
        _publish_raw(
            stack["nats"].url, eq.updates_subject("dups"), [msgspec.json.encode(u) for u in updates]
        )
    )
    publish(admin, "dups", [], deletes=["sku-0"])
    wait_for(items_are(admin, "dups", 4))
    # a malformed update is skipped; the ones after it apply
    asyncio.run(_publish_raw(stack["nats"].url, eq.updates_subject("dups"), [b"[1,2]"]))
    publish(admin, "dups", products(1, "late"))
    wait_for(items_are(admin, "dups", 5))


def test_vectors_endpoint_refuses_bad_input(stack, admin):
    v1, _ = stack["versions"]
    bind(admin, "vec", stage_channel="vec-stage", channel="vec-serve")
    publish(admin, "vec", products(2))
    wait_for(items_are(admin, "vec", 2))
    run = admin.start_run("vec", RunRequest(version=v1, promote=False))
    spec = json.loads(admin.bundle_document(MODEL, v1, TARGET).manifest)
    dim = spec["io"]["dim"]
    text = products(2)[0]["text"]

    def vec(values) -> str:
        return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode()

    unit = np.zeros(dim, np.float32)
    unit[0] = 1.0
    good = VectorItem(id="sku-0", digest=eq.text_digest(text), vector=vec(unit))
    embed_token = stack["central"].token("embed", name="vec-worker")
    pull_token = stack["central"].token("pull", name="vec-reader")
    with RegistryClient(stack["central"].url, embed_token) as w:

        def refused(exc, match, **kw):
            batch = {
                "run": run.id,
                "model": MODEL,
                "version": v1,
                "target": TARGET,
                "items": [good],
            } | kw
            with pytest.raises(exc, match=match):
                w.put_vectors("vec", VectorBatch(**batch))

        refused(
            Unprocessable,
            "values, the model has",
            items=[msgspec.structs.replace(good, vector=vec(unit[:-1]))],
        )
        refused(
            Unprocessable,
            "finite unit vector",
            items=[msgspec.structs.replace(good, vector=vec(unit * 3))],
        )
        nan = unit.copy()
        nan[1] = np.nan
        refused(
            Unprocessable,
            "finite unit vector",
            items=[msgspec.structs.replace(good, vector=vec(nan))],
        )
        refused(Unprocessable, "not base64", items=[msgspec.structs.replace(good, vector="%%%")])
        refused(Unprocessable, "embeds", version=v1 + 1)
        refused(Unprocessable, "embeds", model="another-model")
        refused(NotFoundError, "no run", run=run.id + 999)
        got = w.put_vectors(
            "vec", VectorBatch(run=run.id, model=MODEL, version=v1, target=TARGET, items=[good])
        )
        again = w.put_vectors(
            "vec", VectorBatch(run=run.id, model=MODEL, version=v1, target=TARGET, items=[good])
        )
        assert (got.stored, got.counted) == (1, 1) and (again.stored, again.ignored) == (0, 1)
        unknown = msgspec.structs.replace(good, id="no-such-product")
        assert (
            w.put_vectors(
                "vec",
                VectorBatch(run=run.id, model=MODEL, version=v1, target=TARGET, items=[unknown]),
            ).stored
            == 0
        )
    fresh = admin.start_run("vec", RunRequest(version=v1, promote=False, discard_vectors=True))
    assert (fresh.done, fresh.total) == (0, 2)  # the stored vector is forgotten
    with RegistryClient(stack["central"].url, pull_token) as r, pytest.raises(ForbiddenError):
        r.put_vectors(
            "vec", VectorBatch(run=run.id, model=MODEL, version=v1, target=TARGET, items=[good])
        )
    build_token = stack["central"].token("build", name="vec-builder")
    with (
        RegistryClient(stack["central"].url, build_token) as b,
        pytest.raises(ForbiddenError, match="lacks 'promote'"),
    ):  # a binding ships index and model to its channel later: it takes a promoter
        b.bind_catalog("vec", CatalogBinding(model=MODEL, index="vec-index", channel="stable"))
    with pytest.raises(ConflictError, match="not bound"):
        admin.start_run("nobody", RunRequest(version=v1, promote=False))
    from artifacts.digests import sha256_bytes
    from artifacts.wire import BuildRequest, IndexJob

    catalog_blob = b'{"id": "a", "text": "red shoe"}\n'
    admin.upload_blob(sha256_bytes(catalog_blob), catalog_blob)
    with pytest.raises(ForbiddenError, match="vectors_blob"):  # central's own input only
        admin.submit_build(
            BuildRequest(
                model="vec-index",
                task="index",
                source_blob=sha256_bytes(catalog_blob),
                targets=["index-usearch"],
                index=IndexJob(
                    model=MODEL, version=v1, target=TARGET, vectors_blob="sha256:" + "1" * 64
                ),
            )
        )
    with pytest.raises(Unprocessable, match="own registry name"):
        admin.bind_catalog("vec", CatalogBinding(model=MODEL, index=MODEL))
    r = httpx.put(
        f"{stack['central'].url}/v1/catalogs/vec/vectors",
        headers={"Authorization": f"Bearer {embed_token}"},
        json={
            "run": run.id,
            "model": MODEL,
            "version": v1,
            "target": TARGET,
            "items": [["a", "b"]],
        },
    )
    assert r.status_code == 400


def test_a_refused_model_promotion_fails_the_run_and_ships_no_index(
    stack, admin, publisher_keys, tmp_path
):
    v1, v2 = stack["versions"]
    bind(admin, "halted", stage_channel="halted-stage", channel="halted-serve")
    admin.promote(MODEL, "halted-serve", v1)
    admin.halt(MODEL, "halted-serve", "frozen for the sale")
    publish(admin, "halted", products(20))
    wait_for(items_are(admin, "halted", 20))
    edge = worker_node(stack, publisher_keys, tmp_path, ["halted"])
    try:
        admin.start_run("halted", RunRequest(version=v2, promote=True))
        run = wait_for(ran(admin, "halted", v2, state="failed"), timeout=300)
        assert "halted" in run.reason and run.index_version is not None
        assert admin.channel(MODEL, "halted-serve").version == v1
        with contextlib.suppress(NotFoundError):  # the index was built, never promoted
            assert admin.channel("halted-index", "halted-serve").version is None
    finally:
        edge.stop()


def test_a_catalog_owns_its_index_and_bound_tokens_read_no_other(stack, admin, tmp_path):
    """A binding never claims another catalog's index (it would publish over it); a token
    bound to one catalog reads no other catalog's index (its product texts) by any of the
    model's routes, while its own index and plain models read as before."""
    bind(admin, "owner", stage_channel="owner-stage", channel="owner-serve")
    bind(admin, "owner", stage_channel="owner-stage", channel="owner-serve")  # re-bind: fine
    with pytest.raises(ConflictError, match="belongs to another catalog"):
        admin.bind_catalog("thief", CatalogBinding(model=MODEL, index="owner-index"))
    admin.create_version("someones-model")
    with pytest.raises(ConflictError, match="not an index"):  # nor a model edges pull
        admin.bind_catalog("thief", CatalogBinding(model="someones-model", index=MODEL))
    admin.create_version("owner-index")  # (as its first run would)
    with pytest.raises(ConflictError, match="is an index, not an embedding model"):
        admin.bind_catalog("thief", CatalogBinding(model="owner-index", index="thief-index"))
    with pytest.raises(NotFoundError):  # the refused bindings created no catalog
        admin.catalog("thief")
    with pytest.raises(ConflictError, match="kept for good"):  # the old index keeps its texts
        admin.bind_catalog("owner", CatalogBinding(model=MODEL, index="owner-index-2"))
    assert admin.catalog("owner").binding.index == "owner-index"
    # a build of the index (as a run submits one): it names the index's files by digest
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")  # its build fails: it exists, that's all
    (tmp_path / "src" / "model.safetensors").write_bytes(b"not weights")
    source = sourcetar.create(tmp_path / "src", tmp_path / "src.tar").read_bytes()
    digest = sha256_bytes(source)
    admin.upload_blob(digest, source)
    build = admin.submit_build(
        BuildRequest(model="owner-index", task="embedding", source_blob=digest, targets=[TARGET])
    )
    thief = admin.create_token("thief-embed", ["embed"], catalogs=["thief"])
    own = admin.create_token("owner-embed", ["embed"], catalogs=["owner"])
    url = stack["central"].url
    routes = [
        "/v1/models/{m}/versions",
        "/v1/models/{m}/versions/1",
        "/v1/models/{m}/versions/1/bundles/index-usearch",
        "/v1/models/{m}/channels",
        "/v1/models/{m}/channels/owner-serve",
        "/v1/tuf/model-{m}.json",
        "/v1/tuf/targets/{m}/owner-serve.json",
    ]
    for path in routes:

        def get(token: str, model: str, path=path) -> httpx.Response:
            return httpx.get(
                url + path.format(m=model), headers={"Authorization": f"Bearer {token}"}
            )

        r = get(thief, "owner-index")
        assert r.status_code == 403, (path, r.status_code)
        assert "bound to catalog(s) thief: 'owner-index' is another catalog's index" in r.text
        assert get(own, "owner-index").status_code not in (401, 403), path
        assert get(stack["central"].admin_token, "owner-index").status_code != 403, path
        assert get(thief, MODEL).status_code not in (401, 403), path  # not an index
    # routes that name the index elsewhere: a resolve body, a build
    caps = msgspec.to_builtins(NodeCapabilities())
    for token, allowed in ((thief, False), (own, True)):
        h = {"Authorization": f"Bearer {token}"}
        r = httpx.post(
            url + "/v1/resolve", headers=h, json={"model": "owner-index", "capabilities": caps}
        )
        assert (r.status_code == 403) is not allowed, (token == own, r.status_code)
        for path in (f"/v1/builds/{build.build_id}", f"/v1/builds/{build.build_id}/logs"):
            r = httpx.get(url + path, headers=h)
            assert r.status_code == (200 if allowed else 403), (path, r.status_code)
        listed = httpx.get(url + "/v1/builds?limit=500", headers=h).json()
        assert (build.build_id in {b["id"] for b in listed}) is allowed

"""The edge treats every registry answer as hostile until verified: signed TUF channel
metadata (rollback, freeze, mix-and-match), and answers that would name paths outside the
cache, foreign bundles or oversize blobs — refused, nothing outside the cache touched, the node
keeps serving what it has and says why."""

from __future__ import annotations

import base64
import shutil
import sqlite3
import tracemalloc

import httpx
import msgspec
import pytest
from litestar import Litestar, Request, Response, get, post
from litestar.response import Stream

from artifacts.manifest import MANIFEST_FILE, SIGNATURE_FILE
from artifacts.targets import CPU_TARGETS, Candidate
from artifacts.wire import ResolvedBundle, ResolveResponse
from tests.factories import synthetic_bundle
from tests.integration.edge_runtime.conftest import edge_config, publish_tiny, push_version
from tests.servers import CentralServer, EdgeServer, ThreadedServer


def _model(st: dict, name: str = "tiny-embedding") -> dict:
    return next(m for m in st["models"] if m["model"] == name)


def _tuf(server: CentralServer):
    """The replica's working copy of the TUF files (as signed; served from the database)."""
    return server.cfg.home_path / "tuf" / "metadata"


def _edge(server: CentralServer, publisher_keys, cache, **sections) -> EdgeServer:
    cfg = edge_config(
        server.url,
        server.token("pull", name="edge"),
        publisher_keys[1],
        (("tiny-embedding", "stable"),),
        cache,
        poll_interval_s=1.0,
        registry={"tuf_root": str(_tuf(server) / "1.root.json")},
        **sections,
    )
    return EdgeServer(cfg).start()


def test_edge_follows_signed_metadata_and_refuses_a_rollback_replay(
    registry, admin_client, tiny_builds, key, publisher_keys, tmp_path
):
    publish_tiny(admin_client, tiny_builds, key)
    frozen = tmp_path / "tuf-v1"
    shutil.copytree(_tuf(registry), frozen)  # what a replaying attacker would serve later
    edge = _edge(registry, publisher_keys, tmp_path / "cache")
    try:
        st = edge.wait_ready()
        assert st["channel_metadata"] == "tuf" and _model(st)["metadata"] == "fresh"
        out, _ = tiny_builds["embedding"]
        v2 = push_version(admin_client, "tiny-embedding", [out / "onnx-fp32"], key)
        admin_client.promote("tiny-embedding", "stable", v2)
        edge.wait(lambda s: _model(s)["version"] == v2, 60)
        # the registry now replays the older (validly signed) metadata (served from its database)
        db = sqlite3.connect(registry.cfg.home_path / "central.db")
        with db:
            for f in frozen.iterdir():
                if f.name != "1.root.json":
                    db.execute(
                        "UPDATE tuf_files SET body = ? WHERE name = ?",
                        (f.read_bytes(), f"metadata/{f.name}"),
                    )
        db.close()
        st = edge.wait(lambda s: _model(s)["metadata"] == "metadata refused", 30)
        m = _model(st)
        assert m["version"] == v2 and m["state"] == "ready"  # still serving what it had
        assert "version" in m["last_sync_error"].lower()
        r = httpx.post(f"{edge.url}/v1/embeddings", json={"input": "x", "model": "tiny-embedding"})
        assert r.status_code == 200 and r.headers["x-shipyard-model-version"] == str(v2)
    finally:
        edge.stop()


def test_an_expired_timestamp_reads_as_stale_metadata_and_the_node_keeps_serving(
    tiny_builds, key, publisher_keys, tmp_path
):
    server = CentralServer(
        tmp_path / "central",
        None,
        trusted=[publisher_keys[1]],
        local_workers=0,
        tuf_timestamp_expiry_s=4.0,
        tuf_refresh_s=3600.0,  # nobody re-signs: the registry is frozen
    ).start()
    edge = None
    try:
        with __import__("artifacts").RegistryClient(server.url, server.admin_token) as c:
            publish_tiny(c, tiny_builds, key)
        edge = _edge(server, publisher_keys, tmp_path / "cache")
        v = _model(edge.wait_ready())["version"]
        st = edge.wait(lambda s: _model(s)["metadata"] == "stale-metadata", 30)
        assert _model(st)["state"] == "ready" and _model(st)["version"] == v
        assert "expired" in _model(st)["last_sync_error"]
    finally:
        if edge is not None:
            edge.stop()
        server.stop()


def test_a_bundle_the_signed_metadata_does_not_pin_is_refused(
    registry, admin_client, tiny_builds, key, publisher_keys, tmp_path
):
    versions = publish_tiny(admin_client, tiny_builds, key)
    out, _ = tiny_builds["embedding"]
    other = push_version(admin_client, "tiny-embedding", [out / t for t in CPU_TARGETS], key)
    # the registry's database is tampered with: v1's onnx-int8 row now holds another version's
    # (validly signed) manifest
    db = sqlite3.connect(registry.cfg.home_path / "central.db")
    with db:
        row = db.execute(
            "SELECT b.manifest, b.signature, b.manifest_digest FROM bundles b JOIN versions v ON "
            "v.id = b.version_id WHERE v.number = ? AND b.target = 'onnx-int8'",
            (other,),
        ).fetchone()
        db.execute(
            "UPDATE bundles SET manifest = ?, signature = ?, manifest_digest = ? WHERE target = "
            "'onnx-int8' AND version_id = (SELECT v.id FROM versions v JOIN models m ON "
            "m.id = v.model_id WHERE m.name = 'tiny-embedding' AND v.number = ?)",
            (*row, versions["embedding"]),
        )
    db.close()
    edge = _edge(registry, publisher_keys, tmp_path / "cache")
    try:
        st = edge.wait_ready()
        m = _model(st)
        assert m["version"] == versions["embedding"] and m["target"] != "onnx-int8"
        int8 = next(c for c in m["candidates"] if c["target"] == "onnx-int8")
        assert int8["status"] == "failed-verification"
    finally:
        edge.stop()


# ---- a registry that lies (no TUF on the node: the answers themselves are checked) ---------


def _fake_registry(answer: dict | list[dict], blobs: dict[str, bytes]) -> ThreadedServer:
    """Answers ``answer`` (a list: its last element, so a test can change it live)."""

    @post("/v1/resolve", status_code=200)
    async def resolve(request: Request) -> Response:
        now = answer[-1] if isinstance(answer, list) else answer
        return Response(msgspec.json.encode(now), media_type="application/json")

    @get("/v1/blobs/{digest:str}")
    async def blob(digest: str) -> Response:
        return Response(blobs.get(digest, b""), media_type="application/octet-stream")

    @post("/v1/fleet/heartbeat", status_code=204)
    async def heartbeat() -> None:
        return None

    return ThreadedServer(Litestar([resolve, blob, heartbeat])).start()


# onnx-fp32 runs on every x86/ARM host (an INT8 bundle may need VNNI this host lacks, and would
# be excluded before anything is downloaded: not what the tests below are about)
FP32 = "onnx-fp32"


def _answer(
    bundle_dir, *, target: str | None = None, version: int = 1, model="tiny-embedding"
) -> dict:
    manifest = (bundle_dir / MANIFEST_FILE).read_bytes()
    rb = ResolvedBundle(
        candidate=Candidate(
            target=target or "onnx-int8",
            backend="onnxruntime",
            precision="fp32" if target == FP32 else "int8",
            device="cpu",
        ),
        manifest_digest="sha256:" + "0" * 64,
        manifest=base64.b64encode(manifest).decode(),
        signature=(bundle_dir / SIGNATURE_FILE).read_text(),
        files=[],
    )
    return msgspec.to_builtins(
        ResolveResponse(model=model, channel="stable", version=version, eligible=[rb], excluded=[])
    )


def _edge_at(url: str, publisher_keys, cache, **sections) -> EdgeServer:
    cfg = edge_config(
        url, "t", publisher_keys[1], (("tiny-embedding", "stable"),), cache, **sections
    )
    return EdgeServer(cfg).start()


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ({"target": "../../../victim"}, "is not a known target"),
        ({"version": -3}, "not a positive integer"),
        ({"model": "someone-else"}, "answered for"),
    ],
)
def test_answers_that_would_name_paths_outside_the_cache_are_refused(
    tmp_path, key, publisher_keys, tamper, why
):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    synthetic_bundle(tmp_path / "b", key, model="tiny-embedding", version=1)
    answer = _answer(tmp_path / "b", **tamper)
    fake = _fake_registry(answer, {})
    cache = tmp_path / "nested" / "deep" / "cache"
    edge = _edge_at(fake.url, publisher_keys, cache)
    try:
        st = edge.wait_settled()
        m = _model(st)
        assert m["state"] == "not-ready" and why in m["reason"], m["reason"]
        assert (victim / "precious").read_text() == "keep me"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "nested", "victim"]
    finally:
        edge.stop()
        fake.stop()


def test_a_variant_the_policy_did_not_ask_for_is_refused_whatever_the_registry_ranks(
    tmp_path, key, publisher_keys
):
    """The registry offers a validly signed pruned variant as the only candidate of a version
    that (by its own answer) also carries the full model: the node ranks the verified bundles
    itself with its policy and does not serve a smaller model it was not told to take."""
    synthetic_bundle(tmp_path / "v", key, model="tiny-embedding", version=1, variant="pruned-L1")
    answer = _answer(tmp_path / "v", target="onnx-int8+pruned-L1")
    answer["excluded"] = [{"target": "onnx-int8", "reason": "said to be unfit"}]
    fake = _fake_registry(answer, {})
    edge = _edge_at(fake.url, publisher_keys, tmp_path / "c")
    try:
        m = _model(edge.wait_settled())
        assert m["state"] == "not-ready"
        variant = next(c for c in m["candidates"] if c["target"] == "onnx-int8+pruned-L1")
        assert variant["status"] == "excluded" and "backends.prefer" in variant["detail"]
    finally:
        edge.stop()
        fake.stop()


def test_a_foreign_manifest_and_an_oversize_blob_are_refused(tmp_path, key, publisher_keys):
    # another model's validly signed bundle, offered under this name
    synthetic_bundle(tmp_path / "other", key, model="query-classifier", version=1, target=FP32)
    fake = _fake_registry(_answer(tmp_path / "other", target=FP32), {})
    edge = _edge_at(fake.url, publisher_keys, tmp_path / "c1")
    try:
        m = _model(edge.wait_settled())
        assert m["state"] == "not-ready"
        offered = next(c for c in m["candidates"] if c["target"] == FP32)
        assert "names query-classifier" in offered["detail"] and "asked for" in offered["detail"]
    finally:
        edge.stop()
        fake.stop()
    # the right bundle, but its blob is served far larger than the manifest declares
    b = synthetic_bundle(tmp_path / "mine", key, model="tiny-embedding", version=1, target=FP32)
    big = {f.sha256: (tmp_path / "mine" / f.path).read_bytes() + b"X" * (8 << 20) for f in b.files}
    fake = _fake_registry(_answer(tmp_path / "mine", target=FP32), big)
    cache = tmp_path / "c2"
    edge = _edge_at(fake.url, publisher_keys, cache)
    try:
        m = _model(edge.wait_settled())
        assert m["state"] == "not-ready"
        offered = next(c for c in m["candidates"] if c["target"] == FP32)
        assert "larger than" in offered["detail"]
        partials = list((cache / "downloads").rglob("*"))
        assert sum(p.stat().st_size for p in partials if p.is_file()) < (1 << 20)
    finally:
        edge.stop()
        fake.stop()


def test_an_answer_outside_the_api_is_refused_and_the_node_keeps_trying(
    tmp_path, key, publisher_keys
):
    answers: list[dict] = [{"model": 5, "eligible": "everything"}]
    fake = _fake_registry(answers, {})
    edge = _edge_at(fake.url, publisher_keys, tmp_path / "cache")
    try:
        m = _model(edge.wait(lambda s: "outside its API" in _model(s)["reason"], 30))
        assert m["state"] == "not-ready"
        # the sync loop survived: the next (different) answer is judged on its own
        synthetic_bundle(tmp_path / "other", key, model="query-classifier", version=1, target=FP32)
        answers.append(_answer(tmp_path / "other", target=FP32))
        m = _model(edge.wait(lambda s: "outside its API" not in _model(s)["reason"], 60))
        offered = next(c for c in m["candidates"] if c["target"] == FP32)
        assert "names query-classifier" in offered["detail"]
    finally:
        edge.stop()
        fake.stop()


def test_an_endless_answer_is_cut_off_not_buffered():
    from artifacts.client import MAX_ANSWER_BYTES, RegistryClient
    from artifacts.errors import RegistryError
    from bench.fixtures import cpu_node

    async def endless():  # "endless" to the client: 4x the cap (the server then stops)
        yield b'{"model": "'
        for _ in range(4 * MAX_ANSWER_BYTES >> 20):
            yield b"A" * (1 << 20)

    @post("/v1/resolve", status_code=200)
    async def resolve() -> Stream:
        return Stream(endless(), media_type="application/json")

    fake = ThreadedServer(Litestar([resolve])).start()
    try:
        tracemalloc.start()
        try:
            with RegistryClient(fake.url) as c, pytest.raises(RegistryError, match="exceeds"):
                c.resolve("m", cpu_node(), channel="stable")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 3 * MAX_ANSWER_BYTES  # this process read and held at most ~the cap
    finally:
        fake.stop()


def test_a_compressed_answer_is_refused_before_it_expands():
    import gzip

    from artifacts.client import RegistryClient
    from artifacts.errors import RegistryError

    bomb = gzip.compress(b"[" + b" " * (64 << 20) + b"]")  # 64 MiB of JSON in ~64 KiB

    @get("/v1/models")
    async def models(request: Request) -> Response:
        assert request.headers.get("accept-encoding") == "identity"
        return Response(bomb, media_type="application/json", headers={"Content-Encoding": "gzip"})

    fake = ThreadedServer(Litestar([models])).start()
    try:
        with RegistryClient(fake.url) as c, pytest.raises(RegistryError, match="gzip-encoded"):
            c.list_models()
    finally:
        fake.stop()


def test_a_registry_stalling_before_its_headers_is_reported_not_waited_on_forever(
    tmp_path, publisher_keys
):
    """Headers one byte at a time (each read resets httpx's read timeout) and endless
    ``102 Processing``: the round is abandoned after ``round_timeout_s`` and reported; the node
    does not sit in ``starting`` saying nothing, and never runs a second round beside it."""
    import socket
    import threading
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def dribble(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
                while not stop.is_set():
                    conn.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
                    time.sleep(0.3)
            except OSError:
                pass

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=dribble, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    edge = _edge_at(url, publisher_keys, tmp_path / "cache", registry={"round_timeout_s": 2.0})
    try:
        st = edge.wait(lambda s: _model(s)["state"] != "starting", 20)
        m = _model(st)
        assert m["state"] == "not-ready" and "without finishing" in m["last_sync_error"]
        metrics = httpx.get(f"{edge.url}/metrics").text
        assert 'shipyard_sync_errors_total{kind="registry unreachable"' in metrics
        # an unauthenticated probe and a 503 learn the state, not the registry or the error
        for r in (
            httpx.get(f"{edge.url}/readyz"),
            httpx.post(f"{edge.url}/v1/embeddings", json={"input": "x", "model": "tiny-embedding"}),
        ):
            assert r.status_code == 503 and "not-ready" in r.text, r.text
            assert url not in r.text and "finishing" not in r.text, r.text
        threads = [t.name for t in threading.enumerate() if t.name.startswith("sync-")]
        assert len(threads) <= 1, threads  # one stuck round, not one per retry
    finally:
        stop.set()
        edge.stop()
        srv.close()

"""The registry over real HTTP on loopback, against SQLite and PostgreSQL."""

import base64
import functools
import json
import os
import socket
import threading

import httpx
import pytest

from artifacts.bundle import verify_bundle
from artifacts.client import BundleRef, PullTarget, RegistryClient
from artifacts.errors import (
    AuthError,
    ConflictError,
    DigestMismatchError,
    InputError,
    NotFoundError,
    Unprocessable,
    WrongBundleError,
)
from artifacts.manifest import MANIFEST_FILE, SIGNATURE_FILE, encode
from artifacts.signing import SigningKey, TrustedKeys, key_hint, load_signing_key
from tests.factories import cpu_node, synthetic_bundle


@pytest.fixture
def key(publisher_keys):
    return load_signing_key(publisher_keys[0])


@pytest.fixture
def trusted(publisher_keys):
    return TrustedKeys.from_paths([publisher_keys[1]])


def admin(central) -> RegistryClient:
    return RegistryClient(central.url, central.admin_token)


def push(
    client,
    tmp_path,
    key,
    *,
    model="product-embedder",
    targets=("onnx-fp32", "onnx-int8"),
    passed=True,
):
    number = client.create_version(model)
    for t in targets:
        b = synthetic_bundle(
            tmp_path / f"{model}-{number}-{t}",
            key,
            model=model,
            version=number,
            target=t,
            passed=passed,
        )
        client.push_bundle(verify_bundle(tmp_path / f"{model}-{number}-{t}", None))
        assert b.model.version == number
    return number


def test_health_ready_schema(central):
    assert httpx.get(f"{central.url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{central.url}/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    schema = httpx.get(f"{central.url}/schema/openapi.json").json()
    assert "/v1/resolve" in schema["paths"] and "/v1/blobs/{digest}" in schema["paths"]


def test_push_get_and_idempotent_repush(central, tmp_path, key):
    with admin(central) as c:
        number = push(c, tmp_path, key)
        info = c.get_version("product-embedder", number)
        assert [b.target for b in info.bundles] == ["onnx-fp32", "onnx-int8"]
        assert all(b.quality_passed for b in info.bundles)
        again = verify_bundle(tmp_path / f"product-embedder-{number}-onnx-int8", None)
        _, created = c.push_bundle(again)
        assert created is False
        # different bytes for the same version/target: immutable
        synthetic_bundle(tmp_path / "other", key, version=number, target="onnx-int8")
        with pytest.raises(ConflictError, match="immutable"):
            c.push_bundle(verify_bundle(tmp_path / "other", None))
        assert c.create_version("product-embedder") == number + 1
        assert [m.name for m in c.list_models()] == ["product-embedder"]


def test_tampered_bundles_rejected_nothing_stored(central, tmp_path, key):
    with admin(central) as c:
        number = c.create_version("product-embedder")
        good = synthetic_bundle(tmp_path / "good", key, version=number)
        for entry in good.files:
            c.upload_blob(entry.sha256, tmp_path / "good" / entry.path)
        raw = (tmp_path / "good" / MANIFEST_FILE).read_bytes()
        sig = (tmp_path / "good" / SIGNATURE_FILE).read_text()

        edited = raw.replace(b'"passed":true', b'"passed":false')
        with pytest.raises(Unprocessable, match="different bytes: manifest.json") as e:
            c.put_bundle("product-embedder", number, "onnx-int8", edited, sig)
        assert e.value.status == 422
        stranger = SigningKey.generate()
        forged = json.loads(sig)  # a real OMS signature of this manifest, by a stranger's key
        forged["verificationMaterial"]["publicKey"]["hint"] = key_hint(key.public_key)
        synthetic_bundle(tmp_path / "stranger", stranger, version=number)
        stranger_sig = json.loads((tmp_path / "stranger" / SIGNATURE_FILE).read_text())
        forged["dsseEnvelope"]["signatures"] = stranger_sig["dsseEnvelope"]["signatures"]
        with pytest.raises(Unprocessable, match="does not match"):
            c.put_bundle("product-embedder", number, "onnx-int8", raw, json.dumps(forged))
        with pytest.raises(Unprocessable, match="not a trusted key"):
            c.put_bundle(
                "product-embedder",
                number,
                "onnx-int8",
                (tmp_path / "stranger" / MANIFEST_FILE).read_bytes(),
                (tmp_path / "stranger" / SIGNATURE_FILE).read_text(),
            )
        with pytest.raises(Unprocessable, match="pushed as product-embedder v.* onnx-fp32"):
            c.put_bundle("product-embedder", number, "onnx-fp32", raw, sig)
        synthetic_bundle(tmp_path / "other-model", key, model="query-classifier", version=number)
        other_raw = (tmp_path / "other-model" / MANIFEST_FILE).read_bytes()
        with pytest.raises(Unprocessable, match="names query-classifier"):
            c.put_bundle(
                "product-embedder",
                number,
                "onnx-int8",
                other_raw,
                (tmp_path / "other-model" / SIGNATURE_FILE).read_text(),
            )
        missing = synthetic_bundle(
            tmp_path / "missing", key, version=number, target="openvino-int8"
        )
        with pytest.raises(Unprocessable, match="has not been uploaded"):
            c.put_bundle(
                "product-embedder",
                number,
                "openvino-int8",
                encode(missing),
                (tmp_path / "missing" / SIGNATURE_FILE).read_text(),
            )
        # a blob whose bytes do not match its digest
        digest = good.files[0].sha256
        r = httpx.put(
            f"{central.url}/v1/blobs/sha256:{'0' * 64}",
            content=b"not these bytes",
            headers={
                "Authorization": f"Bearer {central.admin_token}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert r.status_code == 422 and "hash to" in r.json()["detail"]
        assert not c.blob_exists(f"sha256:{'0' * 64}")
        assert c.get_version("product-embedder", number).bundles == []
        # and the untouched original still goes in
        assert c.put_bundle("product-embedder", number, "onnx-int8", raw, sig)[1] is True
        assert c.blob_exists(digest)


def test_path_tricks_in_file_list(central, tmp_path, key):
    import msgspec

    from artifacts.manifest import FileEntry

    with admin(central) as c:
        number = c.create_version("product-embedder")
        m = synthetic_bundle(tmp_path / "b", key, version=number)
        for entry in m.files:
            c.upload_blob(entry.sha256, tmp_path / "b" / entry.path)
        evil = msgspec.structs.replace(
            m,
            files=[
                *m.files,
                FileEntry(path="../../etc/passwd", sha256=m.files[0].sha256, size=m.files[0].size),
            ],
        )
        data = encode(evil)
        sig = (tmp_path / "b" / SIGNATURE_FILE).read_text()
        with pytest.raises(Unprocessable, match="escapes") as e:
            c.put_bundle("product-embedder", number, "onnx-int8", data, sig)
        assert e.value.status == 422


@pytest.mark.parametrize("name", ["Bad", "a..b", "-x", "x" * 65, "a/b", "%2e%2e"])
def test_invalid_names_refused(central, name):
    r = httpx.post(
        f"{central.url}/v1/models/{name}/versions",
        json={},
        headers={"Authorization": f"Bearer {central.admin_token}"},
    )
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"].startswith("application/problem+json")


def test_malformed_oversize_wrong_type(central):
    h = {"Authorization": f"Bearer {central.admin_token}"}
    r = httpx.post(
        f"{central.url}/v1/models/m/versions",
        content=b"{not json",
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    r = httpx.post(
        f"{central.url}/v1/models/m/versions",
        content=b"{}",
        headers={**h, "Content-Type": "text/plain"},
    )
    assert r.status_code == 415
    r = httpx.post(
        f"{central.url}/v1/resolve",
        content=b'{"model": "' + b"x" * (2 << 20) + b'"}',
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = httpx.post(f"{central.url}/v1/models/m/versions", json={"unexpected": 1}, headers=h)
    assert r.status_code == 400
    r = httpx.put(
        f"{central.url}/v1/blobs/sha256:{'1' * 64}",
        content=b"x",
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status_code == 415
    r = httpx.put(
        f"{central.url}/v1/blobs/not-a-digest",
        content=b"x",
        headers={**h, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 422
    assert httpx.get(f"{central.url}/v1/models", headers=h).json() == []


def test_blob_size_limit(tmp_path, publisher_keys):
    from tests.servers import CentralServer

    server = CentralServer(
        tmp_path / "c", None, trusted=[publisher_keys[1]], local_workers=0, max_blob_bytes=1000
    ).start()
    try:
        data = os.urandom(5000)
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = httpx.put(
            f"{server.url}/v1/blobs/{digest}",
            content=data,
            headers={
                "Authorization": f"Bearer {server.admin_token}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert r.status_code == 413
        assert list((tmp_path / "c" / "blobs" / "tmp").iterdir()) == []
    finally:
        server.stop()


def test_blob_range_etag_head(central, tmp_path):
    import hashlib

    data = os.urandom(3 * (1 << 20) + 17)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (tmp_path / "blob").write_bytes(data)
    with admin(central) as c:
        assert c.upload_blob(digest, tmp_path / "blob") is True
        assert c.upload_blob(digest, tmp_path / "blob") is False
    h = {"Authorization": f"Bearer {central.admin_token}"}
    r = httpx.get(f"{central.url}/v1/blobs/{digest}", headers=h)
    assert r.status_code == 200 and r.content == data and r.headers["etag"] == f'"{digest}"'
    r = httpx.get(f"{central.url}/v1/blobs/{digest}", headers={**h, "Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    r = httpx.get(f"{central.url}/v1/blobs/{digest}", headers={**h, "Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = httpx.get(f"{central.url}/v1/blobs/{digest}", headers={**h, "Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    r = httpx.get(f"{central.url}/v1/blobs/{digest}", headers={**h, "If-None-Match": f'"{digest}"'})
    assert r.status_code == 304
    r = httpx.head(f"{central.url}/v1/blobs/{digest}", headers=h)
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(data)
    assert httpx.get(f"{central.url}/v1/blobs/sha256:{'2' * 64}", headers=h).status_code == 404


def test_upload_killed_midway_leaves_nothing_then_retry_succeeds(central, tmp_path):
    import hashlib

    data = os.urandom(4 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    head = (
        f"PUT /v1/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {central.admin_token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", central.port)) as s:
        s.sendall(head + data[: 1 << 20])
    import time

    time.sleep(0.5)
    with admin(central) as c:
        assert not c.blob_exists(digest)
        assert list((central.cfg.blobs_path / "tmp").iterdir()) == []
        (tmp_path / "blob").write_bytes(data)
        assert c.upload_blob(digest, tmp_path / "blob") is True
        assert c.blob_exists(digest)


def test_concurrent_pushes_one_wins(central, tmp_path, key):
    with admin(central) as c:
        number = c.create_version("product-embedder")
        bundles = []
        for i in range(2):
            synthetic_bundle(tmp_path / f"b{i}", key, version=number)
            vb = verify_bundle(tmp_path / f"b{i}", None)
            for entry in vb.manifest.files:
                c.upload_blob(entry.sha256, vb.path / entry.path)
            bundles.append(vb)
    results: list[object] = [None, None]
    barrier = threading.Barrier(2)

    def go(i: int) -> None:
        with admin(central) as c:
            barrier.wait()
            try:
                results[i] = c.push_bundle(bundles[i])[1]
            except ConflictError as exc:
                results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(r).__name__ for r in results) == ["ConflictError", "bool"]
    with admin(central) as c:
        info = c.get_version("product-embedder", number)
        assert len(info.bundles) == 1
        winner = bundles[results.index(True)]
        assert info.bundles[0].manifest_digest == winner.digest


def test_promote_rollback_history_and_gate(central, tmp_path, key):
    with admin(central) as c:
        v1 = push(c, tmp_path, key)
        v2 = push(c, tmp_path, key)
        bad = push(c, tmp_path, key, passed=False)
        ch = c.promote("product-embedder", "stable", v1)
        assert ch.version == v1
        assert c.promote("product-embedder", "stable", v2).version == v2
        with pytest.raises(ConflictError, match="quality gate did not pass") as e:
            c.promote("product-embedder", "stable", bad)
        assert "cosine_min" in str(e.value)
        promoter = RegistryClient(central.url, central.token("promote"))
        with pytest.raises(AuthError, match="admin"):
            promoter.promote("product-embedder", "stable", bad, force=True)
        forced = c.promote("product-embedder", "stable", bad, force=True)
        assert forced.version == bad and forced.history[-1].forced
        assert c.rollback("product-embedder", "stable").version == v2
        assert c.rollback("product-embedder", "stable").version == v1
        with pytest.raises(ConflictError, match="no earlier version"):
            c.rollback("product-embedder", "stable")
        hist = c.channel("product-embedder", "stable").history
        assert [(e.action, e.version) for e in hist] == [
            ("promote", v1),
            ("promote", v2),
            ("promote", bad),
            ("rollback", v2),
            ("rollback", v1),
        ]
        assert [e.seq for e in hist] == [1, 2, 3, 4, 5]
        with pytest.raises(NotFoundError):
            c.promote("product-embedder", "stable", 999)
        empty = c.create_version("product-embedder")
        with pytest.raises(ConflictError, match="no bundles"):
            c.promote("product-embedder", "stable", empty)
        promoter.close()


def test_concurrent_promotes_are_serialised(central, tmp_path, key):
    with admin(central) as c:
        versions = [push(c, tmp_path, key, targets=("onnx-fp32",)) for _ in range(6)]
    barrier = threading.Barrier(len(versions))
    errors = []

    def go(v: int) -> None:
        with admin(central) as c:
            barrier.wait()
            try:
                c.promote("product-embedder", "canary", v)
            except Exception as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

    threads = [threading.Thread(target=go, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with admin(central) as c:
        ch = c.channel("product-embedder", "canary")
    assert [e.seq for e in ch.history] == list(range(1, len(versions) + 1))
    assert sorted(e.version for e in ch.history) == versions
    assert ch.version == ch.history[-1].version
    assert [e.previous for e in ch.history[1:]] == [e.version for e in ch.history[:-1]]


def test_resolve_ranks_and_explains(central, tmp_path, key):
    with admin(central) as c:
        v = push(
            c, tmp_path, key, targets=("onnx-fp32", "onnx-int8", "openvino-int8", "tensorrt-fp16")
        )
        c.promote("product-embedder", "stable", v)
        res = c.resolve("product-embedder", cpu_node(), channel="stable")
        assert res.version == v
        assert [e.candidate.target for e in res.eligible] == [
            "onnx-int8",
            "openvino-int8",
            "onnx-fp32",
        ]
        assert [x.target for x in res.excluded] == ["tensorrt-fp16"]
        assert "no NVIDIA GPU" in res.excluded[0].reason
        assert base64.b64decode(res.eligible[0].manifest).startswith(b"{")
        assert res.eligible[0].files
        res = c.resolve("product-embedder", cpu_node(vnni=False, openvino=False), version=v)
        assert [e.candidate.target for e in res.eligible] == ["onnx-fp32"]
        with pytest.raises(NotFoundError):
            c.resolve("product-embedder", cpu_node(), channel="nope")
        with pytest.raises(NotFoundError):
            c.resolve("unknown-model", cpu_node())


ENDPOINTS = [
    ("GET", "/v1/models", None, "pull"),
    ("POST", "/v1/models/m/versions", {}, "push"),
    ("GET", "/v1/models/m/versions", None, "pull"),
    ("GET", "/v1/models/m/versions/1", None, "pull"),
    ("PUT", "/v1/models/m/versions/1/bundles/onnx-fp32", {"manifest": "", "signature": ""}, "push"),
    ("GET", "/v1/models/m/versions/1/bundles/onnx-fp32", None, "pull"),
    ("GET", "/v1/models/m/channels", None, "pull"),
    ("GET", "/v1/models/m/channels/stable", None, "pull"),
    ("POST", "/v1/models/m/channels/stable/promote", {"version": 1}, "promote"),
    ("POST", "/v1/models/m/channels/stable/rollback", None, "promote"),
    ("POST", "/v1/resolve", {"model": "m", "capabilities": {}}, "pull"),
    ("GET", "/v1/audit", None, "admin"),
    ("POST", "/v1/tokens", {"name": "x", "scopes": ["pull"]}, "admin"),
    ("GET", f"/v1/blobs/sha256:{'3' * 64}", None, "pull"),
]
# Every scope implies pull, so pull endpoints have no "wrong" scope; the others do.
WRONG = {"pull": None, "push": "pull", "promote": "push", "admin": "promote", "build": "pull"}


def test_every_endpoint_auth(central):
    tokens = {s: central.token(s) for s in ("pull", "push", "promote", "admin")}
    for method, path, body, scope in ENDPOINTS:
        kw = {"json": body} if body is not None else {}
        r = httpx.request(method, central.url + path, **kw)
        assert r.status_code == 401, (method, path, r.status_code)
        if WRONG[scope] is not None:
            wrong = tokens[WRONG[scope]]
            r = httpx.request(
                method, central.url + path, headers={"Authorization": f"Bearer {wrong}"}, **kw
            )
            assert r.status_code == 403, (method, path, r.status_code)
        r = httpx.request(
            method, central.url + path, headers={"Authorization": f"Bearer {tokens[scope]}"}, **kw
        )
        assert r.status_code not in (401, 403), (method, path, r.status_code, r.text)
        r = httpx.request(
            method, central.url + path, headers={"Authorization": "Bearer shp_pull_forged"}, **kw
        )
        assert r.status_code == 401


def test_audit_records_actions_and_refusals(central, tmp_path, key):
    with admin(central) as c:
        v = push(c, tmp_path, key)
        c.promote("product-embedder", "stable", v)
        with pytest.raises(ConflictError):
            c.rollback("product-embedder", "stable")
    pull_only = RegistryClient(central.url, central.token("pull", name="edge-1"))
    with pytest.raises(AuthError):
        pull_only.create_version("product-embedder")
    with pytest.raises(AuthError):
        pull_only.audit()
    with admin(central) as c:
        events = c.audit(200)
    actions = {(e.action, e.outcome) for e in events}
    for expected in [
        ("token.create", "ok"),
        ("version.create", "ok"),
        ("blob.push", "ok"),
        ("bundle.push", "ok"),
        ("channel.promote", "ok"),
        ("post.refused", "refused"),
    ]:
        assert expected in actions, expected
    refused = [e for e in events if e.outcome == "refused"]
    assert any(e.actor == "edge-1" and "403" in e.detail for e in refused)
    assert any("no earlier version" in e.detail for e in refused)
    pushes = [e for e in events if e.action == "bundle.push"]
    assert all(e.digest.startswith("sha256:") and e.actor == "admin" for e in pushes)
    pull_only.close()


def test_pull_resumes_verifies_and_is_atomic(central, tmp_path, key, trusted):
    with admin(central) as c:
        v = push(c, tmp_path, key, targets=("onnx-int8",))
        doc = c.bundle_document("product-embedder", v, "onnx-int8")
        ref = BundleRef("product-embedder", v, "onnx-int8")
        downloads = tmp_path / "dl"
        from artifacts.manifest import decode

        m = decode(doc.manifest)
        big = max(m.files, key=lambda f: f.size)
        data = c._http.get(f"{c.url}/v1/blobs/{big.sha256}").content
        downloads.mkdir()
        (downloads / (big.sha256.split(":")[1] + ".part")).write_bytes(
            data[:1000]
        )  # an interrupted download
        # a registry (or anyone on the path) answering with another bundle is refused
        with pytest.raises(WrongBundleError, match="asked for"):
            c.pull_bundle(
                doc,
                PullTarget(tmp_path / "x", downloads),
                trusted,
                expect=BundleRef("other", v, "onnx-int8"),
            )
        assert not (tmp_path / "x").exists()
        got = c.pull_bundle(doc, PullTarget(tmp_path / "out", downloads), trusted, expect=ref)
        assert got.key_id and got.manifest.model.version == v
        assert (tmp_path / "out" / "model.onnx").read_bytes() == data
        # the server's copy corrupted on disk: the download is refused, nothing is placed
        path = central.cfg.blobs_path / "sha256" / big.sha256[7:9] / big.sha256[7:]
        blob = bytearray(path.read_bytes())
        blob[10] ^= 0xFF
        path.write_bytes(bytes(blob))
        with pytest.raises(DigestMismatchError):
            c.pull_bundle(doc, PullTarget(tmp_path / "out2", tmp_path / "dl2"), trusted, expect=ref)
        assert not (tmp_path / "out2").exists()


def test_unreachable_registry_error():
    from artifacts.cli.procs import free_port
    from artifacts.errors import RegistryUnavailableError

    with (
        RegistryClient(f"http://127.0.0.1:{free_port()}", "t") as c,
        pytest.raises(RegistryUnavailableError, match="unreachable"),
    ):
        c.list_models()


def test_problem_json_shape(central):
    r = httpx.get(
        f"{central.url}/v1/models/nope/versions",
        headers={"Authorization": f"Bearer {central.admin_token}"},
    )
    assert r.status_code == 404
    body = json.loads(r.text)
    assert body["status"] == 404 and "model 'nope' not found" in body["detail"]


def test_a_catalog_bound_token_reaches_its_catalogs_alone(central):
    """An embed worker's token bound to ``shoes`` (``central token create --catalog``): every
    catalog route of another catalog answers 403; its own and its other routes work as before;
    a bad binding is refused and creates nothing."""
    with admin(central) as a:
        bound = a.create_token("embed-shoes", ["embed"], catalogs=["shoes"])
        unbound = a.create_token("embed-any", ["embed"])
        before = len(a.tokens())
        for bad in ([], ["a.b"], ["../x"], [f"c{i}" for i in range(65)], ["ok", ""]):
            with pytest.raises(InputError):
                a.create_token("bad", ["embed"], catalogs=bad)
        for wide in (["build"], ["embed", "promote"], ["push"], ["admin"]):
            # those scopes reach model and channel routes a binding does not cover
            with pytest.raises(InputError, match="holds only embed, pull"):
                a.create_token("bad", wide, catalogs=["shoes"])
        assert len(a.tokens()) == before
        info = {t.name: t for t in a.tokens()}
        assert info["embed-shoes"].catalogs == ["shoes"] and info["embed-any"].catalogs is None
        audit = [e for e in a.audit() if e.action == "token.create" and "embed-shoes" in e.subject]
        assert audit and "catalogs shoes" in audit[0].detail
    post = functools.partial(
        httpx.post,
        central.url + "/v1/tokens",
        headers={"Authorization": f"Bearer {central.admin_token}"},
    )
    r = post(json={"name": "echo", "scopes": ["pull"], "catalogs": ["shoes", "hats", "shoes"]})
    assert r.status_code == 201 and r.json()["catalogs"] == ["hats", "shoes"]  # as stored
    for wrong in ("shoes", 3, [3], {"a": 1}):  # a clear 400, never a 500
        r = post(json={"name": "typed", "scopes": ["pull"], "catalogs": wrong})
        assert r.status_code == 400, (wrong, r.status_code, r.text)
    vectors = {"run": 1, "model": "m", "version": 1, "target": "onnx-int8", "items": []}
    routes = [
        ("GET", "/v1/catalogs/{c}", None),
        ("GET", "/v1/catalogs/{c}/runs/1", None),
        ("PUT", "/v1/catalogs/{c}/vectors", vectors),
    ]
    for method, path, body in routes:
        kw = {"json": body} if body is not None else {}

        def call(token: str, catalog: str, method=method, path=path, kw=kw) -> httpx.Response:
            return httpx.request(
                method,
                central.url + path.format(c=catalog),
                headers={"Authorization": f"Bearer {token}"},
                **kw,
            )

        r = call(bound, "hats")
        assert r.status_code == 403, (method, path, r.status_code)
        assert "bound to catalog(s) shoes" in r.json()["detail"]
        assert call(bound, "shoes").status_code not in (401, 403), (method, path)
        assert call(unbound, "hats").status_code not in (401, 403), (method, path)
    # its other routes (an embed worker pulls the model) are unchanged
    r = httpx.get(central.url + "/v1/models", headers={"Authorization": f"Bearer {bound}"})
    assert r.status_code == 200

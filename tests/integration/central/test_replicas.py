"""Several central replicas on one PostgreSQL database and one OCI registry (real processes,
real docker-registry, real PostgreSQL): what goes in through one comes out of the other,
a replica killed mid-upload costs the client a retry, not a half-written blob."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import oras.client
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from artifacts.bundle import verify_bundle
from artifacts.client import BundleRef, PullTarget, RegistryClient
from artifacts.digests import sha256_bytes
from artifacts.errors import RegistryUnavailableError
from artifacts.manifest import MANIFEST_FILE, SIGNATURE_FILE
from artifacts.signing import TrustedKeys, load_signing_key
from bench.oci_registry import OciRegistry
from edge_runtime.channel_metadata import ChannelMetadata
from tests.factories import synthetic_bundle
from tests.servers import CentralProcess

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None,
        reason="Debian's docker-registry is not installed (make test installs it)",
    ),
]


@pytest.fixture
def pg_url():
    from bench.fixtures import create_pg_database, drop_pg_database

    url, name = create_pg_database()
    yield url
    drop_pg_database(name)


@pytest.fixture
def oci(tmp_path):
    with OciRegistry(tmp_path / "oci") as registry:
        yield registry


def replica(tmp_path: Path, name: str, pg_url: str, oci: OciRegistry, *extra: str, keys=None):
    """A replica with its own home; the TUF online keys are the deployment's shared secret."""
    return CentralProcess(
        tmp_path / name,
        "--database-url",
        pg_url,
        "--local-workers",
        "0",
        "--oci-url",
        oci.url,
        "--tuf-online-keys",
        str(keys or tmp_path / "online-keys"),
        *extra,
    )


@pytest.fixture
def pair(tmp_path, pg_url, oci, publisher_keys):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(publisher_keys[1], trusted / Path(publisher_keys[1]).name)
    a = replica(tmp_path, "a", pg_url, oci)
    b = replica(tmp_path, "b", pg_url, oci)
    for r in (a, b):
        (r.home / "trusted_keys").mkdir(parents=True)
        shutil.copy(publisher_keys[1], r.home / "trusted_keys" / Path(publisher_keys[1]).name)
    a.start()  # creates the schema, the TUF repository and the admin token
    b.start()
    yield a, b
    for r in (a, b):
        r.stop()


def oci_manifest(oci: OciRegistry, tag: str) -> dict:
    r = httpx.get(
        f"{oci.url}/v2/shipyard/blobs/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 200, (tag, r.status_code, r.text)
    return r.json()


def blob_rows(pg_url: str) -> set[str]:
    async def rows() -> set[str]:
        engine = create_async_engine(pg_url)
        try:
            async with engine.connect() as conn:
                return {r[0] for r in await conn.execute(text("SELECT digest FROM blobs"))}
        finally:
            await engine.dispose()

    return asyncio.run(rows())


def test_push_through_one_replica_pull_and_verify_through_the_other(
    pair, oci, tmp_path, publisher_keys
):
    a, b = pair
    token = a.admin_token
    with RegistryClient(a.url, token) as ca:
        number = ca.create_version("shop-embedder")
        synthetic_bundle(
            tmp_path / "bundle",
            load_signing_key(publisher_keys[0]),
            model="shop-embedder",
            version=number,
        )
        bundle = verify_bundle(tmp_path / "bundle", None)
        ca.push_bundle(bundle)
        ca.promote("shop-embedder", "stable", number)
    for r in (a, b):
        ready = httpx.get(f"{r.url}/readyz").json()
        assert ready == {"status": "ready", "database": "postgresql", "blobs": "oci"}
    # the bundle is an OCI artifact too: its signed manifest as config, a layer per file
    art = oci_manifest(oci, f"shop-embedder.v{number}.onnx-int8")
    assert art["artifactType"] == "application/vnd.shipyard.bundle.v1"
    assert art["config"]["digest"] == sha256_bytes(bundle.manifest_bytes)
    assert {
        (x["annotations"]["org.opencontainers.image.title"], x["digest"]) for x in art["layers"]
    } == {(f.path, f.sha256) for f in bundle.manifest.files}
    assert art["annotations"]["dev.shipyard.bundle.signature"] == bundle.signature
    # an ORAS client gets the files; with the config (manifest.json) and the signature
    # annotation beside them, the directory verifies as the signed bundle it is
    oras_dir = tmp_path / "oras"
    host = oci.url.removeprefix("http://")
    tag = f"shop-embedder.v{number}.onnx-int8"
    oras.client.OrasClient(hostname=host, insecure=True).pull(
        target=f"{host}/shipyard/blobs:{tag}", outdir=str(oras_dir)
    )
    config = httpx.get(f"{oci.url}/v2/shipyard/blobs/blobs/{art['config']['digest']}").content
    (oras_dir / MANIFEST_FILE).write_bytes(config)
    (oras_dir / SIGNATURE_FILE).write_text(art["annotations"]["dev.shipyard.bundle.signature"])
    trusted_keys = TrustedKeys.from_paths([publisher_keys[1]])
    assert verify_bundle(oras_dir, trusted_keys).manifest.model.version == number
    trusted = TrustedKeys.from_paths([publisher_keys[1]])
    with RegistryClient(b.url, token) as cb:  # the other replica resolves and serves the bytes
        assert cb.channel("shop-embedder", "stable").version == number
        doc = cb.bundle_document("shop-embedder", number, "onnx-int8")
        pulled = cb.pull_bundle(
            doc,
            PullTarget(tmp_path / "pulled", tmp_path / "dl"),
            trusted,
            expect=BundleRef("shop-embedder", number, "onnx-int8"),
        )
    assert pulled.manifest.model.version == number
    # TUF: both replicas serve the same signed metadata, and an edge verifies it from either
    auth = {"Authorization": f"Bearer {token}"}
    for name in ("timestamp.json", "snapshot.json", "model-shop-embedder.json"):
        got = [httpx.get(f"{r.url}/v1/tuf/{name}", headers=auth) for r in (a, b)]
        assert got[0].status_code == 200 and got[0].content == got[1].content
    root = tmp_path / "root.json"
    root.write_bytes(httpx.get(f"{a.url}/v1/tuf/1.root.json", headers=auth).content)
    md = ChannelMetadata(b.url, token, root, tmp_path / "edge-tuf")
    assert md.pointer("shop-embedder", "stable").version == number
    # a promotion through B is signed from A's latest versions (one lock, one sequence)
    with RegistryClient(b.url, token) as cb:
        cb.promote("shop-embedder", "canary", number)
    assert md.pointer("shop-embedder", "canary").version == number
    assert (
        ChannelMetadata(a.url, token, root, tmp_path / "edge-a")
        .pointer("shop-embedder", "canary")
        .version
        == number
    )


def test_a_replica_with_other_online_keys_refuses_to_start(pair, tmp_path, pg_url, oci):
    """Online keys it made itself would sign metadata every edge refuses: it never serves."""
    rogue = replica(tmp_path, "rogue", pg_url, oci, keys=tmp_path / "its-own-keys")
    rogue.start(ready=False)
    assert rogue.proc.wait(60) != 0
    assert "online" in rogue.log_tail() and "key" in rogue.log_tail()


def test_replica_killed_mid_upload_the_client_finishes_on_the_other(pair, tmp_path, pg_url, oci):
    a, b = pair
    data = bytes(range(256)) * (96 << 12)  # 96 MiB
    digest = sha256_bytes(data)
    sent = 0

    def progress(n: int) -> None:
        nonlocal sent
        sent += n
        if sent > (16 << 20) and a.proc.poll() is None:
            a.kill()  # SIGKILL while the body streams in

    with RegistryClient(f"{a.url},{b.url}", a.admin_token) as c:
        assert c.upload_blob(digest, data, progress) is True
        assert c.url == b.url  # it went on with the replica that answers
        assert c.blob_exists(digest)
        got = c.download_blob(digest, tmp_path / "back", size=len(data))
    assert got.read_bytes() == data
    assert blob_rows(pg_url) == {digest}
    # nothing the killed replica half-wrote is visible: only the complete blob is in the registry
    head = httpx.head(f"{oci.url}/v2/shipyard/blobs/blobs/{digest}")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)


def test_registry_down_is_a_clear_503_and_nothing_is_recorded(pair, pg_url, oci):
    a, _ = pair
    oci.stop()
    data = b"written while the registry is down"
    digest = sha256_bytes(data)
    with RegistryClient(a.url, a.admin_token) as c:
        with pytest.raises(RegistryUnavailableError) as err:
            c.upload_blob(digest, data)
        assert err.value.status == 503
    answer = httpx.put(
        f"{a.url}/v1/blobs/{digest}",
        content=data,
        headers={
            "Authorization": f"Bearer {a.admin_token}",
            "Content-Type": "application/octet-stream",
        },
    )
    assert answer.status_code == 503 and answer.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert oci.url in answer.json()["detail"]  # an authenticated caller is told which registry
    ready = wait_readyz(a, 503)  # readiness is re-checked every 2 s
    assert "blob store" in ready.json()["detail"]
    assert oci.url not in ready.text  # details go to the log, not to anonymous callers
    assert digest not in blob_rows(pg_url)
    oci.start()
    wait_readyz(a, 200)


def wait_readyz(replica, status: int, timeout: float = 10.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while (answer := httpx.get(f"{replica.url}/readyz")).status_code != status:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    return answer


def test_blob_redirect_sends_clients_to_the_registry(tmp_path, pg_url, oci):
    """--blob-redirect: GET /v1/blobs answers 307 to the registry; the client follows it
    without central's token and verifies the digest as always."""
    r = replica(tmp_path, "redirecting", pg_url, oci, "--blob-redirect").start()
    try:
        data = b"bytes the registry serves itself" * 1000
        digest = sha256_bytes(data)
        with RegistryClient(r.url, r.admin_token) as c:
            c.upload_blob(digest, data)
            answer = httpx.get(
                f"{r.url}/v1/blobs/{digest}",
                headers={"Authorization": f"Bearer {r.admin_token}"},
            )
            assert answer.status_code == 307
            assert answer.headers["location"] == f"{oci.url}/v2/shipyard/blobs/blobs/{digest}"
            assert c.download_blob(digest, tmp_path / "x").read_bytes() == data
    finally:
        r.stop()


@pytest.mark.slow
def test_a_build_leased_from_one_replica_finishes_through_the_other(pair, tmp_path, tiny_models):
    """Workers given both URLs: the replica that leased the job dies mid-build; heartbeats,
    the upload of the result and the verification go to the other, and the build passes."""
    from artifacts.wire import BuildRequest
    from tests.integration.central.test_builds import (
        small_data,
        start_worker,
        stop_worker,
        upload_model,
        wait_build,
    )

    a, b = pair
    both = f"{a.url},{b.url}"
    cpu = ["onnx-fp32", "onnx-int8", "openvino-int8"]
    workers = []
    try:
        with RegistryClient(a.url, a.admin_token) as ca:
            tokens = [ca.enroll_worker(f"w{i}", cpu) for i in range(2)]
            source = upload_model(ca, tiny_models["embedding"], tmp_path)
            build_id = ca.submit_build(
                BuildRequest(
                    model="tiny-emb",
                    task="embedding",
                    source_blob=source,
                    targets=["onnx-int8"],
                    **small_data(ca, "embedding", tmp_path),
                )
            ).build_id
            workers = [start_worker(both, tokens[i], f"w{i}", tmp_path / f"w{i}") for i in range(2)]
            deadline = time.monotonic() + 120
            while ca.build(build_id).jobs[0].state != "running":
                assert time.monotonic() < deadline
                time.sleep(0.2)
        a.kill()  # the replica that handed out the lease is gone
        with RegistryClient(b.url, (tmp_path / "a" / "admin.token").read_text().strip()) as cb:
            info = wait_build(cb, build_id, timeout=300)
            assert info.state == "passed", info
            job = info.jobs[0]
            assert job.attempts == 1, job.history  # the lease survived the replica
            assert cb.get_version("tiny-emb", info.version).bundles[0].built_by in ("w0", "w1")
    finally:
        for w in workers:
            stop_worker(w)


def test_gc_removes_a_versions_oci_artifact_and_unique_blobs(
    pair, tmp_path, pg_url, oci, publisher_keys
):
    from central.gc.policy import RetentionPolicy
    from central.gc.service import Collector
    from central.settings import CentralConfig

    a, b = pair
    key = load_signing_key(publisher_keys[0])
    bundles = {}
    with RegistryClient(f"{a.url},{b.url}", a.admin_token) as c:
        for _ in range(2):
            number = c.create_version("shop-embedder")
            synthetic_bundle(tmp_path / f"v{number}", key, model="shop-embedder", version=number)
            bundles[number] = verify_bundle(tmp_path / f"v{number}", None)
            c.push_bundle(bundles[number])
        c.promote("shop-embedder", "stable", 2)

    async def collect():
        config = CentralConfig(home=str(a.home), database_url=pg_url, oci_url=oci.url)
        collector = Collector.for_config(config, RetentionPolicy(keep=1, history=0, grace_s=0.0))
        try:
            return await collector.apply(await collector.plan())
        finally:
            await collector.store.close()
            await collector.close()

    result = asyncio.run(collect())
    assert result.versions == ["shop-embedder v1"]
    gone = httpx.get(
        f"{oci.url}/v2/shipyard/blobs/manifests/shop-embedder.v1.onnx-int8",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert gone.status_code == 404
    v1_model = next(f.sha256 for f in bundles[1].manifest.files if f.path == "model.onnx")
    assert httpx.head(f"{oci.url}/v2/shipyard/blobs/blobs/{v1_model}").status_code == 404
    assert v1_model not in blob_rows(pg_url)
    kept = oci_manifest(oci, "shop-embedder.v2.onnx-int8")  # the promoted version stays whole
    for layer in kept["layers"]:
        assert httpx.head(f"{oci.url}/v2/shipyard/blobs/blobs/{layer['digest']}").status_code == 200

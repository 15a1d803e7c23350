"""OciBlobStore against a real Docker Distribution registry (``docker-registry``), real bytes.

What matters: a blob becomes visible only when its bytes hash right (a wrong digest, a failing
or cancelled upload leave nothing, not even an upload session); reads return exactly the asked
bytes; a registry that is down is a 503-class error, not a crash; artifacts come out as ORAS
would write them. A few cases the real registry cannot produce (a 5xx, an ignored Range, an
auth challenge) run against httpx.MockTransport.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from artifacts.digests import sha256_bytes
from artifacts.errors import NotFoundError, ShipyardError, Unprocessable
from bench.oci_registry import OciRegistry
from central.blobs.oci import (
    PATCH_BYTES,
    BlobStoreError,
    BlobStoreUnavailable,
    OciBlobStore,
    parse_www_authenticate,
)
from central.blobs.store import BlobDigestMismatch

MIB = 1 << 20


@pytest.fixture
def oci_registry(tmp_path: Path):
    if shutil.which("docker-registry") is None:
        reason = "docker-registry (Debian's Docker Distribution) is not installed"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    with OciRegistry(tmp_path / "registry") as registry:
        yield registry


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro_fn())


async def chunked(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    """``data`` in chunks of the given sizes, cycling (uneven on purpose)."""
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        yield data[pos : pos + n]
        pos, i = pos + n, i + 1
        await asyncio.sleep(0)


class Counting(httpx.AsyncBaseTransport):
    """A real transport that records each request's method."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.methods: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.methods.append(request.method)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


def test_multi_chunk_roundtrip_reads_and_delete(oci_registry):
    data = os.urandom(20 * MIB + 12345)
    digest = sha256_bytes(data)
    counting = Counting()

    async def go() -> None:
        async with OciBlobStore(oci_registry.url, transport=counting) as store:
            assert await store.stat(digest) is None
            info = await store.put(digest, chunked(data, [1, 777, 65536 + 3, 3 * MIB + 1, 5]))
            assert (info.digest, info.size) == (digest, len(data))
            # chunks are buffered into ~8 MiB PATCHes, then one finalizing PUT
            assert counting.methods.count("PATCH") == -(-len(data) // PATCH_BYTES)
            assert counting.methods.count("PUT") == 1
            assert oci_registry.uploads_settled() == []

            stat = await store.stat(digest)
            assert stat is not None and stat.size == len(data)
            assert await collect(store.read_range(digest, 0, len(data) - 1)) == data
            for start, end in [
                (PATCH_BYTES - 5, PATCH_BYTES + 5),  # across an upload PATCH boundary
                (MIB - 1, MIB),  # across a read chunk boundary
                (123_457, 17_000_001),
                (len(data) - 1, len(data) - 1),
                (0, 0),
            ]:
                assert await collect(store.read_range(digest, start, end)) == data[start : end + 1]
            # a range past the end yields what there is (as the local store does)
            tail = await collect(store.read_range(digest, len(data) - 10, len(data) + 100))
            assert tail == data[-10:]
            with pytest.raises(Unprocessable, match="outside"):  # 416 (with a bogus length)
                await collect(store.read_range(digest, len(data), len(data) + 5))

            assert await store.read_bytes(digest, limit=len(data)) == data
            async with store.local_file(digest) as path:
                assert path.read_bytes() == data
            assert not path.exists()

            assert store.redirect_url(digest) == (
                f"{oci_registry.url}/v2/shipyard/blobs/blobs/{digest}"
            )
            await store.delete(digest)
            assert await store.stat(digest) is None
            await store.delete(digest)  # missing: no error
            with pytest.raises(NotFoundError):
                await collect(store.read_range(digest, 0, 10))
            with pytest.raises(NotFoundError):
                await store.read_bytes(digest, limit=len(data))
            with pytest.raises(NotFoundError):
                async with store.local_file(digest):
                    pass

    run(go)


def test_wrong_digest_leaves_nothing_visible(oci_registry):
    data = os.urandom(3 * MIB)
    claimed = sha256_bytes(b"something else")
    actual = sha256_bytes(data)

    async def go() -> None:
        async with OciBlobStore(oci_registry.url) as store:
            with pytest.raises(BlobDigestMismatch) as err:
                await store.put(claimed, chunked(data, [MIB // 3]))
            assert (err.value.expected, err.value.actual) == (claimed, actual)
            assert err.value.status == 422
            assert await store.stat(claimed) is None
            assert await store.stat(actual) is None
            assert oci_registry.uploads_settled() == []  # the session was cancelled

    run(go)


def test_failing_iterator_propagates_and_leaves_nothing(oci_registry):
    data = os.urandom(PATCH_BYTES + MIB)  # at least one PATCH reached the registry
    digest = sha256_bytes(data)

    async def failing() -> AsyncIterator[bytes]:
        yield data[:PATCH_BYTES]
        yield data[PATCH_BYTES : PATCH_BYTES + 100]
        raise ConnectionResetError("client went away")

    async def go() -> None:
        async with OciBlobStore(oci_registry.url) as store:
            with pytest.raises(ConnectionResetError, match="client went away"):
                await store.put(digest, failing())
            assert await store.stat(digest) is None
            assert oci_registry.uploads_settled() == []

    run(go)


@pytest.mark.parametrize("how", ["task.cancel", "anyio scope"])
def test_cancelled_upload_is_cleaned_up(oci_registry, how):
    """A client that disconnects mid-upload: native asyncio cancellation, or an anyio cancel
    scope (as an ASGI server's task group does), which re-cancels every await inside it, so the
    cleanup DELETE must be shielded."""
    data = os.urandom(PATCH_BYTES + 10)
    digest = sha256_bytes(data)

    async def go() -> None:
        async with OciBlobStore(oci_registry.url) as store:
            patched = asyncio.Event()

            async def stalls() -> AsyncIterator[bytes]:
                yield data[:PATCH_BYTES]
                patched.set()  # asked for more: the first PATCH is done
                await asyncio.sleep(60)
                yield data[PATCH_BYTES:]

            if how == "task.cancel":
                task = asyncio.create_task(store.put(digest, stalls()))
                await asyncio.wait_for(patched.wait(), 10)
                assert len(oci_registry.uploads_in_progress()) == 1
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(store.put, digest, stalls())
                        await asyncio.wait_for(patched.wait(), 10)
                        assert len(oci_registry.uploads_in_progress()) == 1
                        scope.cancel()
                assert scope.cancelled_caught
            assert oci_registry.uploads_settled() == []
            assert await store.stat(digest) is None

    run(go)


def test_malformed_digest_is_refused_before_any_request():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)

    bad = ["sha256:abc", "sha256:" + "A" * 64, "md5:" + "0" * 32, "sha256:" + "0" * 64 + "/x"]

    async def go() -> None:
        async with OciBlobStore(
            "http://registry.invalid", transport=httpx.MockTransport(handler)
        ) as store:
            for digest in bad:
                with pytest.raises(Unprocessable):
                    await store.stat(digest)
                with pytest.raises(Unprocessable):
                    await store.put(digest, chunked(b"x", [1]))
                with pytest.raises(Unprocessable):
                    await collect(store.read_range(digest, 0, 1))
                with pytest.raises(Unprocessable):
                    await store.read_bytes(digest, 10)
                with pytest.raises(Unprocessable):
                    async with store.local_file(digest):
                        pass
                with pytest.raises(Unprocessable):
                    await store.delete(digest)
                with pytest.raises(Unprocessable):
                    store.redirect_url(digest)

    run(go)
    assert seen == []


def test_constructor_validates_repository_and_url():
    for name in ["Shipyard/blobs", "shipyard//blobs", "-blobs", "blobs/", "a..b", ""]:
        with pytest.raises(ValueError, match="repository"):
            OciBlobStore("http://127.0.0.1:1", name)
    with pytest.raises(ValueError, match="credentials"):
        OciBlobStore("http://user:secret@127.0.0.1:1")
    OciBlobStore("http://127.0.0.1:1", "a__b/c-d.e/f--g")  # valid grammar


def test_registry_down_is_unavailable_then_recovers(oci_registry):
    data = os.urandom(100_000)
    digest = sha256_bytes(data)

    async def go() -> None:
        async with OciBlobStore(oci_registry.url, timeout=5.0) as store:
            assert await store.ping() is None
            await store.put(digest, chunked(data, [4096]))
            oci_registry.stop()

            reason = await store.ping()
            assert reason is not None and reason.startswith(f"registry {oci_registry.url}: ")
            assert "ConnectError" in reason
            with pytest.raises(BlobStoreUnavailable) as err:
                await store.stat(digest)
            assert err.value.status == 503 and isinstance(err.value, ShipyardError)
            with pytest.raises(BlobStoreUnavailable):
                await store.put(sha256_bytes(b"new"), chunked(b"new", [1]))
            with pytest.raises(BlobStoreUnavailable):
                await collect(store.read_range(digest, 0, 10))

            oci_registry.start()  # same port, same storage
            assert await store.ping() is None
            assert await store.read_bytes(digest, limit=len(data)) == data

    run(go)


def test_error_classes_map_to_503_and_502():
    """central answers the exception's own status: 503 (retry later) and 502."""
    problems = pytest.importorskip("central.problems")
    assert problems.status_of(BlobStoreUnavailable("registry down")) == 503
    assert problems.status_of(BlobStoreError("registry said nonsense")) == 502
    assert problems.status_of(BlobDigestMismatch("sha256:a", "sha256:b")) == 422


def test_5xx_is_unavailable_and_ping_says_so():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503, json={"errors": [{"code": "UNAVAILABLE", "message": "maintenance"}]}
        )

    async def go() -> None:
        transport = httpx.MockTransport(handler)
        async with OciBlobStore("http://registry.test", transport=transport) as store:
            reason = await store.ping()
            assert reason is not None and "answered 503" in reason and "maintenance" in reason
            with pytest.raises(BlobStoreUnavailable, match="maintenance"):
                await store.stat(sha256_bytes(b"x"))

    run(go)


def test_range_ignored_by_registry_is_sliced_client_side():
    data = bytes(range(256)) * 10_000  # 2.56 MB, several read chunks
    digest = sha256_bytes(data)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["range"].startswith("bytes=")
        return httpx.Response(200, content=data)  # a registry (or proxy) ignoring Range

    async def go() -> None:
        transport = httpx.MockTransport(handler)
        async with OciBlobStore("http://registry.test", transport=transport) as store:
            for start, end in [(0, 9), (1_048_570, 1_048_590), (2_000_000, len(data) - 1)]:
                assert await collect(store.read_range(digest, start, end)) == data[start : end + 1]

    run(go)


def test_push_artifact_and_missing_layer(oci_registry):
    weights, tokenizer = os.urandom(2 * MIB + 1), b'{"vocab": ["a", "b"]}'
    config = json.dumps({"model": "minilm", "version": "1.0.0"}).encode()

    async def go() -> None:
        async with OciBlobStore(oci_registry.url) as store:
            layers = []
            for title, blob, media_type in [
                ("model.onnx", weights, "application/vnd.shipyard.onnx"),
                ("tokenizer.json", tokenizer, "application/json"),
            ]:
                info = await store.put(sha256_bytes(blob), chunked(blob, [MIB]))
                layers.append((media_type, info.size, info.digest, title))
            manifest_digest = await store.push_artifact(
                "minilm-1.0.0-cpu",
                config=config,
                config_media_type="application/vnd.shipyard.bundle.config.v1+json",
                layers=layers,
                annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
                artifact_type="application/vnd.shipyard.bundle.v1",
            )
            manifest = await store.get_manifest("minilm-1.0.0-cpu")
            assert manifest["schemaVersion"] == 2
            assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
            assert manifest["artifactType"] == "application/vnd.shipyard.bundle.v1"
            assert manifest["config"] == {
                "mediaType": "application/vnd.shipyard.bundle.config.v1+json",
                "digest": sha256_bytes(config),
                "size": len(config),
            }
            assert [
                (layer["annotations"]["org.opencontainers.image.title"], layer["digest"])
                for layer in manifest["layers"]
            ] == [
                ("model.onnx", sha256_bytes(weights)),
                ("tokenizer.json", sha256_bytes(tokenizer)),
            ]
            assert manifest["annotations"]["org.opencontainers.image.created"].startswith("2026")
            assert await store.get_manifest(manifest_digest) == manifest  # by digest too
            # the registry serves exactly the bytes we hashed
            async with httpx.AsyncClient() as client:
                raw = await client.get(
                    f"{oci_registry.url}/v2/shipyard/blobs/manifests/minilm-1.0.0-cpu",
                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
                )
            assert "sha256:" + hashlib.sha256(raw.content).hexdigest() == manifest_digest
            assert await store.read_bytes(sha256_bytes(config), limit=1024) == config

            missing = sha256_bytes(b"never uploaded")
            with pytest.raises(Unprocessable, match="weights.bin"):
                await store.push_artifact(
                    "broken",
                    config=config,
                    config_media_type="application/vnd.shipyard.bundle.config.v1+json",
                    layers=[*layers, ("application/octet-stream", 14, missing, "weights.bin")],
                    annotations={},
                    artifact_type="application/vnd.shipyard.bundle.v1",
                )
            with pytest.raises(NotFoundError):
                await store.get_manifest("broken")
            with pytest.raises(Unprocessable, match="tag"):
                await store.push_artifact(
                    "bad:tag",
                    config=config,
                    config_media_type="application/json",
                    layers=layers,
                    annotations={},
                    artifact_type="application/vnd.shipyard.bundle.v1",
                )

    run(go)


def test_read_bytes_over_limit_is_unprocessable(oci_registry):
    data = os.urandom(2 * MIB)
    digest = sha256_bytes(data)

    async def go() -> None:
        async with OciBlobStore(oci_registry.url) as store:
            await store.put(digest, chunked(data, [MIB]))
            with pytest.raises(Unprocessable, match="larger than"):
                await store.read_bytes(digest, limit=MIB)
            assert await store.read_bytes(digest, limit=len(data)) == data
            empty = sha256_bytes(b"")  # the empty blob: no PATCH at all, just the PUT
            assert (await store.put(empty, chunked(b"", [1]))).size == 0
            stat = await store.stat(empty)
            assert stat is not None and stat.size == 0
            assert await store.read_bytes(empty, limit=0) == b""

    run(go)


def test_parse_www_authenticate():
    scheme, params = parse_www_authenticate(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:shipyard/blobs:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:shipyard/blobs:pull,push",  # the comma inside quotes stays
    }
    assert parse_www_authenticate('Basic realm="Registry Realm"') == (
        "basic",
        {"realm": "Registry Realm"},
    )
    assert parse_www_authenticate('BEARER Realm = "a\\"b", error=insufficient_scope') == (
        "bearer",
        {"realm": 'a"b', "error": "insufficient_scope"},
    )
    assert parse_www_authenticate("") == ("", {})


def test_bearer_challenge_fetches_a_token_once_and_retries():
    token_requests: list[httpx.Request] = []
    data = b"hello"
    digest = sha256_bytes(data)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            token_requests.append(request)
            return httpx.Response(200, json={"token": "t0k3n"})
        if request.headers.get("authorization") != "Bearer t0k3n":
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.test/token?v=2",'
                    'service="reg",scope="repository:shipyard/blobs:pull"'
                },
            )
        return httpx.Response(200, headers={"Content-Length": str(len(data))}, content=data)

    async def go() -> None:
        transport = httpx.MockTransport(handler)
        async with OciBlobStore(
            "http://registry.test", username="ci", password="pw", transport=transport
        ) as store:
            info = await store.stat(digest)
            assert info is not None and info.size == len(data)
            assert await store.stat(digest) is not None  # the cached token is reused
            assert await store.ping() is None

    run(go)
    assert len(token_requests) == 1
    sent = token_requests[0]
    assert sent.url.params["v"] == "2"
    assert sent.url.params["service"] == "reg"
    assert sent.url.params["scope"] == "repository:shipyard/blobs:pull"
    assert sent.headers["authorization"].startswith("Basic ")


def test_refused_credentials_are_a_registry_error_not_a_loop():
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("authorization", ""))
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async def go() -> None:
        transport = httpx.MockTransport(handler)
        async with OciBlobStore(
            "http://registry.test", username="ci", password="wrong", transport=transport
        ) as store:
            with pytest.raises(BlobStoreError, match="401"):
                await store.stat(sha256_bytes(b"x"))
            reason = await store.ping()
            assert reason is not None and "401" in reason

    run(go)
    assert calls[:2] == ["", calls[1]] and calls[1].startswith("Basic ")
    assert len(calls) <= 4


def test_credentials_never_leave_for_another_host():
    """A registry (or whoever answers as it) that puts the upload session on another host, or
    asks for the credentials over plain http elsewhere, is refused: nothing is sent there."""
    sent_to: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_to.append(request.url.host)
        if request.url.path.endswith("/uploads/"):
            return httpx.Response(202, headers={"Location": "http://evil.test/upload/1"})
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="http://evil.test/token"'}
        )

    async def go() -> None:
        transport = httpx.MockTransport(handler)
        async with OciBlobStore(
            "http://registry.test", username="ci", password="pw", transport=transport
        ) as store:
            data = b"x" * 10
            with pytest.raises(BlobStoreError, match="another host"):
                await store.put(sha256_bytes(data), chunked(data, [5]))
            with pytest.raises(BlobStoreError, match="plain http"):
                await store.stat(sha256_bytes(data))

    run(go)
    assert "evil.test" not in sent_to


def test_a_storage_host_the_registry_redirects_to_gets_no_credentials():
    """Only the registry's own origin may challenge for credentials: a 401 from the host a
    blob read was redirected to is an error, not a request for our password."""
    seen: dict[str, list[str | None]] = {"registry.test": [], "storage.test": []}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host].append(request.headers.get("authorization"))
        if request.url.host == "registry.test":
            return httpx.Response(307, headers={"Location": "http://storage.test/blob"})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="s"'})

    async def go() -> None:
        transport = httpx.MockTransport(handler)
        async with OciBlobStore(
            "http://registry.test", username="ci", password="pw", transport=transport
        ) as store:
            with pytest.raises(BlobStoreError):
                await store.read_bytes(sha256_bytes(b"x"), 10)

    run(go)
    assert seen["storage.test"] and all(a is None for a in seen["storage.test"])


def test_an_endless_answer_is_cut_off_not_buffered():
    """A registry answering GET /v2/ (what anonymous /readyz triggers) with an endless body:
    refused after MAX_ANSWER_BYTES, never held whole in memory."""
    from central.blobs.oci import MAX_ANSWER_BYTES

    sent = 0

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self):
            nonlocal sent
            while sent < 64 * MAX_ANSWER_BYTES:
                sent += 1 << 20
                yield b"{" * (1 << 20)

    async def go() -> None:
        transport = httpx.MockTransport(lambda r: httpx.Response(200, stream=Endless()))
        async with OciBlobStore("http://registry.test", transport=transport) as store:
            reason = await store.ping()
            assert reason is not None and "exceeds" in reason

    run(go)
    assert sent <= MAX_ANSWER_BYTES + (2 << 20)

"""An edge node pulling bundle bytes from an OCI mirror (a real docker-registry): metadata and
verification from central, bytes from the mirror; a mirror that is down or serves wrong bytes
costs a fallback to central, never a bad bundle, and never sees central's token."""

from __future__ import annotations

import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from artifacts.cli.procs import free_port
from bench.oci_registry import OciRegistry
from tests.integration.edge_runtime.conftest import edge_config, push_version
from tests.servers import CentralServer, EdgeServer

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None,
    reason="Debian's docker-registry is not installed (make test installs it)",
)


@pytest.fixture
def oci_central(tmp_path, publisher_keys, tiny_builds, key):
    with OciRegistry(tmp_path / "oci") as oci:
        server = CentralServer(
            tmp_path / "central",
            None,
            trusted=[publisher_keys[1]],
            local_workers=0,
            oci_url=oci.url,
        ).start()
        try:
            from artifacts.client import RegistryClient

            with RegistryClient(server.url, server.admin_token) as c:
                out, _ = tiny_builds["embedding"]
                bundles = [out / t for t in ("onnx-fp32", "onnx-int8")]
                c.promote(
                    "tiny-embedding", "stable", push_version(c, "tiny-embedding", bundles, key)
                )
            yield server, oci
        finally:
            server.stop()


def blob_gets(server: CentralServer) -> float:
    """How many blob downloads central itself served (its Prometheus counter)."""
    text = httpx.get(f"{server.url}/metrics").text
    pattern = r'shipyard_central_requests_total\{method="GET",route="/v1/blobs/[^"]*",status="20[06]"\} (\S+)'
    return sum(float(v) for v in re.findall(pattern, text))


def start_edge(server, publisher_keys, cache, mirror: str) -> EdgeServer:
    cfg = edge_config(
        server.url,
        server.token("pull", name="edge"),
        publisher_keys[1],
        (("tiny-embedding", "stable"),),
        cache,
        registry={"blob_mirror": mirror},
    )
    return EdgeServer(cfg).start()


class HostileMirror:
    """Answers every blob GET with bytes that are not the blob; records the headers it saw."""

    def __init__(self) -> None:
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(dict(self.headers))
                body = b"not the blob you are looking for" * 64
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_bytes_come_from_the_mirror_and_are_verified(oci_central, publisher_keys, tmp_path):
    server, oci = oci_central
    before = blob_gets(server)
    edge = start_edge(server, publisher_keys, tmp_path / "cache", oci.url)
    try:
        st = edge.wait_ready()
        assert st["models"][0]["state"] == "ready"
        assert edge.node.client.mirror_failures == 0
        assert blob_gets(server) == before  # central served no bytes: the mirror did
        r = httpx.post(
            f"{edge.url}/v1/embeddings", json={"input": "red shoes", "model": "tiny-embedding"}
        )
        assert r.status_code == 200
    finally:
        edge.stop()


def test_a_mirror_that_is_down_falls_back_to_central(oci_central, publisher_keys, tmp_path):
    server, _ = oci_central
    before = blob_gets(server)
    edge = start_edge(server, publisher_keys, tmp_path / "cache", f"http://127.0.0.1:{free_port()}")
    try:
        edge.wait_ready()
        assert edge.node.client.mirror_failures >= 1
        assert blob_gets(server) > before
    finally:
        edge.stop()


def test_a_mirror_serving_wrong_bytes_is_caught_and_never_sees_the_token(
    oci_central, publisher_keys, tmp_path
):
    server, _ = oci_central
    mirror = HostileMirror()
    edge = start_edge(server, publisher_keys, tmp_path / "cache", mirror.url)
    try:
        st = edge.wait_ready()
        assert st["models"][0]["state"] == "ready"  # every digest checked: central's bytes
        assert edge.node.client.mirror_failures >= 1 and mirror.seen
        assert all("Authorization" not in h and "authorization" not in h for h in mirror.seen)
        r = httpx.post(
            f"{edge.url}/v1/embeddings", json={"input": "red shoes", "model": "tiny-embedding"}
        )
        assert r.status_code == 200
    finally:
        edge.stop()
        mirror.close()

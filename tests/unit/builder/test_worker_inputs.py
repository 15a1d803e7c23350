"""A build worker's input downloads are capped: a job names its inputs by digest only, so a
compromised central streaming an endless blob is stopped at ``max_input_bytes``, not at a full
disk, and nothing of it stays."""

import hashlib
from http.server import BaseHTTPRequestHandler

import pytest

from artifacts.errors import SizeMismatchError
from builder.worker import Worker, WorkerConfig
from tests.servers import handler_server

BLOB = b"x" * 300_000
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class Blobs(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != f"/v1/blobs/{DIGEST}":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        try:
            for i in range(0, len(BLOB), 16_384):
                self.wfile.write(BLOB[i : i + 16_384])
        except OSError:
            pass  # the worker hung up: expected when it refuses

    def log_message(self, *_args):
        pass


@pytest.fixture
def central():
    with handler_server(Blobs) as url:
        yield url


def worker(central: str, tmp_path, cap: int) -> Worker:
    cfg = WorkerConfig(
        central=central, token="t", name="w", work_dir=str(tmp_path), max_input_bytes=cap
    )
    return Worker(cfg)


def test_an_input_past_the_cap_is_refused_and_discarded(central, tmp_path):
    w = worker(central, tmp_path, cap=100_000)
    try:
        with pytest.raises(SizeMismatchError, match="larger than the 100000 bytes"):
            w._blob(DIGEST)
        blobs = tmp_path / "blobs"
        assert not blobs.exists() or list(blobs.iterdir()) == []  # no partial download left
    finally:
        w.client.close()


def test_an_input_within_the_cap_is_downloaded_and_verified(central, tmp_path):
    w = worker(central, tmp_path, cap=len(BLOB) + 1)
    try:
        path = w._blob(DIGEST)
        assert path.read_bytes() == BLOB
    finally:
        w.client.close()

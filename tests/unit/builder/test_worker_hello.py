"""A build worker registering with a busy central: a 429 is transient, and the worker waits
at least the ``Retry-After`` central gave (capped) before trying again."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import pytest

from builder.worker import Worker, WorkerConfig
from tests.servers import handler_server


class BusyOnce(BaseHTTPRequestHandler):
    hellos: ClassVar[list[int]] = []

    def _answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):  # the key registration
        self.rfile.read(int(self.headers["Content-Length"]))
        info = {"name": "w", "allowed_targets": ["onnx-fp32"]}
        self._answer(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def do_POST(self):  # the hello: busy the first time
        self.rfile.read(int(self.headers["Content-Length"]))
        BusyOnce.hellos.append(1)
        if len(BusyOnce.hellos) == 1:
            problem = {"title": "Overloaded", "status": 429, "detail": "busy"}
            headers = {"Content-Type": "application/problem+json", "Retry-After": "7"}
            self._answer(429, json.dumps(problem).encode(), headers)
        else:
            self._answer(204)

    def log_message(self, *args):
        pass


class Waits(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waited: list[float] = []

    def wait(self, timeout=None) -> bool:
        self.waited.append(timeout)
        return False


@pytest.fixture
def central():
    BusyOnce.hellos = []
    with handler_server(BusyOnce) as url:
        yield url


def test_a_busy_central_is_retried_after_its_retry_after(central, tmp_path):
    w = Worker(
        WorkerConfig(
            central=central, token="t", name="w", work_dir=str(tmp_path), targets=["onnx-fp32"]
        )
    )
    w.stop_event = Waits()
    try:
        w.hello()
    finally:
        w.client.close()
    assert len(BusyOnce.hellos) == 2  # registered on the second try, still running
    assert w.stop_event.waited == [7.0]
    assert not w.stop_event.is_set()

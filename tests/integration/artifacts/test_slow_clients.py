"""Slow clients against a real uvicorn on loopback with the read clocks of
:mod:`artifacts.slow_clients`: a silent or trickling client is cut off; honest ones are not."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest
import uvicorn

from artifacts.cli.procs import free_port
from artifacts.slow_clients import read_timeout_protocol

TIMEOUT_S = 0.5
RATE = 2000  # bytes/s: 1000 bytes per window

pytestmark = pytest.mark.timeout(60)


class App:
    """Reads the whole body; answers its length. Records whether a client went away."""

    def __init__(self) -> None:
        self.disconnects = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = str(size).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def served():
    app = App()
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        http=read_timeout_protocol(TIMEOUT_S, RATE),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    yield app, port
    server.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything until the server closes (the 5 s socket timeout fails the test otherwise)."""
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def request(length: int) -> bytes:
    return (
        f"POST /x HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


def test_a_silent_connection_is_closed_with_408(served):
    _, port = served
    s = connect(port)
    t0 = time.monotonic()
    answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert TIMEOUT_S * 0.8 < time.monotonic() - t0 < TIMEOUT_S * 4


def test_trickled_headers_are_cut_off(served):
    """More bytes do not buy more time: the clock runs from a request's first byte."""
    _, port = served
    s = connect(port)
    t0 = time.monotonic()
    for byte in request(0):  # 0.05 s a byte: the headers would take several seconds
        if select.select([s], [], [], 0)[0]:  # the server answered: stop sending
            break
        s.sendall(bytes([byte]))
        time.sleep(0.05)
    assert read_all(s).startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - t0 < TIMEOUT_S * 4


def test_a_stalled_body_is_cut_off_and_the_app_sees_the_client_go(served):
    app, port = served
    s = connect(port)
    s.sendall(request(100_000) + b"x" * 10)
    assert read_all(s) == b""  # closed without an answer: the app owned the response
    deadline = time.monotonic() + 5
    while app.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.disconnects == 1


def test_a_slow_but_steady_body_is_read_in_full(served):
    _, port = served
    s = connect(port)
    size = 4 * RATE  # ~2 s at twice the minimum rate: several windows
    s.sendall(request(size))
    for _ in range(size // 400):
        s.sendall(b"x" * 400)
        time.sleep(0.1)
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(str(size).encode())


def test_a_keep_alive_connection_is_not_timed_between_requests(served):
    _, port = served
    s = connect(port)
    for _ in range(2):
        s.sendall(request(2) + b"{}")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        time.sleep(TIMEOUT_S * 2)  # idle longer than the read clock, within keep-alive (5 s)
    s.sendall(request(2) + b"{}")
    assert s.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_zero_turns_the_clocks_off():
    assert read_timeout_protocol(0) == "auto"

"""Slow clients against a real uvicorn on loopback with the read clocks of
:mod:`artifacts.slow_clients`: a silent or trickling client is cut off; honest ones are not."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time

import pytest
import uvicorn

from artifacts.cli.procs import free_port
from artifacts.http_protocol import http_protocol
from artifacts.slow_clients import ReadClocks

TIMEOUT_S = 0.5
RATE = 2000  # bytes/s: 1000 bytes per window

pytestmark = pytest.mark.timeout(60)


class App:
    """Reads the whole body and answers its length; ``/refuse`` answers 401 without reading it,
    ``/sleep`` first sleeps 1.2 s (a slow handler), ``/big`` answers 64 MB. Records whether a
    client went away."""

    def __init__(self) -> None:
        self.disconnects = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/refuse":
            await self._answer(send, 401, b"no")
            return
        if scope["path"] == "/big":
            await self._answer(send, 200, b"x" * (64 << 20))
            return
        if scope["path"] == "/sleep":
            await asyncio.sleep(1.2)
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self._answer(send, 200, str(size).encode())

    @staticmethod
    async def _answer(send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
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
        http=http_protocol(TIMEOUT_S, min_body_rate=RATE),  # as served: one write per response too
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


def request(length: int, path: str = "/x", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {length}\r\n\r\n"
    ).encode()


def closed_within(s: socket.socket, seconds: float, send: bytes = b"", every: float = 0.1) -> bool:
    """Keep sending ``send`` every ``every`` s (reading whatever comes) until the server closes
    the connection; whether it did within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if select.select([s], [], [], 0)[0] and not s.recv(65536):
                return True
            if send:
                s.sendall(send)
        except OSError:  # reset: closed
            return True
        time.sleep(every)
    return False


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


def test_each_request_has_its_own_window_on_one_connection(served):
    """The clock is one timer per connection, moved lazily: a window that restarted after the
    timer was armed is not cut short by it, and a later request's window still runs out."""
    _, port = served
    s = connect(port)
    s.sendall(request(2) + b"{}")  # the first window was armed on connect
    assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    time.sleep(TIMEOUT_S * 0.6)
    head = request(2)
    s.sendall(head[:10])  # a new window: the armed timer fires inside it and must re-arm
    time.sleep(TIMEOUT_S * 0.7)
    s.sendall(head[10:] + b"{}")
    assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    t0 = time.monotonic()
    s.sendall(request(2)[:10])  # headers never complete: 408 about one window later
    assert read_all(s).startswith(b"HTTP/1.1 408 ")
    assert TIMEOUT_S * 0.8 < time.monotonic() - t0 < TIMEOUT_S * 4


def test_zero_turns_the_clocks_off():
    assert http_protocol(0, one_write=False) == "auto"
    assert not issubclass(http_protocol(0), ReadClocks)  # one write per response only
    assert issubclass(http_protocol(1), ReadClocks)


def test_blank_lines_between_requests_do_not_hold_the_connection(served):
    """The parser skips CRLF before a request without starting one: the clock starts anyway."""
    _, port = served
    s = connect(port)
    s.sendall(request(2) + b"{}")
    assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert closed_within(s, TIMEOUT_S * 4, send=b"\r\n", every=0.1)


def test_a_body_nobody_reads_after_the_answer_gets_one_window(served):
    """An endless body behind a 401 (answered without reading it), sent fast enough for any
    rate limit: the connection still closes."""
    _, port = served
    s = connect(port)
    s.sendall(request(10**12, "/refuse"))
    assert closed_within(s, TIMEOUT_S * 6, send=b"x" * 2000, every=0.05)


def test_pipelined_requests_behind_a_slow_answer_are_all_answered(served):
    """uvicorn stops reading pipelined requests while the one before is answered: that wait is
    not held against the client's headers clock."""
    _, port = served
    s = connect(port)
    s.sendall(request(0, "/sleep") + request(0) + b"POST /x HT")
    time.sleep(0.3)
    s.sendall(b"TP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n")
    got = b""
    deadline = time.monotonic() + 10
    while got.count(b"HTTP/1.1 200 ") < 3 and time.monotonic() < deadline:
        chunk = s.recv(65536)
        assert chunk, f"closed after {got.count(b'HTTP/1.1 200 ')} answers"
        got += chunk
    assert got.count(b"HTTP/1.1 200 ") == 3


def test_a_client_waiting_for_100_continue_is_not_cut_off(served):
    _, port = served
    s = connect(port)
    s.sendall(request(5, "/sleep", "expect: 100-continue\r\n"))
    assert s.recv(65536).startswith(b"HTTP/1.1 100 ")  # after the slow handler's 1.2 s
    s.sendall(b"12345")
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"5")


def test_a_client_that_stops_reading_its_answer_is_dropped(served):
    _, port = served
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.settimeout(5)
    s.sendall(b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n")
    time.sleep(TIMEOUT_S * 4)  # not reading: the server's buffer fills, its write clock runs
    got = 0
    try:
        while chunk := s.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        pass
    assert got < 64 << 20  # dropped, not sent in full once the client read again

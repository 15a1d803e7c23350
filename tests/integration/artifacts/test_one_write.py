"""One write per small response (:mod:`artifacts.one_write`) against a real uvicorn on loopback:
the header block and the body leave in one write, and every other response shape (HEAD, a
streamed body, a large body, an app that fails after its headers, pipelined requests, the 408
of a slow client) still arrives whole and in order."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn

from artifacts.cli.procs import free_port
from artifacts.http_protocol import http_protocol
from artifacts.one_write import JOIN_MAX_BYTES, HeldHeaders

pytestmark = pytest.mark.timeout(60)


class Recording:
    """The real transport, with its writes recorded."""

    def __init__(self, transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name):
        return getattr(self.transport, name)


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    while (await receive()).get("more_body"):
        pass
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/fail":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("the app failed after its headers")
    body = b"x" * (JOIN_MAX_BYTES + 1) if path == "/big" else path.encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def served():
    """A real uvicorn with the served protocol; ``writes`` holds each connection's writes."""
    writes: list[list[bytes]] = []
    base = http_protocol(0.5)

    class Protocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            recording = Recording(self.transport._transport)
            self.transport._transport = recording
            writes.append(recording.writes)

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="critical", lifespan="off", http=Protocol
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port, writes
    server.should_exit = True
    thread.join(10)


def read_response(s: socket.socket, until: bytes) -> bytes:
    data = b""
    while until not in data:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return data


def get(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode()


def test_a_small_response_is_one_write(served):
    port, writes = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        for path in ("/a", "/second-on-the-same-connection"):
            s.sendall(get("GET", path))
            data = read_response(s, path.encode())
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(path.encode())
    assert len(writes) == 1
    assert len(writes[0]) == 2  # one per response: status line, headers and body together
    assert all(w.startswith(b"HTTP/1.1 200 OK") for w in writes[0])
    assert writes[0][1].endswith(b"/second-on-the-same-connection")


def test_a_head_response_leaves_at_the_end_of_the_loop_step(served):
    port, writes = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        s.sendall(get("HEAD", "/a"))
        data = read_response(s, b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n")
    assert b"content-length: 2" in data
    assert writes[0] == [data]  # the held header block, flushed once (HEAD has no body)


def test_a_streamed_body_arrives_whole_and_in_order(served):
    port, writes = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        s.sendall(get("GET", "/stream"))
        data = read_response(s, b"0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"
    assert writes[0][0].startswith(b"HTTP/1.1 200 OK") and writes[0][0].endswith(b"one,\r\n")


def test_a_large_body_is_not_copied_onto_its_headers(served):
    port, writes = served
    size = JOIN_MAX_BYTES + 1
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        s.sendall(get("GET", "/big"))
        data = b""
        while len(data) < size or b"\r\n\r\n" not in data:
            data += s.recv(1 << 20)
            _, _, body = data.partition(b"\r\n\r\n")
            if len(body) >= size:
                break
    assert body == b"x" * size
    assert writes[0][0].endswith(b"\r\n\r\n") and len(writes[0][1]) == size


def test_an_app_failing_after_its_headers_closes_the_connection_after_them(served):
    port, _ = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        s.sendall(get("GET", "/fail"))
        data = read_response(s, b"never")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")  # the held headers were flushed, then closed


def test_pipelined_requests_are_answered_in_order(served):
    port, _ = served
    paths = [f"/p{i}" for i in range(5)]
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        s.sendall(b"".join(get("GET", p) for p in paths))
        data = read_response(s, paths[-1].encode())
    assert [p.encode() in data for p in paths] == [True] * 5
    positions = [data.index(p.encode() + b"HTTP/") for p in paths[:-1]]
    assert positions == sorted(positions)


def test_a_slow_client_still_gets_its_408(served):
    port, _ = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        s.sendall(b"GET /a HTTP/1.1\r\nhost")  # and then nothing
        data = read_response(s, b"never")
    assert data.startswith(b"HTTP/1.1 408 ")


def test_held_headers_keep_the_order_of_every_write():
    """Unit: a header block waits for the next write or the end of the loop step; nothing else
    waits; close flushes, abort drops."""

    class Transport:
        def __init__(self) -> None:
            self.out: list[bytes] = []
            self.closed = self.aborted = False

        def write(self, data) -> None:
            self.out.append(bytes(data))

        def is_closing(self) -> bool:
            return self.closed or self.aborted

        def close(self) -> None:
            self.closed = True

        def abort(self) -> None:
            self.aborted = True

        def get_write_buffer_size(self) -> int:
            return 0

        def get_extra_info(self, name):
            return ("peer", name)

        def write_eof(self) -> None:
            self.out.append(b"<eof>")

    async def scenario() -> None:
        t = Transport()
        held = HeldHeaders(t, asyncio.get_running_loop())  # type: ignore[arg-type]
        held.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert t.out == [] and held.get_write_buffer_size() == 19
        held.write(b"body")
        assert t.out == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        held.write(b"more")  # not a header block: straight through
        assert t.out[-1] == b"more"
        held.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await asyncio.sleep(0)  # the end of the loop step
        assert t.out[-1] == b"HTTP/1.1 204 No Content\r\n\r\n" and len(t.out) == 3
        held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        held.close()
        assert t.out[-1] == b"HTTP/1.1 100 Continue\r\n\r\n" and t.closed
        await asyncio.sleep(0)
        assert len(t.out) == 4  # the step's flush found nothing left
        assert held.get_extra_info("peername") == ("peer", "peername")

        t2 = Transport()
        held2 = HeldHeaders(t2, asyncio.get_running_loop())  # type: ignore[arg-type]
        held2.write(b"HTTP/1.1 200 OK\r\n\r\n")
        held2.abort()
        await asyncio.sleep(0)
        assert t2.out == [] and t2.aborted

        # a body chunk that merely starts with "HTTP/" is not held (not a header block)
        t3 = Transport()
        held3 = HeldHeaders(t3, asyncio.get_running_loop())  # type: ignore[arg-type]
        held3.write(b"HTTP/ is a protocol, says this product text")
        assert t3.out == [b"HTTP/ is a protocol, says this product text"]
        held3.write(b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 4000 + b"\r\n")  # over HOLD_MAX
        assert len(t3.out) == 2
        # a held block joins only while the two stay small; writelines and write_eof keep order
        held3.write(b"HTTP/1.1 200 OK\r\n\r\n")
        held3.write(b"b" * JOIN_MAX_BYTES)
        assert t3.out[2] == b"HTTP/1.1 200 OK\r\n\r\n" and len(t3.out[3]) == JOIN_MAX_BYTES
        held3.write(b"HTTP/1.1 200 OK\r\n\r\n")
        held3.writelines([b"a", b"b"])
        assert t3.out[-1] == b"HTTP/1.1 200 OK\r\n\r\nab"
        held3.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        held3.write_eof()
        assert t3.out[-2:] == [b"HTTP/1.1 204 No Content\r\n\r\n", b"<eof>"]

    asyncio.run(scenario())

"""The c=1 floor server's ASGI app (the rungs themselves run only in ``bench.c1_account``)."""

from __future__ import annotations

import asyncio

from bench.http_floor import floor_app


def call(app, method: str, path: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    chunks = [body[:3], body[3:]]  # the body arrives in two messages
    sent: list[dict] = []

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": method, "path": path}, receive, send))
    start, done = sent
    return start["status"], dict(start["headers"]), done["body"]


def test_a_post_reads_the_whole_body_runs_the_step_and_answers_the_recording():
    seen: list[bytes] = []

    def step(body: bytes) -> float:
        seen.append(body)
        return 0.25

    app = floor_app(b'{"data":[]}', [(b"content-type", b"application/json")], step)
    status, headers, body = call(app, "POST", "/v1/embeddings", b'{"input":"usb-c charger"}')
    assert (status, body) == (200, b'{"data":[]}')
    assert headers[b"content-length"] == b"11"
    assert seen == [b'{"input":"usb-c charger"}']
    call(app, "POST", "/v1/embeddings", b"{}")
    assert call(app, "GET", "/stats")[2] == b"0.500000000 2"  # seconds in the step, calls
    assert call(app, "GET", "/")[2] == b"ok"


def test_the_floor_rung_has_no_step():
    app = floor_app(b"x", [])
    assert call(app, "POST", "/v1/embeddings", b"abcdef")[2] == b"x"
    assert call(app, "GET", "/stats")[2] == b"0.000000000 0"

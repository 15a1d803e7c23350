"""The shedding middleware in isolation (a stub node, real metrics): who is refused unparsed,
and how a client that ignores Retry-After is held to it."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from edge_runtime.http import shedding
from edge_runtime.http.shedding import ShedWhenSaturated
from edge_runtime.metrics import Metrics

pytestmark = pytest.mark.timeout(30)


class App:
    """The inner app: answers ``status`` (with a Retry-After on 429) and counts its calls."""

    def __init__(self, status: int = 200) -> None:
        self.status, self.calls = status, 0

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        headers = [(b"retry-after", b"3")] if self.status == 429 else []
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})


def node(queued: int, limit: float, item_tokens: float = 0.0):
    adm = SimpleNamespace(queued_tokens=queued, limit=limit, retry_after=lambda: 1.0)
    batcher = SimpleNamespace(item_tokens=item_tokens)
    return SimpleNamespace(
        models={"m": SimpleNamespace(admission=adm, batcher=batcher)}, metrics=Metrics()
    )


def call(mw, port: int = 1000, path: str = "/v1/embeddings", method: str = "POST") -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "client": ("10.0.0.1", port)}
    asyncio.run(mw(scope, None, send))
    return sent


def status(sent: list[dict]) -> int:
    return sent[0]["status"]


def test_no_room_for_a_typical_request_is_refused_unparsed():
    app = App()
    mw = ShedWhenSaturated(app, node(queued=950, limit=1000, item_tokens=60))
    sent = call(mw)
    assert status(sent) == 429 and app.calls == 0  # 950 + 60 > 1000: refused before parsing
    assert dict(sent[0]["headers"])[b"retry-after"] == b"1"
    assert mw.shed == 1


def test_room_for_a_typical_request_passes():
    app = App()
    mw = ShedWhenSaturated(app, node(queued=900, limit=1000, item_tokens=60))
    assert status(call(mw)) == 200 and app.calls == 1
    idle = ShedWhenSaturated(app, node(queued=0, limit=0.5))  # an empty queue always admits
    assert status(call(idle)) == 200


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/embeddings"), ("POST", "/v1/status"), ("POST", "/healthz")]
)
def test_only_inference_posts_are_shed(method, path):
    app = App()
    mw = ShedWhenSaturated(app, node(queued=5000, limit=1000))
    assert status(call(mw, path=path, method=method)) == 200


@pytest.mark.parametrize(
    "path", ["/v1/embeddings/", "//v1/embeddings", "/v1//rerank", "/v2/models/m/infer/"]
)
def test_every_spelling_the_router_serves_is_shed_too(path):
    """The router serves ``/v1/embeddings/`` as ``/v1/embeddings``: the cheap 429 must too, or a
    flood on that spelling is parsed and tokenised before it is refused."""
    app = App()
    mw = ShedWhenSaturated(app, node(queued=5000, limit=1000))
    assert status(call(mw, path=path)) == 429 and app.calls == 0


def test_an_immediate_retry_on_the_same_connection_waits_out_its_retry_after():
    mw = ShedWhenSaturated(App(), node(queued=5000, limit=1000))
    t0 = time.monotonic()
    assert status(call(mw, port=7)) == 429
    first = time.monotonic() - t0
    assert status(call(mw, port=8)) == 429  # another connection: answered at once
    t1 = time.monotonic()
    assert status(call(mw, port=7)) == 429  # ignored Retry-After (1 s): held until it passed
    held = time.monotonic() - t1
    assert first < 0.2 and 0.8 <= held <= 1.5
    assert mw.held_answers == 1


def test_a_429_from_the_batcher_marks_the_connection_too():
    app = App(status=429)
    n = node(queued=10, limit=1000)  # room at the door: the request is parsed, then refused
    mw = ShedWhenSaturated(app, n)
    assert status(call(mw, port=9)) == 429 and app.calls == 1
    until = mw.retry_at[("10.0.0.1", 9)]
    assert 2.5 <= until - time.monotonic() <= 3.1  # the app's Retry-After: 3 s


def test_the_table_of_connections_is_bounded(monkeypatch):
    monkeypatch.setattr(shedding, "MAX_HELD", 4)
    mw = ShedWhenSaturated(App(), node(queued=5000, limit=1000))
    for port in range(10):
        call(mw, port=port)
    assert len(mw.retry_at) <= 4


def test_after_the_wait_an_early_retry_is_refused_with_a_fresh_retry_after():
    app = App()
    n = node(queued=5000, limit=1000)
    mw = ShedWhenSaturated(app, n)
    assert status(call(mw, port=11)) == 429

    async def drain_then_retry() -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        async def drain() -> None:
            await asyncio.sleep(0.3)
            n.models["m"].admission.queued_tokens = 0  # the queue emptied during the wait

        scope = {"type": "http", "method": "POST", "path": "/v1/embeddings"}
        scope["client"] = ("10.0.0.1", 11)
        await asyncio.gather(drain(), mw(scope, None, send))
        return sent

    sent = asyncio.run(drain_then_retry())
    # it came back too early: refused like a rate limit, never served after a hidden wait
    assert status(sent) == 429 and app.calls == 0
    assert dict(sent[0]["headers"])[b"retry-after"] == b"1"
    assert status(call(mw, port=11)) == 200  # asked again in time, on a free node: served


def test_a_proxied_address_without_a_port_is_never_held():
    mw = ShedWhenSaturated(App(), node(queued=5000, limit=1000))
    t0 = time.monotonic()
    for _ in range(3):
        assert status(call(mw, port=0)) == 429  # every client behind the proxy shares port 0
    assert time.monotonic() - t0 < 0.5 and mw.held_answers == 0 and not mw.retry_at


def test_at_most_half_the_connection_limit_is_held_at_once():
    n = node(queued=5000, limit=1000)
    n.config = SimpleNamespace(server=SimpleNamespace(max_connections=4))
    mw = ShedWhenSaturated(App(), n)
    assert mw.max_holding == 2
    for port in range(1, 5):
        call(mw, port=port)  # each connection refused once: all four now marked

    async def retry_all() -> float:
        async def one(port: int) -> float:
            async def send(_m: dict) -> None:
                return None

            t0 = time.monotonic()
            scope = {"type": "http", "method": "POST", "path": "/v1/embeddings"}
            scope["client"] = ("10.0.0.1", port)
            await mw(scope, None, send)
            return time.monotonic() - t0

        waits = await asyncio.gather(*[one(p) for p in range(1, 5)])
        return sorted(waits)

    waits = asyncio.run(retry_all())
    assert waits[1] < 0.2 and waits[2] >= 0.8  # two answered at once, two held
    assert mw.held_answers == 2 and mw.holding == 0


@pytest.mark.parametrize("header", [b"inf", b"1e400", b"nan", b"-5", b"soon"])
def test_a_strange_retry_after_from_the_app_is_bounded(header):
    class Odd(App):
        async def __call__(self, scope, receive, send) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [(b"retry-after", header)],
                }
            )
            await send({"type": "http.response.body", "body": b"{}"})

    mw = ShedWhenSaturated(Odd(), node(queued=10, limit=1000))
    call(mw, port=5)
    left = mw.retry_at[("10.0.0.1", 5)] - time.monotonic()
    assert 0.5 <= left <= shedding.HOLD_MAX_S

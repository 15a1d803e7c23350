"""Shed overload before it costs anything.

Under a flood, parsing each request and building a problem+json 429 through the framework
costs as much as serving it did, and the event loop itself becomes the queue (measured: at
10x capacity, admitted requests waited 38 s in socket buffers). This ASGI middleware answers
429 with ``Retry-After`` for inference requests while no model's admission budget has room for
a typical request (its mean tokens per input) — without reading the body or routing — so the
loop stays free for admitted work.

A client that ignores ``Retry-After`` and sends again at once on the same connection (a closed
loop: every 429 brings the next request back within microseconds) would otherwise keep the
event loop answering 429s, taking the CPU the admitted requests need (measured: a c=1000 flood
drew 1,650 429s/s and cut goodput to a third). Its repeat requests are answered — 429 again,
unparsed — only when the Retry-After it was given has passed, so each such connection costs at
most one answer per Retry-After; a client that waits as told never notices. After the wait it
is refused like a rate limit (it came back too early), with a fresh Retry-After. Connections are
told apart by their peer
address and port; a peer without a port (an address from a trusted proxy's X-Forwarded-For, shared
by every client behind it) is never held. At most half of ``server.max_connections`` requests are
held at once (beyond that they are answered at once), so held requests can never fill uvicorn's
concurrency limit and push health checks into 503; the table of connections is bounded too.
"""

from __future__ import annotations

import asyncio
import math
import time

from artifacts.wire import MEDIA_TYPE_PROBLEM, problem_bytes
from edge_runtime.http.api_keys import route_path

INFERENCE_PATHS = ("/v1/embeddings", "/v1/rerank", "/v1/classify", "/v1/search")
BODY = problem_bytes(429, "Overloaded", "every model on this node is at capacity; retry later")
HOLD_MAX_S = 10.0  # never hold an answer longer than this, whatever Retry-After said
MAX_HELD = 65_536  # connections remembered at once (expired ones dropped first, then the oldest)


def _endpoint(path: str) -> str:
    """The ``endpoint`` label the routes use (``/v1/embeddings`` → ``embeddings``)."""
    return "kserve" if path.startswith("/v2/") else path.rsplit("/", 1)[-1]


class ShedWhenSaturated:
    def __init__(self, app, node) -> None:
        self.app = app
        self.node = node
        self.shed = 0
        self.held_answers = 0  # 429s answered late to a connection that ignored Retry-After
        self.holding = 0  # requests being held now
        self.retry_at: dict[tuple, float] = {}  # connection -> when its Retry-After ends
        config = getattr(node, "config", None)
        connections = config.server.max_connections if config is not None else 2048
        self.max_holding = max(1, connections // 2)

    def _saturated(self) -> float | None:
        """Retry-After seconds if no model has room for a typical request, else None."""
        services = list(self.node.models.values())
        if not services:
            return None
        waits = []
        for s in services:
            a = s.admission
            if a.queued_tokens == 0:  # idle (c=1): nothing more to read
                return None
            batcher = getattr(s, "batcher", None)
            typical = max(1.0, getattr(batcher, "item_tokens", 0.0))
            if a.queued_tokens + typical <= a.limit:
                return None
            waits.append(a.retry_after())
        return max(1.0, min(waits))

    def _remember(self, conn: tuple | None, until: float) -> None:
        if conn is None:
            return
        self.retry_at.pop(conn, None)  # re-inserted last: the dict's order is oldest first
        if len(self.retry_at) >= MAX_HELD:  # prune to three quarters: amortised O(1)
            now = time.monotonic()
            keep = [(k, v) for k, v in self.retry_at.items() if v > now]
            self.retry_at = dict(keep[len(keep) - MAX_HELD * 3 // 4 :] if keep else [])
        self.retry_at[conn] = until

    async def _hold(self, conn: tuple | None) -> bool:
        """Wait out ``conn``'s Retry-After if it retried early; True if it was held."""
        due = self.retry_at.get(conn) if conn is not None else None
        now = time.monotonic()
        if due is None or due <= now or self.holding >= self.max_holding:
            return False
        self.held_answers += 1
        self.holding += 1
        try:
            await asyncio.sleep(min(due - now, HOLD_MAX_S))
        finally:
            self.holding -= 1
        return True

    async def _reject(self, send, path: str, retry: float, conn: tuple | None) -> None:
        self._remember(conn, time.monotonic() + retry)
        self.shed += 1
        # counted once, like every other answer (the model is unknown: the body is not read),
        # so rejected_total and requests_total{status="429"} agree
        self.node.metrics.rejected.labels("-").inc()
        self.node.metrics.requests.labels("-", _endpoint(path), "429").inc()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", MEDIA_TYPE_PROBLEM.encode()),
                    (b"retry-after", str(math.ceil(retry)).encode()),
                    (b"content-length", str(len(BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": BODY})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = route_path(scope["path"])  # "/v1/embeddings/" and "//v1/embeddings" too
        if not (
            path in INFERENCE_PATHS or (path.startswith("/v2/models/") and path.endswith("/infer"))
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        conn = (client[0], client[1]) if client and client[1] else None  # port 0: a proxy's
        retry = self._saturated()
        if retry is not None and await self._hold(conn):
            # it came back before its Retry-After: refused like a rate limit, with a fresh
            # Retry-After (serving it now would count the wait in admitted latency: measured,
            # admitted p99 under a flood went from 1.9 s to 4.0 s that way)
            retry = self._saturated() or 1.0
        if retry is not None:
            await self._reject(send, path, retry, conn)
            return

        async def watch(message) -> None:
            # a 429 from the batcher (the request was parsed, then refused) marks the
            # connection too, so its next immediate retry is held here, unparsed
            if message["type"] == "http.response.start" and message["status"] == 429:
                after = dict(message.get("headers", ())).get(b"retry-after", b"1")
                try:
                    seconds = float(after)
                except ValueError:
                    seconds = 1.0
                if not math.isfinite(seconds):
                    seconds = 1.0
                self._remember(conn, time.monotonic() + min(max(1.0, seconds), HOLD_MAX_S))
            await send(message)

        await self.app(scope, receive, watch)

"""A fault-injecting HTTP proxy in front of central: the registry as a broken network or a
broken registry looks to an edge node (5xx, hangs, trickling or truncated answers, HTML from
a captive proxy, slow blobs).

``proxy.fault = Fault(mode, only=prefix)`` switches behaviour at run time; requests are
counted per API area so a test can act at a known moment (e.g. kill the edge mid-download).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass

import httpx

from tests.servers import ThreadedServer

MODES = ("pass", "500", "hang", "slowloris", "truncate", "html", "slow-blobs")
BODY = "http.response.body"


@dataclass(frozen=True)
class Fault:
    mode: str = "pass"
    only: str = ""  # path prefix the fault applies to ("" = every request)
    blob_bytes_per_s: int = 512 << 10  # for slow-blobs

    def __post_init__(self) -> None:
        assert self.mode in MODES, self.mode


class FaultProxy(ThreadedServer):
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fault = Fault()
        self.seen: Counter[str] = Counter()  # "resolve", "blobs", ... -> requests
        self.blob_started = threading.Event()

        async def app(scope, receive, send) -> None:  # a plain function: uvicorn sees ASGI 3
            await self._app(scope, receive, send)

        super().__init__(app)

    def _still(self, fault: Fault) -> bool:
        return self.fault is fault and not self.server.should_exit

    async def _app(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        path = scope["path"]
        body = await _body(receive)
        fault = self.fault
        mode = fault.mode if path.startswith(fault.only) else "pass"
        parts = path.split("/")
        self.seen[parts[-1] if "resolve" in parts else parts[2] if len(parts) > 2 else path] += 1
        if mode == "500":
            return await _answer(send, 500, b'{"detail":"injected failure"}', "application/json")
        if mode == "html":
            page = b"<html><body><h1>502 Bad Gateway</h1>captive proxy</body></html>"
            return await _answer(send, 200, page, "text/html")
        if mode == "hang":  # no answer until the fault is lifted (then a 504)
            while self._still(fault):
                await asyncio.sleep(0.1)
            return await _answer(send, 504, b'{"detail":"hung"}', "application/json")
        status, headers, data = await self._forward(scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if mode == "slowloris":
            return await self._trickle(send, data, fault, step=1, pause=0.3)
        if mode == "truncate":  # half the promised bytes, then the connection drops
            await send({"type": BODY, "body": data[: len(data) // 2], "more_body": True})
            raise ConnectionAbortedError("injected truncation")
        if mode == "slow-blobs" and path.startswith("/v1/blobs/"):
            self.blob_started.set()
            step = max(1, fault.blob_bytes_per_s // 20)
            return await self._trickle(send, data, fault, step=step, pause=0.05)
        await send({"type": BODY, "body": data})

    async def _forward(self, scope, body: bytes) -> tuple[int, list, bytes]:
        skip = ("host", "content-length", "accept-encoding")
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.decode() not in skip]
        query = scope["query_string"].decode()
        url = self.upstream + scope["path"] + (f"?{query}" if query else "")
        async with httpx.AsyncClient(timeout=60) as client:
            r = await client.request(scope["method"], url, headers=headers, content=body)
        drop = ("content-length", "transfer-encoding", "connection", "content-encoding")
        out = [(k.encode(), v.encode()) for k, v in r.headers.items() if k.lower() not in drop]
        out.append((b"content-length", str(len(r.content)).encode()))
        return r.status_code, out, r.content

    async def _trickle(self, send, data: bytes, fault: Fault, *, step: int, pause: float) -> None:
        """``step`` bytes every ``pause`` seconds, until done or the fault is lifted."""
        for i in range(0, len(data), step):
            if not self._still(fault):
                raise ConnectionAbortedError("trickle lifted")
            await send({"type": BODY, "body": data[i : i + step], "more_body": True})
            await asyncio.sleep(pause)
        await send({"type": BODY, "body": b""})


async def _lifespan(receive, send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def _answer(send, status: int, body: bytes, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": BODY, "body": body})

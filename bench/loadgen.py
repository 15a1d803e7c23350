"""A small asyncio load generator (aiohttp) for embedding servers on loopback.

Closed loop: ``concurrency`` workers each send the next request as soon as the previous one
answers. Open loop: requests start at a fixed rate whatever the server does (overload).
Runs in its own process so its CPU use is visible and separate from the server's.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    status: dict[int, int] = field(default_factory=dict)
    latencies_ok: list[float] = field(default_factory=list)
    errors: int = 0  # transport errors and timeouts
    unsent: int = 0  # open loop: the client already had max_inflight requests out
    seconds: float = 0.0

    def as_dict(self) -> dict:
        lat = sorted(self.latencies_ok)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, round(q / 100 * (len(lat) - 1)))] * 1e3 if lat else None

        return {
            "sent": self.sent,
            "ok": self.ok,
            "status": self.status,
            "errors": self.errors,
            "unsent": self.unsent,
            "seconds": self.seconds,
            "throughput": self.ok / self.seconds if self.seconds else 0.0,
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
        }


async def _one(session, url, body, res: LoadResult) -> None:
    t0 = time.perf_counter()
    res.sent += 1
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            await r.read()
            res.status[r.status] = res.status.get(r.status, 0) + 1
            if r.status == 200:
                res.ok += 1
                res.latencies_ok.append(time.perf_counter() - t0)
    except (TimeoutError, aiohttp.ClientError):
        res.errors += 1


def _bodies(
    texts: list[str], model: str | None, field_name: str, extra: dict | None = None
) -> list[bytes]:
    out = []
    for t in texts:
        body = {field_name: t, **(extra or {})}
        if model:
            body["model"] = model
        out.append(json.dumps(body).encode())
    return out


async def closed_loop(
    url: str,
    texts: list[str],
    concurrency: int,
    *,
    seconds: float | None = None,
    total: int | None = None,
    model: str | None = None,
    field_name: str = "input",
    extra: dict | None = None,
) -> LoadResult:
    bodies = _bodies(texts, model, field_name, extra)
    res = LoadResult()
    counter = iter(range(10**12))
    deadline = time.perf_counter() + (seconds or 1e9)
    conn = aiohttp.TCPConnector(limit=concurrency * 2, force_close=False)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                if total is not None and i >= total:
                    return
                await _one(session, url, bodies[i % len(bodies)], res)

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        res.seconds = time.perf_counter() - t0
    return res


async def open_loop(
    url: str,
    texts: list[str],
    rate: float,
    seconds: float,
    *,
    model: str | None = None,
    field_name: str = "input",
    max_inflight: int = 4096,
    extra: dict | None = None,
) -> LoadResult:
    bodies = _bodies(texts, model, field_name, extra)
    res = LoadResult()
    conn = aiohttp.TCPConnector(limit=max_inflight)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        tasks: set[asyncio.Task] = set()
        t0 = time.perf_counter()
        i = 0
        while (now := time.perf_counter()) - t0 < seconds:
            due = int((now - t0) * rate)
            while i < due:
                if len(tasks) < max_inflight:
                    task = asyncio.ensure_future(_one(session, url, bodies[i % len(bodies)], res))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                else:
                    res.unsent += 1  # the client could not even send it
                i += 1
            await asyncio.sleep(0.001)
        res.seconds = time.perf_counter() - t0
        if tasks:
            await asyncio.gather(*tasks)
    return res


def run_closed(url, texts, concurrency, **kw) -> dict:
    return asyncio.run(closed_loop(url, texts, concurrency, **kw)).as_dict()


def run_open(url, texts, rate, seconds, **kw) -> dict:
    return asyncio.run(open_loop(url, texts, rate, seconds, **kw)).as_dict()

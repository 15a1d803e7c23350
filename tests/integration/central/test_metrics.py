"""Central's unauthenticated ``/metrics`` over real HTTP: the build service's state, read from
the database at most once per refresh interval however many scrapes arrive at once."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from central.metrics import REFRESH_S


def reads(text: str) -> float:
    return float(re.search(r"^shipyard_central_metrics_state_reads_total (\S+)", text, re.M)[1])


def test_a_flood_of_scrapes_reads_the_database_once_per_interval(central):
    url = f"{central.url}/metrics"
    first = httpx.get(url)
    assert first.status_code == 200
    assert "shipyard_central_ready 1.0" in first.text
    assert 'shipyard_central_jobs{state="queued"}' in first.text
    before = reads(first.text)
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: httpx.get(url), range(64)))
    elapsed = time.monotonic() - started
    assert all(a.status_code == 200 for a in answers)
    after = max(reads(a.text) for a in answers)
    # at most one read per started interval (the first scrape's read may have just expired)
    assert after - before <= 1 + elapsed // REFRESH_S, (before, after, elapsed)
    time.sleep(REFRESH_S + 0.1)
    assert reads(httpx.get(url).text) == after + 1  # the next interval reads again


def test_a_hanging_or_failing_database_answers_not_ready_within_the_deadline():
    """A PostgreSQL that accepts and never answers (a real socket on loopback): each scrape
    still answers within the deadline, says not ready, and the next interval asks again only
    once however many scrapes wait."""
    import asyncio
    import socket

    from central.db import Database
    from central.metrics import STATE_DEADLINE_S, CentralMetrics

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts (the kernel does) and never says a word
    port = silent.getsockname()[1]

    async def scrape_many(url: str) -> tuple[list[bytes], float]:
        db = Database(url)
        metrics = CentralMetrics(db, lease_seconds=30.0, refresh_s=60.0)
        try:
            started = time.monotonic()
            answers = await asyncio.gather(*(metrics.render() for _ in range(8)))
            return answers, time.monotonic() - started
        finally:
            await db.close()

    try:
        for url in (
            f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x",  # hangs
            "postgresql+asyncpg://postgres@127.0.0.1:1/x",  # refused
        ):
            answers, elapsed = asyncio.run(scrape_many(url))
            assert elapsed < STATE_DEADLINE_S + 3, (url, elapsed)
            assert all(b"shipyard_central_ready 0.0" in a for a in answers), url
            # the failure is shared, not retried per scrape
            assert max(reads(a.decode()) for a in answers) == 1, url
    finally:
        silent.close()

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

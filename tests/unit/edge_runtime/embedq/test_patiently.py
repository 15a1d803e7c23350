"""The catalog-embedding worker waits out a busy central (429) instead of spending the job's
deliveries, and no sooner than central's ``Retry-After``."""

from __future__ import annotations

import asyncio

import pytest

from artifacts.errors import InputError, Overloaded
from edge_runtime.embedq import worker as W


def bare_worker() -> W.EmbedWorker:
    w = object.__new__(W.EmbedWorker)  # _patiently needs no queue, model or client
    w.last_error = ""
    return w


def test_a_429_is_waited_out_for_at_least_its_retry_after(monkeypatch):
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    monkeypatch.setattr(W.asyncio, "sleep", sleep)
    calls = []

    async def work(catalog, job):
        calls.append(catalog)
        if len(calls) < 3:
            raise Overloaded("429 busy", 4.0)
        return "done"

    w = bare_worker()
    assert asyncio.run(w._patiently(work, "c", None)) == "done"
    assert slept == [4.0, 8.0]  # Retry-After first, then doubling
    assert "Overloaded" in w.last_error


def test_the_jobs_own_errors_are_not_retried(monkeypatch):
    async def work(catalog, job):
        raise InputError("bad job")

    with pytest.raises(InputError):
        asyncio.run(bare_worker()._patiently(work, "c", None))

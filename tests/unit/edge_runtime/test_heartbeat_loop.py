"""The edge's fleet heartbeat loop: a refused heartbeat (403 under ``--fleet-claims
assigned``, another token's node) is retried at the heartbeat interval, not every time the
report changes — each try costs central a transaction and an audit row."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from artifacts.errors import ForbiddenError
from artifacts.wire import NodeModel, NodeReport
from edge_runtime import node as N


def run_loop(monkeypatch, refuse: bool, seconds: int) -> list[float]:
    clock = [1000.0]
    sent: list[float] = []
    ticks = [0]

    async def sleep(s: float) -> None:
        clock[0] += s
        ticks[0] += 1
        if ticks[0] >= seconds:
            raise asyncio.CancelledError

    def heartbeat(report: NodeReport) -> None:
        sent.append(clock[0])
        if refuse:
            raise ForbiddenError("403 node 'eu-1' is not assigned to this token")

    def report() -> NodeReport:  # a report that changes every second (fallbacks under load)
        m = NodeModel(model="m", channel="stable", state="ready", fallbacks=ticks[0])
        return NodeReport(node="eu-1", models=[m])

    monkeypatch.setattr(N.asyncio, "sleep", sleep)
    monkeypatch.setattr(N.time, "monotonic", lambda: clock[0])
    fake = SimpleNamespace(
        config=SimpleNamespace(registry=SimpleNamespace(poll_interval_s=5.0)),
        client=SimpleNamespace(heartbeat_node=heartbeat),
        report=report,
    )
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(N.EdgeNode._heartbeat_forever(fake))
    return sent


def test_a_refused_heartbeat_waits_for_the_interval_whatever_changes(monkeypatch):
    assert run_loop(monkeypatch, refuse=True, seconds=12) == [1000.0, 1005.0, 1010.0]


def test_an_accepted_node_reports_each_change_at_once(monkeypatch):
    assert len(run_loop(monkeypatch, refuse=False, seconds=12)) == 12

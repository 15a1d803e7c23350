"""The Grafana dashboard and the Prometheus alert rules in deploy/monitoring: every metric they
use is one the edge or central really exports (scraped from a real central and a real edge
metrics registry), the rules are well formed, and — where promtool is available (`make test`
fetches Debian's) — `promtool check rules` and `promtool test rules` pass: each alert fires on
the series that should trigger it, and not before."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "shipyard-alerts.yml"
DASHBOARD = MONITORING / "shipyard-dashboard.json"
METRIC = re.compile(r"\b((?:shipyard|process)_[a-z_]+)")
SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def promtool() -> str | None:
    local = ROOT / ".venv" / "tools" / "promtool"
    return str(local) if local.is_file() else shutil.which("promtool")


def exported(text: str) -> set[str]:
    """Metric names in a Prometheus text exposition (HELP lines name even empty families)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            name = line.split()[2]
            names.add(name)
            if " counter" in line and not name.endswith("_total"):
                names.add(name + "_total")
    return names


@pytest.fixture(scope="module")
def known(tmp_path_factory, publisher_keys) -> set[str]:
    from edge_runtime.metrics import Metrics
    from tests.servers import CentralServer

    edge = exported(Metrics().render().decode())
    server = CentralServer(
        tmp_path_factory.mktemp("central"), None, trusted=[publisher_keys[1]], local_workers=0
    ).start()
    try:
        central = exported(httpx.get(f"{server.url}/metrics", timeout=10).text)
    finally:
        server.stop()
    return edge | central


def used_in(expr: str) -> set[str]:
    out = set()
    for name in METRIC.findall(expr):
        for suffix in SUFFIXES:
            if name.endswith(suffix) and name != suffix:
                name = name.removesuffix(suffix)
                break
        out.add(name)
    return out


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_every_rule_is_complete_and_uses_real_metrics(known):
    seen = set()
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"].startswith("Shipyard") and rule["alert"] not in seen
        seen.add(rule["alert"])
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"]
        missing = {m for m in used_in(rule["expr"]) if m not in known and m + "_total" not in known}
        assert not missing, f"{rule['alert']} uses metrics nothing exports: {missing}"
    assert {
        "ShipyardEdgeModelNotReady",
        "ShipyardEdgeFallbackTaken",
        "ShipyardEdgeStaleMetadata",
        "ShipyardEdgeShedding",
    } <= seen


def test_every_dashboard_panel_queries_real_metrics(known):
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"] for p in panels)
    for wanted in (
        "Requests",
        "p50 / p99",
        "Queued tokens",
        "admission limit",
        "Batch size",
        "hit ratio",
        "Active backend",
        "Fallbacks",
        "RSS",
    ):
        assert wanted in titles, wanted
    for p in panels:
        for t in p["targets"]:
            missing = {
                m for m in used_in(t["expr"]) if m not in known and m + "_total" not in known
            }
            assert not missing, f"panel {p['title']!r} uses metrics nothing exports: {missing}"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance", "central"} <= variables


def test_promtool_checks_and_unit_tests_the_rules():
    tool = promtool()
    if tool is None:
        pytest.skip(
            "promtool not found (make test fetches Debian's prometheus package into "
            ".venv/tools); the rules were checked by the parser tests above"
        )
    env = {**os.environ, "TZ": "UTC"}
    check = subprocess.run(
        [tool, "check", "rules", str(RULES)], capture_output=True, text=True, env=env
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [tool, "test", "rules", "shipyard-alerts.test.yml"],
        capture_output=True,
        text=True,
        cwd=MONITORING,
        env=env,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr

"""Faults around a real edge process: killed mid-download and mid-swap, a full disk, a
registry that fails in every way a network can, a backend that breaks at run time, a cache
tampered with between restarts, API keys reloaded with SIGHUP. In each, the node keeps
serving a verified version (or says precisely why it cannot) and catches up once healed."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from artifacts.bundle import verify_bundle
from artifacts.signing import TrustedKeys
from tests.faults.conftest import MODEL, Stack
from tests.faults.edge_process import EdgeProcess
from tests.faults.proxy import Fault

pytestmark = pytest.mark.faults
_texts = itertools.count()


def _model(st: dict) -> dict:
    return next(m for m in st["models"] if m["model"] == MODEL)


def _serving(version: int):
    return lambda st: _model(st)["version"] == version and _model(st)["state"] == "ready"


class Load:
    """Requests in a loop from a thread (unique texts: the result cache never answers);
    every answer's status and model version is kept."""

    def __init__(self, edge: EdgeProcess, headers: dict | None = None) -> None:
        self.edge, self.headers = edge, headers or {}
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.edge.url, timeout=30, headers=self.headers) as c:
            while not self._stop.is_set():
                body = {"model": MODEL, "input": [f"red running shoe {next(_texts)}", "usb cable"]}
                r = c.post("/v1/embeddings", json=body)
                self.answers.append((r.status_code, r.headers.get("x-shipyard-model-version", "")))
                time.sleep(0.02)

    def check(self, versions: set[int]) -> None:
        assert self.answers, "no request was answered"
        bad = [a for a in self.answers if a[0] != 200 or int(a[1] or 0) not in versions]
        assert not bad, f"{len(bad)} of {len(self.answers)} answers failed or wrong: {bad[:5]}"


def _assert_clean_cache(cache: Path, trusted_pub: Path) -> None:
    """No half-written leftovers; every bundle on disk verifies (digests and signature)."""
    trusted = TrustedKeys.from_paths([trusted_pub])
    deadline = time.monotonic() + 20  # a bundle missed in the last round comes in the next
    while any((cache / "downloads").rglob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = [
        p for p in cache.rglob("*") if p.name.endswith((".partial", ".old", ".tmp", ".part"))
    ]
    assert not leftovers, leftovers
    assert not any((cache / "downloads").rglob("*.*")), list((cache / "downloads").rglob("*"))
    models = cache / "models" / MODEL
    bundles = [t for v in models.glob("v*") for t in v.iterdir() if t.is_dir()]
    assert bundles
    for b in bundles:
        verify_bundle(b, trusted)
    json.loads((models / "state.json").read_text())


def test_sigkill_during_download_then_restart_serves_a_verified_version(stack: Stack):
    v1 = stack.publish()
    edge = stack.edge().start()
    edge.wait(_serving(v1), what="v1")
    stack.proxy.fault = Fault("slow-blobs", blob_bytes_per_s=256 << 10)
    v2 = stack.publish()
    assert stack.proxy.blob_started.wait(30)
    time.sleep(1.0)
    edge.kill()
    parts = list((edge.config.parent / "cache" / "downloads").rglob("*.part"))
    assert parts, "the kill was meant to land mid-download"
    stack.proxy.fault = Fault("500")  # restart while the registry is still broken: the cache
    edge.start()
    st = edge.wait(_serving(v1), what="v1 from the cache")
    assert _model(st)["source"] == "cache"
    stack.proxy.fault = Fault()
    edge.wait(_serving(v2), what="v2 once the registry heals")
    _assert_clean_cache(edge.config.parent / "cache", stack.publisher_keys[1])
    edge.stop()


@pytest.mark.parametrize("delay_s", [0.0, 0.4])
def test_sigkill_during_a_swap_then_restart_serves_a_verified_version(stack: Stack, delay_s):
    v1 = stack.publish()
    edge = stack.edge().start()
    edge.wait(_serving(v1), what="v1")
    v2 = stack.publish()
    v2_dir = edge.config.parent / "cache" / "models" / MODEL / f"v{v2}"
    deadline = time.monotonic() + 60
    while not (v2_dir.is_dir() and len([p for p in v2_dir.iterdir() if p.is_dir()]) >= 1):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(delay_s)  # downloaded: now loading, smoke-checking, swapping, recording
    edge.kill()
    stack.proxy.fault = Fault("500")
    edge.start()
    st = edge.wait(
        lambda s: _model(s)["state"] in ("ready", "degraded"), what="serving from the cache"
    )
    assert _model(st)["version"] in (v1, v2)
    stack.proxy.fault = Fault()
    edge.wait(_serving(v2), what="v2")
    _assert_clean_cache(edge.config.parent / "cache", stack.publisher_keys[1])
    edge.stop()


def test_disk_full_during_download_keeps_serving_and_frees_the_space(stack: Stack):
    v1 = stack.publish()
    edge = stack.edge().start()
    edge.wait(_serving(v1), what="v1")
    (edge.faults / "enospc").touch()
    with Load(edge) as load:
        v2 = stack.publish()
        st = edge.wait(lambda s: _model(s)["state"] == "degraded", what="degraded")
    load.check({v1})
    m = _model(st)
    assert m["version"] == v1 and f"v{v2} failed" in m["reason"], m["reason"]
    assert "No space left" in json.dumps(m["candidates"]) + m["reason"]
    downloads = edge.config.parent / "cache" / "downloads"
    assert not list(downloads.rglob("*.part")), "a failed download must give its space back"
    (edge.faults / "enospc").unlink()
    edge.wait(_serving(v2), what="v2 once there is space")
    _assert_clean_cache(edge.config.parent / "cache", stack.publisher_keys[1])
    edge.stop()


REGISTRY_FAULTS = [
    Fault("500"),
    Fault("hang"),
    Fault("slowloris"),
    Fault("truncate"),
    Fault("html"),
    Fault("truncate", only="/v1/blobs/"),
    Fault("slowloris", only="/v1/blobs/"),
]


def test_registry_faults_leave_the_node_serving_and_it_catches_up(stack: Stack):
    """One node through every registry failure in turn, then a registry restart mid-download;
    under load all along: every request answered by a verified version."""
    version = stack.publish()
    edge = stack.edge().start()
    edge.wait(_serving(version), what="v1")
    with Load(edge) as load:
        for fault in REGISTRY_FAULTS:
            old = version
            stack.proxy.fault = fault
            version = stack.publish()
            edge.wait(
                lambda s, old=old: (
                    _model(s)["version"] == old
                    and (_model(s)["last_sync_error"] or _model(s)["state"] == "degraded")
                ),
                timeout=30,
                what=f"the fault {fault} noticed",
            )
            time.sleep(1.0)  # a few more failing rounds
            assert _model(edge.status())["version"] == old
            stack.proxy.fault = Fault()
            st = edge.wait(_serving(version), timeout=60, what=f"catch up after {fault}")
            assert _model(st)["last_sync_error"] == ""
        # the registry restarts while a blob is half-way through
        stack.proxy.blob_started.clear()
        stack.proxy.fault = Fault("slow-blobs", blob_bytes_per_s=256 << 10)
        old, version = version, stack.publish()
        assert stack.proxy.blob_started.wait(30)
        time.sleep(0.5)
        stack.restart_central(down_s=2.0)
        stack.proxy.fault = Fault()
        edge.wait(_serving(version), timeout=60, what="catch up after a registry restart")
    load.check(set(range(1, version + 1)))
    assert len(load.answers) > 100
    # a bundle that missed a round is fetched in the next, and the best-ranked one serves
    edge.wait(
        lambda s: _model(s)["target"] == _model(s)["candidates"][0]["target"],
        timeout=20,
        what="the best-ranked bundle serving",
    )
    _assert_clean_cache(edge.config.parent / "cache", stack.publisher_keys[1])
    edge.stop()


def test_a_backend_failing_at_run_time_fails_over_without_losing_a_request(stack: Stack):
    v1 = stack.publish()
    edge = stack.edge().start()
    first = _model(edge.wait(_serving(v1), what="v1"))["target"]
    with Load(edge) as load:
        time.sleep(0.5)
        (edge.faults / "backend-raises").write_text(first)
        st = edge.wait(lambda s: _model(s)["target"] != first, what="a fallback")
        time.sleep(0.5)
        # the broken engine also fails the next version's warm-up: that version is served by
        # its next candidate (a failed candidate, not a failed sync round)
        v2 = stack.publish()
        st2 = edge.wait(_serving(v2), what="v2 on a working backend")
    load.check({v1, v2})
    m = _model(st)
    assert m["state"] == "ready" and any(e["kind"] == "fallback" for e in m["events"])
    metrics = httpx.get(f"{edge.url}/metrics").text
    assert f'from_target="{first}"' in metrics and "shipyard_fallback_events_total" in metrics
    m2 = _model(st2)
    refused = next(c for c in m2["candidates"] if c["target"] == first)
    assert m2["target"] != first and "warm-up" in refused["detail"], refused
    assert m2["last_sync_error"] == ""
    edge.stop()


def test_a_corrupt_cache_file_between_restarts_is_refused_then_downloaded_again(stack: Stack):
    v1 = stack.publish()
    edge = stack.edge().start()
    target = _model(edge.wait(_serving(v1), what="v1"))["target"]
    edge.stop()
    bundle = edge.config.parent / "cache" / "models" / MODEL / f"v{v1}" / target
    weights = max((p for p in bundle.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    stack.proxy.fault = Fault("500")  # registry away: the cache alone must not be trusted
    edge.start()
    m = _model(edge.wait(lambda s: _model(s)["state"] != "starting", what="settled"))
    assert m["target"] != target, "a tampered bundle must never serve"
    refused = next(c for c in m["candidates"] if c["target"] == target)
    assert "digest" in refused["detail"].lower() or "hash" in refused["detail"].lower(), refused
    stack.proxy.fault = Fault()
    edge.stop()
    edge.start()  # registry back: the bundle is downloaded again and serves
    m = _model(edge.wait(_serving(v1), what="v1"))
    assert m["target"] == target
    verify_bundle(bundle, TrustedKeys.from_paths([stack.publisher_keys[1]]))
    edge.stop()


def test_sighup_reloads_api_keys_in_a_running_process(stack: Stack, tmp_path):
    keys = tmp_path / "keys.txt"

    def add(name: str) -> str:
        out = subprocess.run(
            [
                str(Path(sys.executable).parent / "edge-runtime"),
                "api-key",
                "add",
                name,
                "--file",
                str(keys),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        return out.stdout.strip()

    first = add("search-frontend")
    v1 = stack.publish()
    edge = stack.edge(extra=f"api_keys_file = {json.dumps(str(keys))}").start()
    ok = {"Authorization": f"Bearer {first}"}
    body = {"model": MODEL, "input": "x"}
    edge.wait_open("/readyz")  # the probes need no key
    assert httpx.post(f"{edge.url}/v1/embeddings", json=body, headers=ok).status_code == 200
    second = add("recs")
    late = {"Authorization": f"Bearer {second}"}
    assert httpx.post(f"{edge.url}/v1/embeddings", json=body, headers=late).status_code == 401
    edge.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while httpx.post(f"{edge.url}/v1/embeddings", json=body, headers=late).status_code != 200:
        assert time.monotonic() < deadline, edge.tail()
        time.sleep(0.1)
    assert httpx.post(f"{edge.url}/v1/embeddings", json=body, headers=ok).status_code == 200
    keys.write_text("garbage line\n")  # a broken file on reload keeps the keys that work
    edge.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert httpx.post(f"{edge.url}/v1/embeddings", json=body, headers=late).status_code == 200
    assert edge.proc is not None and edge.proc.poll() is None
    assert v1 == 1 and os.stat(keys).st_size > 0
    edge.stop()

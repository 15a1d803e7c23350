"""Soak (issue: edge under faults): an edge process under mixed embed / rerank / classify load
for ``--minutes`` (default 10) while, every minute, a new version of every model is promoted
(a hot swap each), central is restarted once (a third of the way in) and the serving backend
of the embedding model starts failing at run time (half-way: failover).

Reported: failed admitted requests (anything but 200, and 429 = not admitted), answers naming
a version that was never promoted, RSS per minute (flat within 15%?), p50/p99 per minute and
endpoint (plot). Tiny random BERTs keep the builds quick: the subject is the node's behaviour
under churn, not model speed (bench/serving.py measures that on MiniLM).

    python -m bench.soak [--minutes 10] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

from artifacts.cli.procs import Child, free_port, python_cli, rss_mb
from bench.common import REPORT_DIR, WORK_DIR, line_chart, machine, md_table, percentile, stamp
from bench.faulty_edge import FAULTS_ENV

TASKS = {"embedding": "soak-embed", "rerank": "soak-rerank", "classify": "soak-classify"}
TARGETS = ["onnx-fp32", "onnx-int8"]
WORDS = [
    "red",
    "blue",
    "trail",
    "running",
    "shoe",
    "usb",
    "cable",
    "wireless",
    "headphones",
    "cast",
    "iron",
    "pan",
    "kids",
    "jacket",
]


def build_bundles(work: Path) -> dict[str, Path]:
    """Tiny models for the three tasks, built (and gated) for two CPU targets each."""
    from bench.fixtures import make_tiny_model
    from builder.pipeline import BuildConfig, build

    out = {}
    for task in TASKS:
        dest = work / "bundles" / task
        if not (dest / "onnx-int8" / "manifest.json").exists():
            src = make_tiny_model(work / "models" / task, task)
            build(
                BuildConfig(
                    model_dir=str(src),
                    task=task,
                    model_name=TASKS[task],
                    out_dir=str(dest),
                    key_file=str(work / "keys" / "publisher.key"),
                    targets=TARGETS,
                    eval_limit=300 if task == "rerank" else 120,
                    calibration_limit=40,
                    thresholds={"top1_agreement": 0.9} if task == "rerank" else {},
                )
            )
        out[task] = dest
    return out


class Central:
    def __init__(self, work: Path, port: int) -> None:
        self.work, self.port = work, port
        self.url = f"http://127.0.0.1:{port}"
        self.child = self._start()

    def _start(self) -> Child:
        argv = python_cli(
            "central.cli", "serve", "--home", str(self.work / "central"), "--port",
            str(self.port), "--local-workers", "0",
        )  # fmt: skip
        child = Child("central", argv, self.work / "central.log")
        child.wait_http(f"{self.url}/readyz", 180)
        return child

    def restart(self, down_s: float = 3.0) -> float:
        t0 = time.monotonic()
        self.child.stop(20)
        time.sleep(down_s)
        self.child = self._start()
        return time.monotonic() - t0

    def publish_all(self, bundles: dict[str, Path]) -> dict[str, int]:
        from artifacts import RegistryClient, load_signing_key, publish_version, verify_bundle

        admin = (self.work / "central" / "admin.token").read_text().strip()
        key = load_signing_key(self.work / "keys" / "publisher.key")
        versions = {}
        with RegistryClient(self.url, admin) as c:
            for task, dest in bundles.items():
                found = [verify_bundle(dest / t, None) for t in TARGETS]
                v = publish_version(c, found, model=TASKS[task], key=key).version
                c.promote(TASKS[task], "stable", v)
                versions[TASKS[task]] = v
        return versions


def _request(task: str, n: int) -> tuple[str, dict]:
    words = [random.choice(WORDS) for _ in range(6)]
    text = f"{' '.join(words)} {n}"  # unique: the result cache never answers
    if task == "embedding":
        return "/v1/embeddings", {"model": TASKS[task], "input": [text, f"{text} b"]}
    if task == "rerank":
        docs = [f"{random.choice(WORDS)} {text} {i}" for i in range(8)]
        return "/v1/rerank", {"model": TASKS[task], "query": text, "documents": docs}
    return "/v1/classify", {"model": TASKS[task], "input": [text]}


async def _client(url: str, stop_at: float, log: list, seed: int) -> None:
    random.seed(seed)
    n = seed * 10_000_000
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        while time.monotonic() < stop_at:
            task = random.choice(list(TASKS))
            n += 1
            path, body = _request(task, n)
            t0 = time.monotonic()
            try:
                r = await c.post(path, json=body)
                status, version = r.status_code, r.headers.get("x-shipyard-model-version", "")
            except httpx.HTTPError as exc:
                status, version = 599, type(exc).__name__
            log.append((t0, task, status, time.monotonic() - t0, version))


async def _load(url: str, seconds: float, concurrency: int) -> list:
    log: list = []
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(_client(url, stop_at, log, i + 1) for i in range(concurrency)))
    return log


def _run_load(url: str, seconds: float, concurrency: int, out: Path) -> None:
    log = asyncio.run(_load(url, seconds, concurrency))
    out.write_text(json.dumps(log))


def _prepare(work: Path) -> dict[str, Path]:
    """Keys, central's home and the bundles (kept between runs); everything else afresh."""
    from artifacts.signing import generate_keypair

    if work.exists():
        for p in work.iterdir():
            if p.name not in ("bundles", "keys", "models"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    if not (work / "keys" / "publisher.key").exists():
        shutil.rmtree(work / "bundles", ignore_errors=True)
        generate_keypair(work / "keys")
    (work / "central" / "trusted_keys").mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "keys" / "publisher.pub", work / "central" / "trusted_keys" / "soak.pub")
    t0 = time.monotonic()
    bundles = build_bundles(work)
    print(f"bundles ready in {time.monotonic() - t0:.0f} s", flush=True)
    return bundles


def _start_edge(work: Path, central: Central, faults: Path) -> tuple[Child, str]:
    from artifacts import RegistryClient

    admin = (work / "central" / "admin.token").read_text().strip()
    with RegistryClient(central.url, admin) as c:
        token = c.create_token("soak-edge", ["pull"])
    port = free_port()
    models = "".join(f'[[models]]\nname = "{m}"\nchannel = "stable"\n' for m in TASKS.values())
    (work / "edge.toml").write_text(
        f'[registry]\nurl = "{central.url}"\ntoken = "{token}"\n'
        f'trusted_keys = ["{work / "keys" / "publisher.pub"}"]\npoll_interval_s = 2.0\n'
        f'timeout_s = 5.0\n[cache]\ndir = "{work / "edge-cache"}"\n'
        f"[server]\nport = {port}\n[result_cache]\nmax_bytes = 0\n{models}"
    )
    argv = [sys.executable, "-m", "bench.faulty_edge", "--config", str(work / "edge.toml")]
    edge = Child(
        "edge",
        [*argv, "--log-level", "warning"],
        work / "edge.log",
        env=dict(os.environ, **{FAULTS_ENV: str(faults)}),
    )
    url = f"http://127.0.0.1:{port}"
    edge.wait_http(f"{url}/readyz", 180)
    return edge, url


class Soak:
    """The fault schedule, run while the load generator (another process) is alive."""

    def __init__(self, central: Central, bundles: dict[str, Path], url: str, faults: Path):
        self.central, self.bundles, self.url, self.faults = central, bundles, url, faults
        self.published = [central.publish_all(bundles)]
        self.events: list[tuple[float, str]] = []
        self.rss: list[tuple[float, float]] = []

    def drive(self, loader, edge: Child, seconds: float) -> float:
        t0 = time.monotonic()
        restarted = failed = False
        next_swap = t0 + 60
        while loader.is_alive():
            at = time.monotonic() - t0
            self.rss.append((at, rss_mb(edge.pid)))
            if at >= next_swap - t0 and at < seconds - 20:
                self.published.append(self.central.publish_all(self.bundles))
                self.events.append((at, f"promoted {self.published[-1]}"))
                next_swap += 60
            if not restarted and at >= seconds / 3:
                down = self.central.restart()
                self.events.append((at, f"central restarted ({down:.1f} s down)"))
                restarted = True
            if not failed and at >= seconds / 2:
                self._fail_backend(at)
                failed = True
            time.sleep(2.0)
        return t0

    def _fail_backend(self, at: float) -> None:
        st = httpx.get(f"{self.url}/v1/status", timeout=10).json()
        target = next(m for m in st["models"] if m["model"] == TASKS["embedding"])["target"]
        (self.faults / "backend-raises").write_text(f"{TASKS['embedding']}:{target}")
        self.events.append((at, f"{TASKS['embedding']} {target} starts failing at run time"))


def main() -> None:
    import multiprocessing as mp

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    work = WORK_DIR / "soak"
    bundles = _prepare(work)
    central = Central(work, free_port())
    faults = work / "faults"
    faults.mkdir(exist_ok=True)
    soak = Soak(central, bundles, "", faults)
    edge, soak.url = _start_edge(work, central, faults)
    seconds = args.minutes * 60
    results = work / "load.json"
    loader = mp.get_context("spawn").Process(
        target=_run_load, args=(soak.url, seconds, args.concurrency, results)
    )
    loader.start()
    t0 = soak.drive(loader, edge, seconds)
    loader.join()
    status = httpx.get(f"{soak.url}/v1/status", timeout=10).json()
    edge.stop(20)
    central.child.stop(20)
    log = json.loads(results.read_text())
    write_report(log, soak, status, t0, args)


def write_report(log, soak: Soak, status: dict, t0: float, args) -> None:
    rss, events, published = soak.rss, soak.events, soak.published
    promoted = {m: {p[m] for p in published} for m in TASKS.values()}
    failed = [r for r in log if r[2] not in (200, 429)]
    shed = sum(r[2] == 429 for r in log)
    stray = [r for r in log if r[2] == 200 and int(r[4] or 0) not in promoted[TASKS[r[1]]]]
    minutes = int(args.minutes + 0.999)
    rows: list[list[object]] = []
    series: dict[str, list[float]] = {f"{t} p99": [] for t in TASKS}
    rss_by_min: list[float] = []
    for m in range(minutes):
        lo, hi = t0 + 60 * m, t0 + 60 * (m + 1)
        row: list[object] = [m + 1]
        for task in TASKS:
            lat = [r[3] * 1e3 for r in log if lo <= r[0] < hi and r[1] == task and r[2] == 200]
            p50 = statistics.median(lat) if lat else float("nan")
            p99 = percentile(lat, 99) if lat else float("nan")
            series[f"{task} p99"].append(p99)
            row += [len(lat), round(p50, 1), round(p99, 1)]
        mem = [v for s, v in rss if 60 * m <= s < 60 * (m + 1)]
        rss_by_min.append(statistics.median(mem) if mem else float("nan"))
        row.append(round(rss_by_min[-1]))
        rows.append(row)
    line_chart(
        REPORT_DIR / "soak_p99.png",
        "soak: p99 per minute (swaps every minute, registry restart, backend failure)",
        list(range(1, minutes + 1)),
        series,
        "minute",
        "p99 latency (ms)",
        logx=False,
    )
    settled = [v for v in rss_by_min[1:] if v == v] or rss_by_min
    drift = (max(settled) - min(settled)) / min(settled) * 100
    headers = ["minute"]
    for task in TASKS:
        headers += [f"{task} ok", "p50 ms", "p99 ms"]
    headers.append("RSS MB")
    final = [
        [m["model"], m["version"], m["target"], m["state"], m["reason"][:80]]
        for m in status["models"]
    ]
    body = f"""# Soak — {stamp()}

Machine: {machine()}. {args.minutes:g} minutes, {args.concurrency} concurrent clients (mixed
embed / rerank / classify, unique texts, result cache off), tiny random BERTs (onnx-fp32 +
onnx-int8 bundles each). Injected: a new version of every model promoted every minute, central
restarted, the embedding model's serving backend failing at run time from half-way.

- requests: {len(log)} ({shed} shed with 429, i.e. not admitted)
- **failed admitted requests: {len(failed)}** {failed[:3] if failed else ""}
- answers naming a version never promoted: {len(stray)}
- RSS per-minute median from minute 2: {min(settled):.0f}–{max(settled):.0f} MB
  (**{drift:.1f}% spread**; bar: within 15%)
- versions promoted per model: {len(published)}; events:
{chr(10).join(f"  - {s:6.1f} s: {what}" for s, what in events)}

{md_table(headers, rows)}

Final state:

{md_table(["model", "version", "target", "state", "reason"], final)}

![p99 per minute](soak_p99.png)
"""
    (REPORT_DIR / "soak.md").write_text(body)
    print(body)


if __name__ == "__main__":
    main()

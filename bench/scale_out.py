"""Scaling out central: blobs in an OCI registry, two replicas on one PostgreSQL database.

1. Blob download through central (streamed from its OCI registry) vs a 307 redirect to the
   registry vs central's own disk (the single-node default), with the real client (sha256 and
   fsync included); three interleaved rounds, median [min–max].
2. ``POST /v1/resolve`` (1,000 models x 10 versions x 5 targets) under 200 concurrent
   connections from ``wrk``: one replica vs two replicas (100 connections each, as a load
   balancer would split them); three interleaved rounds.
3. A simulated fleet: 1,000 edge pollers (asyncio tasks) each fetching ``timestamp.json`` and
   resolving its model every ``--interval`` seconds, spread over the two replicas: latency,
   errors, PostgreSQL connections and each replica's CPU.

Everything shares this machine's 2 cores (replicas, PostgreSQL, the registry, the load).

    python -m bench.scale_out [--blob-mb 256] [--wrk-s 10] [--fleet 1000] [--fleet-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import psutil

from artifacts.cli.procs import Child, free_port
from artifacts.client import RegistryClient
from artifacts.digests import sha256_file
from bench.common import REPORT_DIR, WORK_DIR, bar_chart, machine, md_table, percentile, stamp
from bench.oci_registry import OciRegistry
from bench.registry import seed, start_central
from bench.wrk import parse as parse_wrk
from bench.wrk import start as wrk

TARGETS = ["onnx-fp32", "onnx-int8", "openvino-int8", "tensorrt-fp16", "tensorrt-int8"]


def start_replica(
    home: Path, database_url: str | None, oci: str | None, *extra: str, keys: Path | None = None
) -> tuple[Child, str]:
    """A replica on ``database_url`` with blobs in ``oci`` (None: its own disk)."""
    flags = [
        *extra,
        *(["--oci-url", oci] if oci else []),
        *(["--tuf-online-keys", str(keys)] if keys else []),
    ]
    port = free_port()
    return start_central(home, port, database_url, *flags), f"http://127.0.0.1:{port}"


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} [{min(values):.3g}–{max(values):.3g}]"


# ---- 1. blob download ---------------------------------------------------------------------


def blob_file(mb: int, dest: Path) -> Path:
    chunk = os.urandom(1 << 20)
    with open(dest, "wb") as fh:
        for i in range(mb):
            fh.write(chunk[:-4] + i.to_bytes(4, "big"))
    return dest


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def download(url: str, token: str, digest: str, size: int, scratch: Path, pid: int) -> dict:
    """MB/s as the client sees it, and the CPU seconds central spent per GiB served."""
    dest = scratch / "blob"
    dest.unlink(missing_ok=True)
    with RegistryClient(url, token, timeout=120) as c:
        cpu0, t0 = cpu_s(pid), time.perf_counter()
        c.download_blob(digest, dest, size=size)
        elapsed, cpu = time.perf_counter() - t0, cpu_s(pid) - cpu0
    dest.unlink()
    return {"mb_s": size / elapsed / 2**20, "central_cpu_s_per_gib": cpu / (size / 2**30)}


def blob_bench(mb: int, pg_url: str, oci: OciRegistry, keys: Path, rounds: int) -> dict:
    work = WORK_DIR / "scale-blob"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = blob_file(mb, work / "src")
    digest, size = sha256_file(src), src.stat().st_size
    streamed, s_url = start_replica(work / "streamed", pg_url, oci.url, keys=keys)
    redirecting, r_url = start_replica(
        work / "redirecting", pg_url, oci.url, "--blob-redirect", keys=keys
    )
    local, l_url = start_replica(work / "local", None, None)
    token = (work / "streamed" / "admin.token").read_text().strip()
    local_token = (work / "local" / "admin.token").read_text().strip()
    try:
        with RegistryClient(s_url, token, timeout=600) as c:
            c.upload_blob(digest, src)
        with RegistryClient(l_url, local_token, timeout=600) as c:
            c.upload_blob(digest, src)
        ways: dict[str, Callable[[], dict]] = {
            "central's disk (single node)": lambda: download(
                l_url, local_token, digest, size, work, local.pid
            ),
            "through central from OCI": lambda: download(
                s_url, token, digest, size, work, streamed.pid
            ),
            "307 redirect to OCI": lambda: download(
                r_url, token, digest, size, work, redirecting.pid
            ),
        }
        runs: dict[str, list[dict]] = {k: [] for k in ways}
        names = list(ways)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                runs[name].append(ways[name]())
                print(f"  blob round {r}: {name}: {runs[name][-1]}", flush=True)
        return {"mb": mb, "runs": runs}
    finally:
        for child in (streamed, redirecting, local):
            child.stop(20)
        shutil.rmtree(work, ignore_errors=True)


# ---- 2. resolve under 200 connections (wrk) ----------------------------------------------

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
bodies = {{}}
for i = 0, 999 do
  bodies[i] = string.format('{{"model":"model-%04d","channel":"stable","capabilities":{caps}}}', i)
end
request = function()
  return wrk.format(nil, nil, nil, bodies[math.random(0, 999)])
end
"""


def resolve_bench(urls: list[str], token: str, seconds: int, rounds: int) -> dict:
    from bench.fixtures import cpu_node

    caps = json.dumps(msgspec.to_builtins(cpu_node()), separators=(",", ":"))
    script = Path(tempfile.mkdtemp()) / "resolve.lua"
    script.write_text(LUA.format(token=token, caps=caps.replace("%", "%%")))
    runs: dict[str, list[dict[str, float]]] = {"one replica": [], "two replicas": []}
    for r in range(rounds):
        order = ["one replica", "two replicas"] if r % 2 == 0 else ["two replicas", "one replica"]
        for name in order:
            time.sleep(2)
            targets = urls[:1] if name == "one replica" else urls
            procs = [wrk(f"{u}/v1/resolve", script, 200 // len(targets), seconds) for u in targets]
            results = [parse_wrk(p.communicate()[0]) for p in procs]
            runs[name].append(
                {
                    "rps": sum(x["rps"] for x in results),
                    "p50_ms": max(x["p50_ms"] for x in results),
                    "p99_ms": max(x["p99_ms"] for x in results),
                    "errors": sum(x["errors"] for x in results),
                }
            )
            print(f"  resolve round {r}: {name}: {runs[name][-1]}", flush=True)
    return runs


# ---- 3. a simulated fleet ----------------------------------------------------------------


async def fleet_sim(
    urls: list[str], token: str, nodes: int, interval_s: float, seconds: float, pg_url: str
) -> dict:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from bench.fixtures import cpu_node

    caps = msgspec.to_builtins(cpu_node())
    lat: dict[str, list[float]] = {"timestamp.json": [], "resolve": []}
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=nodes, max_keepalive_connections=nodes)
    clients = [
        httpx.AsyncClient(
            base_url=u, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
        )
        for u in urls
    ]
    stop_at = time.monotonic() + seconds

    async def node(i: int) -> None:
        rng = random.Random(i)
        c = clients[i % len(clients)]  # the load balancer's split
        await asyncio.sleep(rng.uniform(0, interval_s))
        while time.monotonic() < stop_at:
            started = time.monotonic()
            for what, call in (
                ("timestamp.json", lambda: c.get("/v1/tuf/timestamp.json")),
                (
                    "resolve",
                    lambda: c.post(
                        "/v1/resolve",
                        json={
                            "model": f"model-{i % 1000:04d}",
                            "channel": "stable",
                            "capabilities": caps,
                        },
                    ),
                ),
            ):
                t0 = time.perf_counter()
                try:
                    r = await call()
                    ok = r.status_code == 200
                except httpx.HTTPError as exc:
                    ok, r = False, None
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if ok:
                    lat[what].append(time.perf_counter() - t0)
                elif r is not None:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))

    engine = create_async_engine(pg_url)
    replicas = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "central.cli" in " ".join(p.info["cmdline"] or []) and "serve" in p.info["cmdline"]
    ]
    for p in replicas:
        p.cpu_percent()
    conns: list[int] = []

    async def sample() -> None:
        while time.monotonic() < stop_at:
            async with engine.connect() as conn:
                n = await conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                )
                conns.append(int(n.scalar_one()) - 1)  # not this sampler's own
            await asyncio.sleep(1.0)

    t0 = time.monotonic()
    await asyncio.gather(sample(), *(node(i) for i in range(nodes)))
    wall = time.monotonic() - t0
    cpu = [p.cpu_percent() for p in replicas]
    for c in clients:
        await c.aclose()
    await engine.dispose()
    done = sum(len(v) for v in lat.values())
    return {
        "nodes": nodes,
        "interval_s": interval_s,
        "seconds": wall,
        "requests_per_s": done / wall,
        "errors": errors,
        "p50_ms": {k: percentile(v, 50) * 1e3 for k, v in lat.items() if v},
        "p99_ms": {k: percentile(v, 99) * 1e3 for k, v in lat.items() if v},
        "pg_connections_max": max(conns) if conns else 0,
        "replica_cpu_percent": cpu,
    }


# ---- report ------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blob-mb", type=int, default=256)
    ap.add_argument("--wrk-s", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fleet", type=int, default=1000)
    ap.add_argument("--fleet-s", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=10.0)
    args = ap.parse_args()
    if shutil.which("wrk") is None or shutil.which("docker-registry") is None:
        raise SystemExit("needs Debian's wrk and docker-registry (make bench installs them)")
    from bench.fixtures import pg_database

    work = WORK_DIR / "scale-out"
    shutil.rmtree(work, ignore_errors=True)
    keys = work / "online-keys"
    with OciRegistry(work / "oci") as oci, pg_database() as pg_url:
        print("blob download …", flush=True)
        blob = blob_bench(args.blob_mb, pg_url, oci, keys, args.rounds)
    with OciRegistry(work / "oci2") as oci, pg_database() as pg_url:
        a, a_url = start_replica(work / "a", pg_url, oci.url, keys=keys)
        try:
            token = (work / "a" / "admin.token").read_text().strip()
            print("seeding 1,000 models x 10 versions x 5 targets …", flush=True)
            asyncio.run(seed(pg_url, 1000, 10, TARGETS))
            b, b_url = start_replica(work / "b", pg_url, oci.url, keys=keys)
            try:
                print("resolve under 200 connections …", flush=True)
                resolve = resolve_bench([a_url, b_url], token, args.wrk_s, args.rounds)
                print(f"fleet of {args.fleet} pollers …", flush=True)
                fleet = asyncio.run(
                    fleet_sim(
                        [a_url, b_url], token, args.fleet, args.interval, args.fleet_s, pg_url
                    )
                )
                print(fleet, flush=True)
            finally:
                b.stop(20)
        finally:
            a.stop(20)
    shutil.rmtree(work, ignore_errors=True)
    report(blob, resolve, fleet, args)


def report(blob: dict, resolve: dict, fleet: dict, args: argparse.Namespace) -> None:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    b = {k: [r["mb_s"] for r in v] for k, v in blob["runs"].items()}
    cpu = {k: [r["central_cpu_s_per_gib"] for r in v] for k, v in blob["runs"].items()}
    base = statistics.median(b["through central from OCI"])
    blob_rows = [[k, spread(v), statistics.median(v) / base, spread(cpu[k])] for k, v in b.items()]
    res_rows = []
    for name, runs in resolve.items():
        res_rows.append(
            [
                name,
                spread([r["rps"] for r in runs]),
                spread([r["p50_ms"] for r in runs]),
                spread([r["p99_ms"] for r in runs]),
                int(sum(r["errors"] for r in runs)),
            ]
        )
    ratio = statistics.median(r["rps"] for r in resolve["two replicas"]) / statistics.median(
        r["rps"] for r in resolve["one replica"]
    )
    bar_chart(
        REPORT_DIR / "scale_out_blob.png",
        f"Blob download, {blob['mb']} MiB (median of {args.rounds})",
        list(b),
        {"MB/s": [statistics.median(v) for v in b.values()]},
        "MB/s",
    )
    md = f"""# Scaling out — {stamp()}

Machine: {machine()}. Everything on these 2 cores: the replicas (`central serve`, one uvicorn
process each), PostgreSQL 15, Debian's docker-registry (Distribution 2.8, filesystem storage)
and the load. Medians of {args.rounds} interleaved rounds, [min–max].

## Blob download ({blob["mb"]} MiB, `RegistryClient.download_blob`: sha256 + fsync included)
{md_table(["path", "MB/s", "vs through central", "central CPU s per GiB"], blob_rows)}

On loopback the client's own sha256 and fsync bound every path near the same MB/s; what the
redirect saves is central's CPU (and, across a WAN, its bandwidth): the bytes never pass
through it.

![blob](scale_out_blob.png)

## `POST /v1/resolve` under 200 connections (`wrk`, {
        args.wrk_s
    } s per round; 1,000 models x 10 versions x 5 targets)
{
        md_table(
            [
                "replicas",
                "requests/s",
                "p50 ms (worst replica)",
                "p99 ms (worst replica)",
                "errors",
            ],
            res_rows,
        )
    }

Two replicas vs one: **{ratio:.2f}x** the requests per second at the same 200 connections.

## A simulated fleet: {fleet["nodes"]} edge pollers over two replicas
Each poller fetches `timestamp.json` and resolves its model every {fleet["interval_s"]:g} s
(a 30 s poll interval would be a third of this load), for {fleet["seconds"]:.0f} s.
{
        md_table(
            [
                "requests/s",
                "timestamp p50/p99 ms",
                "resolve p50/p99 ms",
                "errors",
                "PostgreSQL connections (max)",
                "replica CPU %",
            ],
            [
                [
                    fleet["requests_per_s"],
                    f"{fleet['p50_ms'].get('timestamp.json', 0):.3g} / {fleet['p99_ms'].get('timestamp.json', 0):.3g}",
                    f"{fleet['p50_ms'].get('resolve', 0):.3g} / {fleet['p99_ms'].get('resolve', 0):.3g}",
                    json.dumps(fleet["errors"]) if fleet["errors"] else "0",
                    fleet["pg_connections_max"],
                    " / ".join(f"{c:.0f}" for c in fleet["replica_cpu_percent"]),
                ]
            ],
        )
    }
"""
    (REPORT_DIR / "scale_out.md").write_text(md)
    (REPORT_DIR / "scale_out.json").write_text(
        json.dumps({"blob": blob, "resolve": resolve, "fleet": fleet}, indent=1)
    )
    print(md)


if __name__ == "__main__":
    main()

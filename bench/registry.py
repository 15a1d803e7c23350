"""Registry speed (issue: central registry): blob streaming and resolve latency.

1. A 500 MB blob uploaded and downloaded over loopback: MB/s and the server's RSS before,
   during and after (flat memory = streaming in constant memory).
2. ``POST /v1/resolve`` with 1,000 models x 10 versions x 5 targets in the database: p50/p99,
   on SQLite and on PostgreSQL, against a live ``central serve`` process.

    python -m bench.registry [--blob-mb 500] [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import httpx
import msgspec

from artifacts.cli.procs import Child, PeakRss, free_port, python_cli, rss_mb
from artifacts.digests import digest_of, sha256_bytes
from artifacts.targets import BUILDABLE_TARGETS
from bench.common import REPORT_DIR, WORK_DIR, machine, md_table, percentile, stamp


def start_central(home: Path, port: int, database_url: str | None = None, *extra: str) -> Child:
    """``central serve`` (no build workers) until it is ready; ``extra``: more flags."""
    argv = python_cli(
        "central.cli",
        "serve",
        "--home",
        str(home),
        "--port",
        str(port),
        "--local-workers",
        "0",
        "--log-level",
        "warning",
        *extra,
    )
    if database_url:
        argv += ["--database-url", database_url]
    home.mkdir(parents=True, exist_ok=True)
    child = Child(home.name, argv, home.parent / f"{home.name}.log")
    child.wait_http(f"http://127.0.0.1:{port}/readyz", 60)
    return child


def blob_bench(blob_mb: int, port: int) -> dict:
    home = WORK_DIR / "registry-blob"
    shutil.rmtree(home, ignore_errors=True)
    proc = start_central(home, port)
    try:
        token = (home / "admin.token").read_text().strip()
        h = {"Authorization": f"Bearer {token}"}
        chunk = os.urandom(1 << 20)
        digest_h = hashlib.sha256()
        for i in range(blob_mb):
            digest_h.update(chunk[:-4] + i.to_bytes(4, "big"))
        digest = digest_of(digest_h)

        def body():
            for i in range(blob_mb):
                yield chunk[:-4] + i.to_bytes(4, "big")

        rss_idle = rss_mb(proc.pid)
        sampler = PeakRss(proc.pid).start()
        t0 = time.perf_counter()
        r = httpx.put(
            f"http://127.0.0.1:{port}/v1/blobs/{digest}",
            content=body(),
            headers={**h, "Content-Type": "application/octet-stream"},
            timeout=600,
        )
        r.raise_for_status()
        up_s = time.perf_counter() - t0
        up_peak = sampler.stop()
        sampler = PeakRss(proc.pid).start()
        t0 = time.perf_counter()
        n = 0
        with httpx.stream(
            "GET", f"http://127.0.0.1:{port}/v1/blobs/{digest}", headers=h, timeout=600
        ) as resp:
            for part in resp.iter_raw(1 << 20):
                n += len(part)
        down_s = time.perf_counter() - t0
        down_peak = sampler.stop()
        assert n == blob_mb << 20
        return {
            "blob_mb": blob_mb,
            "upload_mb_s": blob_mb / up_s,
            "download_mb_s": blob_mb / down_s,
            "server_rss_idle_mb": rss_idle,
            "server_rss_peak_upload_mb": up_peak,
            "server_rss_peak_download_mb": down_peak,
        }
    finally:
        proc.stop(20)
        shutil.rmtree(home, ignore_errors=True)


async def seed(url: str, models: int, versions: int, targets: list[str]) -> float:
    """Bulk-insert a realistic registry: every bundle row holds a real ~3.5 KB manifest."""
    from sqlalchemy import insert

    from bench.fixtures import make_manifest
    from central.channels.models import Channel
    from central.db import Database, migrate
    from central.registry.models import Bundle, Model, Version

    db = Database(url)
    await migrate(db.engine)
    t0 = time.perf_counter()
    templates = {t: make_manifest(t) for t in targets}
    async with db.transaction() as s:
        await s.execute(
            insert(Model),
            [
                {"id": i + 1, "name": f"model-{i:04d}", "last_version": versions}
                for i in range(models)
            ],
        )
        await s.execute(
            insert(Version),
            [
                {
                    "id": i * versions + v + 1,
                    "model_id": i + 1,
                    "number": v + 1,
                    "created_by": "seed",
                    "source_digest": "",
                    "notes": "",
                }
                for i in range(models)
                for v in range(versions)
            ],
        )
        rows = []
        for i in range(models):
            for v in range(versions):
                for t in targets:
                    m = templates[t]
                    data = msgspec.json.encode(
                        msgspec.structs.replace(
                            m,
                            model=msgspec.structs.replace(
                                m.model, name=f"model-{i:04d}", version=v + 1
                            ),
                        )
                    )
                    rows.append(
                        {
                            "version_id": i * versions + v + 1,
                            "target": t,
                            "manifest": data,
                            "manifest_digest": sha256_bytes(data),
                            "signature": "x",
                            "key_id": "ed25519:seed",
                            "quality_passed": True,
                            "size": 1,
                            "created_by": "seed",
                        }
                    )
            if len(rows) >= 5000:
                await s.execute(insert(Bundle), rows)
                rows = []
        if rows:
            await s.execute(insert(Bundle), rows)
        await s.execute(
            insert(Channel),
            [
                {
                    "model_id": i + 1,
                    "name": "stable",
                    "version": versions,
                    "seq": 1,
                    "halted": False,
                }
                for i in range(models)
            ],
        )
    await db.close()
    return time.perf_counter() - t0


def resolve_bench(
    label: str, home: Path, port: int, database_url: str | None, requests: int
) -> dict:
    from bench.fixtures import cpu_node

    targets = list(BUILDABLE_TARGETS)
    url = database_url or f"sqlite+aiosqlite:///{home / 'central.db'}"
    home.mkdir(parents=True, exist_ok=True)
    seed_s = asyncio.run(seed(url, 1000, 10, targets))
    proc = start_central(home, port, database_url)
    try:
        token = (
            (home / "admin.token").read_text().strip() if (home / "admin.token").exists() else None
        )
        caps = msgspec.to_builtins(cpu_node())
        rng = random.Random(0)
        lat = []
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        ) as c:
            for i in range(requests + 50):
                body = {
                    "model": f"model-{rng.randrange(1000):04d}",
                    "channel": "stable",
                    "capabilities": caps,
                }
                t0 = time.perf_counter()
                r = c.post("/v1/resolve", json=body)
                dt = time.perf_counter() - t0
                r.raise_for_status()
                if i >= 50:
                    lat.append(dt)
        assert len(r.json()["eligible"]) == 3
        return {
            "database": label,
            "bundles": 1000 * 10 * len(targets),
            "seed_s": seed_s,
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
        }
    finally:
        proc.stop(20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blob-mb", type=int, default=500)
    ap.add_argument("--requests", type=int, default=500)
    args = ap.parse_args()
    from bench.fixtures import pg_database

    print("blob streaming …", flush=True)
    blob = blob_bench(args.blob_mb, free_port())
    print(blob, flush=True)
    results = []
    home = WORK_DIR / "registry-resolve-sqlite"
    shutil.rmtree(home, ignore_errors=True)
    # first start creates the admin token; seed afterwards needs the schema, so start once
    start_central(home, (p := free_port())).stop(20)
    results.append(resolve_bench("SQLite", home, p, None, args.requests))
    print(results[-1], flush=True)
    with pg_database() as pg_url:
        home_pg = WORK_DIR / "registry-resolve-pg"
        shutil.rmtree(home_pg, ignore_errors=True)
        start_central(home_pg, (p := free_port()), pg_url).stop(20)
        results.append(resolve_bench("PostgreSQL 15", home_pg, p, pg_url, args.requests))
        print(results[-1], flush=True)
    md = f"""# Registry — {stamp()}

Machine: {
        machine()
    }. Server: `central serve` (uvicorn, one process) on loopback; client: httpx in another process.

## Blob streaming ({blob["blob_mb"]} MB)
{
        md_table(
            [
                "upload MB/s",
                "download MB/s (target ≥ 300)",
                "server RSS idle MB",
                "peak during upload MB",
                "peak during download MB",
            ],
            [
                [
                    blob["upload_mb_s"],
                    blob["download_mb_s"],
                    blob["server_rss_idle_mb"],
                    blob["server_rss_peak_upload_mb"],
                    blob["server_rss_peak_download_mb"],
                ]
            ],
        )
    }

Memory stays flat: the server streams 1 MiB chunks both ways (upload hashed while written to a temp file).

## Resolve latency (1,000 models × 10 versions × 5 targets, {args.requests} requests, random models)
{
        md_table(
            ["database", "bundle rows", "p50 ms (target ≤ 5)", "p99 ms", "seed s"],
            [[r["database"], r["bundles"], r["p50_ms"], r["p99_ms"], r["seed_s"]] for r in results],
        )
    }
"""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "registry.md").write_text(md)
    (REPORT_DIR / "registry.json").write_text(
        json.dumps({"blob": blob, "resolve": results}, indent=1)
    )
    print(md)


if __name__ == "__main__":
    main()

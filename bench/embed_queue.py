"""The catalog queue (NATS JetStream) against calling the HTTP API, on all-MiniLM-L6-v2.

All in one run, on this machine: our own ``nats-server``, a ``central serve`` process on
PostgreSQL (the catalog, runs and vectors), one edge node process that serves the model and
runs the embed worker. Product texts from the generated catalog (titles plus ~5% long
descriptions); the edge's result cache is off.

1. **Bulk throughput, queue vs HTTP.** The same products, batches of the same size (the
   queue's chunk, 64) and the same concurrency (the worker's ``max_ack_pending``): through
   the queue (jobs from central, embedded in the batcher's bulk lane, vectors stored in
   central's database) vs ``POST /v1/embeddings`` from a Python client. Three interleaved
   rounds; median [min-max]. The queue's cost is ``1 - queue/http``.
2. **Interactive p99 under bulk.** ``wrk`` c=16, one short query per request, alone vs while
   the 100,000-product run is embedding.
3. **100,000 products re-embedded end to end**, counts checked in central's database.

    python -m bench.embed_queue [--products 100000] [--compare 6000] [--wrk-s 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import time
from pathlib import Path

import httpx

from artifacts import embed_queue as eq
from artifacts.cli.procs import Child, free_port, python_cli
from artifacts.client import RegistryClient
from artifacts.wire import CatalogBinding, RunRequest
from bench.common import REPORT_DIR, WORK_DIR, bar_chart, machine, md_table, stamp
from bench.fixtures import create_pg_database, drop_pg_database
from bench.nats_server import NatsServer
from bench.wrk import parse as parse_wrk
from bench.wrk import start as wrk

MODEL = "product-embedder"
CHUNK = 64
IN_FLIGHT = 4


def spread(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


class Setup:
    def __init__(self, bundles: Path, pg_url: str) -> None:
        from artifacts import load_signing_key, publish_version, verify_bundle
        from artifacts.signing import generate_keypair
        from artifacts.targets import CPU_TARGETS

        self.work = WORK_DIR / "embed-queue"
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "central" / "trusted_keys").mkdir(parents=True)
        generate_keypair(self.work / "keys")
        shutil.copy(self.work / "keys" / "publisher.pub", self.work / "central" / "trusted_keys")
        self.nats = NatsServer(self.work / "nats").start()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = python_cli(
            "central.cli",
            "serve",
            "--home",
            str(self.work / "central"),
            "--port",
            str(port),
            "--local-workers",
            "0",
            "--database-url",
            pg_url,
            "--nats-url",
            self.nats.url,
        )
        self.central = Child("central", argv, self.work / "central.log")
        self.central.wait_http(f"{self.url}/readyz", 180)
        admin = (self.work / "central" / "admin.token").read_text().strip()
        self.admin = RegistryClient(self.url, admin, timeout=120)
        key = load_signing_key(self.work / "keys" / "publisher.key")
        pub = publish_version(
            self.admin, [verify_bundle(bundles / t, None) for t in CPU_TARGETS], key=key
        )
        self.version = pub.version
        self.admin.promote(MODEL, "stable", pub.version)
        token = self.admin.create_token("edge", ["embed"])
        self.edge_port = free_port()
        self.edge_url = f"http://127.0.0.1:{self.edge_port}"
        home = self.work / "edge"
        home.mkdir()
        (home / "edge.toml").write_text(
            f"""[registry]
url = "{self.url}"
token = "{token}"
trusted_keys = ["{self.work / "keys" / "publisher.pub"}"]
poll_interval_s = 3600
[cache]
dir = "{home / "cache"}"
[server]
port = {self.edge_port}
[result_cache]
max_bytes = 0
[embed_worker]
enabled = true
nats_url = "{self.nats.url}"
catalogs = ["cmp-0", "cmp-1", "cmp-2", "big"]
max_ack_pending = {IN_FLIGHT}
[[models]]
name = "{MODEL}"
channel = "stable"
"""
        )
        argv = python_cli(
            "edge_runtime.cli",
            "serve",
            "--config",
            str(home / "edge.toml"),
            "--log-level",
            "warning",
        )
        self.edge = Child("edge", argv, home / "edge.log")
        self.edge.wait_http(f"{self.edge_url}/readyz", 300)
        self.target = httpx.get(f"{self.edge_url}/v1/status").json()["models"][0]["target"]

    def close(self) -> None:
        self.edge.stop(20)
        self.central.stop(20)
        self.admin.close()
        self.nats.stop()


async def _publish(url: str, catalog: str, records: list[dict]) -> None:
    nc = await eq.connect(url, name="bench")
    js = nc.jetstream(timeout=30)
    await eq.ensure_streams(js)
    updates = [
        eq.CatalogUpdate(op="upsert", id=r["id"], text=r["text"], fields=r["fields"])
        for r in records
    ]
    await eq.publish_updates(js, catalog, updates, f"bench-{catalog}")
    await nc.close()


def load_catalog(s: Setup, catalog: str, records: list[dict]) -> float:
    s.admin.bind_catalog(
        catalog, CatalogBinding(model=MODEL, index=f"{catalog}-index", target=s.target, chunk=CHUNK)
    )
    t0 = time.monotonic()
    asyncio.run(_publish(s.nats.url, catalog, records))
    while s.admin.catalog(catalog).items < len(records):
        time.sleep(0.5)
    return time.monotonic() - t0


def run_queue(s: Setup, catalog: str, n: int, during=None) -> dict:
    """Start a run; until every product has its vector (central's exact count)."""
    t0 = time.monotonic()
    s.admin.start_run(catalog, RunRequest(version=s.version, promote=False))
    extra = during() if during else None
    while True:
        run = next(r for r in s.admin.catalog(catalog).runs if r.version == s.version)
        if run.state != "embedding":
            break
        time.sleep(0.25)
    wall = time.monotonic() - t0
    return {
        "items_s": n / wall,
        "wall_s": wall,
        "state": run.state,
        "done": run.done,
        "total": run.total,
        "during": extra,
    }


async def _http(url: str, texts: list[str]) -> float:
    chunks = [texts[i : i + CHUNK] for i in range(0, len(texts), CHUNK)]
    queue: asyncio.Queue = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    async with httpx.AsyncClient(timeout=120) as client:

        async def worker() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                while True:  # a bulk client backs off on 429, as the queue's worker does
                    r = await client.post(
                        f"{url}/v1/embeddings", json={"input": batch, "model": MODEL}
                    )
                    if r.status_code != 429:
                        break
                    await asyncio.sleep(0.05)
                r.raise_for_status()
                assert len(r.json()["data"]) == len(batch)

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return time.monotonic() - t0


def run_http(s: Setup, texts: list[str]) -> dict:
    wall = asyncio.run(_http(s.edge_url, texts))
    return {"items_s": len(texts) / wall, "wall_s": wall}


LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
bodies = {{}}
{bodies}
n = #bodies
i = 0
request = function()
  i = i % n + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def wrk_queries(s: Setup, queries: list[str], seconds: int) -> dict:
    lines = [
        f"bodies[{k + 1}] = [==[{json.dumps({'input': q, 'model': MODEL}, ensure_ascii=False)}]==]"
        for k, q in enumerate(queries[:2000])
    ]
    script = s.work / "queries.lua"
    script.write_text(LUA.format(bodies="\n".join(lines)))
    out = wrk(f"{s.edge_url}/v1/embeddings", script, 16, seconds).communicate()[0]
    return parse_wrk(out)


def vector_rows(pg_url: str, catalog: str, version: int) -> int:
    from sqlalchemy import func, select

    from central.catalogs.models import CatalogVector
    from central.db import Database

    async def count() -> int:
        db = Database(pg_url)
        try:
            async with db.session() as sess:
                q = select(func.count()).where(
                    CatalogVector.catalog == catalog, CatalogVector.version == version
                )
                return int((await sess.execute(q)).scalar_one())
        finally:
            await db.close()

    return asyncio.run(count())


def main() -> None:  # noqa: PLR0915 - one linear script, phase by phase
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundles", type=Path, default=WORK_DIR / "minilm-bundles")
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--compare", type=int, default=6000)
    ap.add_argument("--wrk-s", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--report-from", type=Path, help="write the report from a saved embed_queue.json"
    )
    args = ap.parse_args()
    if args.report_from:
        write_report(json.loads(args.report_from.read_text()))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("needs Debian's wrk (make bench installs it)")
    if not (args.bundles / "onnx-int8").exists():
        from bench.backends import build_bundles

        build_bundles(args.bundles)
    from builder.data.catalog import catalog_records
    from builder.data.datasets import eval_set

    queries = eval_set("embedding", None).queries
    records = catalog_records(args.products)
    compare = records[: args.compare]
    pg_url, pg_name = create_pg_database()
    s = Setup(args.bundles, pg_url)
    r: dict = {
        "machine": machine(),
        "stamp": stamp(),
        "target": s.target,
        "args": vars(args) | {"bundles": str(args.bundles)},
    }
    try:
        for k in range(args.rounds):
            load_catalog(s, f"cmp-{k}", compare)
        run_http(s, [c["text"] for c in compare[:512]])  # warm the node
        queue, http = [], []
        for k in range(args.rounds):  # interleaved, order alternating
            order = ("queue", "http") if k % 2 == 0 else ("http", "queue")
            for what in order:
                time.sleep(2)
                if what == "queue":
                    got = run_queue(s, f"cmp-{k}", len(compare))
                    assert got["done"] == got["total"] == len(compare), got
                    queue.append(got["items_s"])
                else:
                    http.append(run_http(s, [c["text"] for c in compare])["items_s"])
                print(
                    f"round {k} {what}: {(queue if what == 'queue' else http)[-1]:.0f} items/s",
                    flush=True,
                )
        r["queue_items_s"], r["http_items_s"] = queue, http
        r["ratio"] = [q / h for q, h in zip(queue, http, strict=True)]

        r["publish_ingest_s"] = load_catalog(s, "big", records)
        print(f"published and ingested {len(records)} in {r['publish_ingest_s']:.0f} s", flush=True)
        alone = [wrk_queries(s, queries, args.wrk_s)]
        print(f"interactive alone: {alone[-1]}", flush=True)

        def during() -> list[dict]:
            time.sleep(5)  # jobs flowing
            out = []
            for _ in range(args.rounds):
                out.append(wrk_queries(s, queries, args.wrk_s))
                print(f"interactive with bulk: {out[-1]}", flush=True)
                time.sleep(3)
            return out

        big = run_queue(s, "big", len(records), during=during)
        r["big"] = big | {"rows": vector_rows(pg_url, "big", s.version)}
        print(f"100k: {r['big']}", flush=True)
        for _ in range(args.rounds - 1):
            alone.append(wrk_queries(s, queries, args.wrk_s))
            print(f"interactive alone: {alone[-1]}", flush=True)
        r["alone"], r["with_bulk"] = alone, big["during"]
        r["dead_letters"] = s.admin.catalog("big").dead_letters
    finally:
        s.close()
        drop_pg_database(pg_name)
    write_report(r)


def write_report(r: dict) -> None:
    alone_p99 = [x["p99_ms"] for x in r["alone"]]
    bulk_p99 = [x["p99_ms"] for x in r["with_bulk"]]
    big = r["big"]
    ratio = statistics.median(r["ratio"])
    text = f"""# Catalog queue: NATS JetStream re-embedding vs the HTTP API

{r["machine"]}; {r["stamp"]}. all-MiniLM-L6-v2, bundle `{r["target"]}` (the one the node
selected); product texts from the generated catalog (titles, ~5% long descriptions); result
cache off. Our own nats-server (JetStream, file store), `central serve` on PostgreSQL, one
edge node serving the model and running the embed worker. Medians of {len(r["ratio"])}
interleaved rounds with [min–max].

## 1. Bulk throughput: queue vs HTTP ({r["args"]["compare"]:,} products, batches of {CHUNK}, {
        IN_FLIGHT
    } in flight)

{
        md_table(
            ["path", "items/s"],
            [
                [
                    "queue (jobs from central, bulk lane, vectors stored in PostgreSQL)",
                    spread(r["queue_items_s"]),
                ],
                [
                    "HTTP `POST /v1/embeddings` (Python client, vectors as JSON)",
                    spread(r["http_items_s"]),
                ],
                ["queue / HTTP", spread(r["ratio"], 2)],
            ],
        )
    }

Through the queue: **{ratio:.2f}x** the HTTP path's throughput (goal: the queue costs < 10%,
i.e. ≥ 0.90x). The HTTP client parses every vector out of JSON on the same two cores; the
queue's worker hands them to central as base64.

## 2. Interactive p99 under a bulk run (`wrk`, c=16, one short query per request)

{
        md_table(
            ["", "req/s", "p50 ms", "p99 ms"],
            [
                [
                    "alone",
                    spread([x["rps"] for x in r["alone"]]),
                    spread([x["p50_ms"] for x in r["alone"]], 1),
                    spread(alone_p99, 1),
                ],
                [
                    f"while {big['total']:,} products embed",
                    spread([x["rps"] for x in r["with_bulk"]]),
                    spread([x["p50_ms"] for x in r["with_bulk"]], 1),
                    spread(bulk_p99, 1),
                ],
            ],
        )
    }

p99 with bulk / alone: **{
        statistics.median(bulk_p99) / statistics.median(alone_p99):.2f}x** (goal: ≤ 2x).

## 3. {big["total"]:,} products re-embedded end to end

{
        md_table(
            ["measure", "value"],
            [
                [
                    f"publish ({big['total']:,} updates) + central ingest",
                    f"{r['publish_ingest_s']:.0f} s",
                ],
                [
                    "run: start → every vector stored",
                    f"{big['wall_s']:.0f} s ({big['items_s']:.0f} items/s, with the wrk phases)",
                ],
                ["run done / total", f"{big['done']:,} / {big['total']:,}"],
                ["vector rows in PostgreSQL", f"{big['rows']:,}"],
                ["dead letters", str(r["dead_letters"])],
            ],
        )
    }

The run ends in `{big["state"]}`: this bench has no build worker, so the index build it
submitted waits (the tests build and verify indexes from queue vectors end to end).
{r.get("note", "")}
"""
    text += "\n![interactive latency under bulk](embed_queue_p99.png)\n"
    bar_chart(
        REPORT_DIR / "embed_queue_p99.png",
        "Interactive latency (wrk c=16), alone vs while a bulk run embeds",
        ["p50", "p99"],
        {
            "alone": [
                statistics.median(x["p50_ms"] for x in r["alone"]),
                statistics.median(alone_p99),
            ],
            "with bulk": [
                statistics.median(x["p50_ms"] for x in r["with_bulk"]),
                statistics.median(bulk_p99),
            ],
        },
        "ms",
    )
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "embed_queue.md").write_text(text)
    (REPORT_DIR / "embed_queue.json").write_text(json.dumps(r, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()

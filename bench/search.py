"""Catalog search (issue #15): the catalog index vs the alternatives, on the same vectors.

A generated catalog (default 100,000 products, 5% with long descriptions) embedded once by the
MiniLM onnx-int8 bundle; 1,000 held-out shopper queries. Side by side, in one run:

* usearch HNSW as Shipyard ships it (the builder's dtype/ef ladder, opened memory-mapped through
  the edge's CatalogIndex), usearch f16, faiss HNSW (f32 and SQ8), and exact FP32 brute force
  with numpy: recall@10 against exact search, build time, index bytes, c=1 p50/p99 and c=64
  throughput (64 threads, one query each);
* filtered search (a category, and a price range + in stock) through CatalogIndex;
* RSS of a process holding the index (mapped, then after 1,000 queries);
* queries embedded by another target (openvino-int8, onnx-fp32) searched in the onnx-int8
  index: the top-10 overlap with onnx-int8 queries (what mixing targets costs);
* ``/v1/search`` over HTTP on a real central + edge: c=1 p50/p99 (result cache off and warm) and
  c=64 throughput against ``/v1/embeddings`` alone on the same queries.

    python -m bench.search [--items 100000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import REPORT_DIR, WORK_DIR, isolated, machine, md_table, percentile, stamp

WORK = WORK_DIR / "search"
EMBED_SECONDS: dict[str, float] = {}  # measured when the vectors were computed (then cached)


# ---- data --------------------------------------------------------------------------------


def stamped_bundles(bundles: Path) -> tuple[dict[str, Path], Path, Path]:
    """The MiniLM bundles restamped as v1 with a bench key: {target: dir}, key, pub."""
    from artifacts.bundle import restamp_bundle
    from artifacts.signing import generate_keypair, load_signing_key
    from artifacts.targets import CPU_TARGETS

    keys = WORK / "keys"
    if not (keys / "publisher.key").exists():
        generate_keypair(keys)
    key = load_signing_key(keys / "publisher.key")
    out = {}
    for t in CPU_TARGETS:
        dest = WORK / "model-v1" / t
        if not dest.exists():
            restamp_bundle(bundles / t, dest, version=1, key=key)
        out[t] = dest
    return out, keys / "publisher.key", keys / "publisher.pub"


def embedded(model_dir: Path, texts: list[str], label: str) -> np.ndarray:
    from artifacts.bundle import verify_bundle
    from artifacts.digests import sha256_bytes
    from builder.index import embed_texts

    bundle = verify_bundle(model_dir, None)
    digest = sha256_bytes((bundle.digest + "\n".join(texts)).encode())[7:23]
    cache = WORK / f"vectors-{label}-{digest}.npy"
    timing = cache.with_suffix(".seconds")
    if cache.exists() and timing.exists():
        EMBED_SECONDS[label] = float(timing.read_text())
        return np.load(cache)
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9)
        print(f"  embed {label}: {done}/{total} ({rate:.0f}/s)", end="\r", flush=True)

    v = embed_texts(bundle, texts, progress=progress if len(texts) > 5000 else None)
    print(f"  embed {label}: {len(texts)} in {time.perf_counter() - t0:.0f} s" + " " * 20)
    np.save(cache, v)
    EMBED_SECONDS[label] = time.perf_counter() - t0
    timing.write_text(f"{EMBED_SECONDS[label]:.1f}")
    return v


# ---- contenders --------------------------------------------------------------------------


def _latency(search_one, queries: np.ndarray) -> dict[str, float]:
    for q in queries[:20]:
        search_one(q)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search_one(q)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": statistics.median(times), "p99_ms": percentile(times, 99)}


def _throughput(search_one, queries: np.ndarray, seconds: float, threads: int = 64) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def worker(i: int) -> None:
        j = i
        while time.perf_counter() < stop:
            search_one(queries[j % len(queries)])
            counts[i] += 1
            j += threads

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return sum(counts) / (time.perf_counter() - t0)


def _recall(ids: list[np.ndarray], truth: np.ndarray) -> float:
    return float(
        np.mean(
            [len(set(a.tolist()) & set(t.tolist())) / 10 for a, t in zip(ids, truth, strict=True)]
        )
    )


def measure_usearch_shipyard(
    index_dir: str, queries_file: str, truth_file: str, seconds: float
) -> dict:
    """The edge path: the signed bundle opened memory-mapped by CatalogIndex (own process)."""
    from artifacts.bundle import verify_bundle
    from artifacts.cli.procs import rss_mb
    from edge_runtime.search.catalog_index import CatalogIndex

    queries, truth = np.load(queries_file), np.load(truth_file)
    rss0 = rss_mb()
    ix = CatalogIndex(verify_bundle(Path(index_dir), None))
    rss_open = rss_mb() - rss0
    ids = [np.array([int(h.id[1:]) for h in ix.search(q, 10)]) for q in queries]
    rss_used = rss_mb() - rss0
    one = lambda q: ix.search(q, 10)  # noqa: E731
    out = {
        "recall": _recall(ids, truth),
        **_latency(one, queries),
        "qps64": _throughput(one, queries, seconds),
        "rss_open_mb": rss_open,
        "rss_used_mb": rss_used,
    }
    n_cat = ix.fields()
    filters: list[tuple[str, dict]] = [
        ("filter_category", {"category": "headphones"}),  # 1 in 12: HNSW, over-fetching
        ("filter_brand", {"brand": "Sony", "in_stock": True}),  # a few hundred: exact
        ("filter_price_stock", {"price": {"gte": 20, "lt": 80}, "in_stock": True}),
    ]
    for label, spec in filters:
        assert spec.keys() <= n_cat.keys()
        out[f"{label}_p50_ms"] = _latency(lambda q, s=spec: ix.search(q, 10, s), queries[:300])[
            "p50_ms"
        ]
    return out


def measure_usearch_plain(
    vectors_file: str, queries_file: str, truth_file: str, dtype: str, seconds: float
) -> dict:
    from usearch.index import Index

    vectors, queries, truth = (np.load(f) for f in (vectors_file, queries_file, truth_file))
    t0 = time.perf_counter()
    ix = Index(ndim=vectors.shape[1], metric="cos", dtype=dtype, connectivity=32, expansion_add=200)
    ix.add(np.arange(len(vectors), dtype=np.uint64), vectors)
    build_s = time.perf_counter() - t0
    for ef in (64, 128, 256, 512):
        ix.expansion_search = ef  # type: ignore[misc]  # settable; the stub says read-only
        ids = [np.asarray(ix.search(q, 10).keys) for q in queries]
        if _recall(ids, truth) >= 0.95:
            break
    one = lambda q: ix.search(q, 10)  # noqa: E731
    return {
        "recall": _recall(ids, truth),
        "build_s": build_s,
        "bytes": ix.memory_usage,
        "ef": ef,
        **_latency(one, queries),
        "qps64": _throughput(one, queries, seconds),
    }


def measure_faiss(
    vectors_file: str, queries_file: str, truth_file: str, kind: str, seconds: float
) -> dict:
    import faiss

    vectors, queries, truth = (np.load(f) for f in (vectors_file, queries_file, truth_file))
    dim = vectors.shape[1]
    t0 = time.perf_counter()
    ix: faiss.IndexHNSW
    if kind == "sq8":
        qt = faiss.ScalarQuantizer.QT_8bit
        ix = faiss.IndexHNSWSQ(dim, qt, 32, faiss.METRIC_INNER_PRODUCT)  # type: ignore[arg-type]
        ix.train(vectors)
    else:
        ix = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    ix.hnsw.efConstruction = 200
    ix.add(vectors)
    build_s = time.perf_counter() - t0
    for ef in (64, 128, 256, 512):
        ix.hnsw.efSearch = ef
        _d, found = ix.search(queries, 10)
        if _recall(list(found), truth) >= 0.95:
            break
    one = lambda q: ix.search(q[None, :], 10)  # noqa: E731
    with tempfile.NamedTemporaryFile() as tmp:
        faiss.write_index(ix, tmp.name)
        size = Path(tmp.name).stat().st_size
    return {
        "recall": _recall(list(found), truth),
        "build_s": build_s,
        "bytes": size,
        "ef": ef,
        **_latency(one, queries),
        "qps64": _throughput(one, queries, seconds),
    }


def measure_numpy(vectors_file: str, queries_file: str, seconds: float) -> dict:
    vectors, queries = np.load(vectors_file), np.load(queries_file)

    def one(q):
        scores = vectors @ q
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:  # the best case: 64 queries in one GEMM
        block = queries[(n * 64) % len(queries) :][:64]
        scores = block @ vectors.T
        np.argpartition(-scores, 10, axis=1)
        n += 1
    batched = n * 64 / (time.perf_counter() - t0)
    return {
        "recall": 1.0,
        "build_s": 0.0,
        "bytes": vectors.nbytes,
        **_latency(one, queries[:300]),
        "qps64": _throughput(one, queries, seconds),
        "qps_batched64": batched,
    }


# ---- HTTP ----------------------------------------------------------------------------------


def _edge_round(stack, cache_bytes: int, texts: list[str], seconds: float) -> dict:
    """One edge process with the index: c=1 search/embedding latency; c=64 when the cache is off."""
    import httpx

    from artifacts.cli.procs import Child, free_port, python_cli
    from bench.loadgen import run_closed

    port = free_port()
    home = stack.work / f"edge-search-{cache_bytes}"
    home.mkdir(parents=True, exist_ok=True)
    (home / "edge.toml").write_text(
        f"""[registry]
url = "{stack.url}"
token_file = "{stack.work / "pull.token"}"
trusted_keys = ["{stack.work / "keys" / "publisher.pub"}"]
poll_interval_s = 3600
[cache]
dir = "{home / "cache"}"
[server]
port = {port}
[result_cache]
max_bytes = {cache_bytes}
[[models]]
name = "product-embedder"
[[indexes]]
name = "product-catalog"
model = "product-embedder"
"""
    )
    argv = python_cli(
        "edge_runtime.cli", "serve", "--config", str(home / "edge.toml"), "--log-level", "warning"
    )
    child = Child("edge-search", argv, home / "edge.log")
    url = f"http://127.0.0.1:{port}"
    try:
        child.wait_http(f"{url}/readyz", 300)
        deadline = time.monotonic() + 300
        while httpx.get(f"{url}/v1/status").json()["indexes"][0]["state"] != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError("the index never loaded")
            time.sleep(0.5)
        sample = texts[:300]
        lat, emb = [], []
        with httpx.Client() as h:
            if cache_bytes:  # warm the result cache with the queries
                for t in sample:
                    h.post(f"{url}/v1/search", json={"query": t})
            for t in sample:
                t0 = time.perf_counter()
                r = h.post(f"{url}/v1/search", json={"query": t, "top_k": 10})
                lat.append((time.perf_counter() - t0) * 1e3)
                assert r.status_code == 200, r.text
            for t in sample:
                t0 = time.perf_counter()
                h.post(f"{url}/v1/embeddings", json={"input": t})
                emb.append((time.perf_counter() - t0) * 1e3)
        row = {
            "search_p50_ms": statistics.median(lat),
            "search_p99_ms": percentile(lat, 99),
            "embed_p50_ms": statistics.median(emb),
        }
        if not cache_bytes:
            search = {"field_name": "query", "extra": {"top_k": 10}}
            s64 = run_closed(f"{url}/v1/search", texts, 64, seconds=seconds, **search)
            e64 = run_closed(f"{url}/v1/embeddings", texts, 64, seconds=seconds)
            row |= {
                "search_qps64": s64["throughput"],
                "search_p99_64": s64["p99_ms"],
                "embed_qps64": e64["throughput"],
                "embed_p99_64": e64["p99_ms"],
            }
        return row
    finally:
        child.stop(20)


def http_phase(bundles: Path, index_dir: Path, texts: list[str], seconds: float) -> dict:

    from artifacts import RegistryClient, load_signing_key, publish_version, verify_bundle
    from bench.serving import Stack

    stack = Stack(bundles)
    key = load_signing_key(stack.work / "keys" / "publisher.key")  # re-signed by the publisher
    try:
        admin = (stack.work / "central" / "admin.token").read_text().strip()
        with RegistryClient(stack.url, admin) as c:
            # the index was embedded with product-embedder v1, the version Stack publishes
            v = publish_version(
                c, [verify_bundle(index_dir, None)], model="product-catalog", key=key
            )
            c.promote("product-catalog", "stable", v.version)
        results = {}
        for label, cache_bytes in (("cache off", 0), ("cache warm", 64 << 20)):
            results[label] = _edge_round(stack, cache_bytes, texts, seconds)
            print(f"  http {label}: {results[label]}", flush=True)
        return results
    finally:
        stack.close()


# ---- main --------------------------------------------------------------------------------


def _ship_index(r: dict, catalog, vectors, q8, model_dir: Path, key_file: Path) -> Path:
    """The bundle as Shipyard builds it (the dtype/ef ladder against exact search)."""
    from artifacts.bundle import verify_bundle
    from artifacts.signing import load_signing_key
    from builder.index import Embedded, check_model_bundle, index_bundle

    index_dir = WORK / "index-bundle"
    shutil.rmtree(index_dir, ignore_errors=True)
    model = verify_bundle(model_dir, None)
    t0 = time.perf_counter()
    manifest = index_bundle(
        Embedded(catalog, "sha256:" + "0" * 64, vectors, q8[:200], check_model_bundle(model)),
        "product-catalog",
        index_dir,
        key=load_signing_key(key_file),
    )
    r["ship_build_s"] = time.perf_counter() - t0
    spec = manifest.index
    assert spec is not None
    r["ship_spec"] = {
        "dtype": spec.dtype,
        "ef": spec.expansion_search,
        "attempts": [(a.config, a.metrics.get("recall_at_10")) for a in manifest.quality.attempts],
    }
    r["ship_bytes"] = sum(f.size for f in manifest.files)
    print(f"shipyard index: {r['ship_spec']} in {r['ship_build_s']:.1f} s", flush=True)
    return index_dir


def compare(index_dir: Path, files: dict[str, str], seconds: float, rounds: int) -> dict:
    """Every contender in its own process, interleaved rounds: {name: {metric: (median, min, max)}}."""
    v, q, t = files["vectors"], files["queries"], files["truth"]
    contenders = {
        "usearch HNSW (Shipyard bundle, mmap)": lambda: isolated(
            measure_usearch_shipyard, str(index_dir), q, t, seconds
        ),
        "usearch HNSW i8": lambda: isolated(measure_usearch_plain, v, q, t, "i8", seconds),
        "usearch HNSW f16": lambda: isolated(measure_usearch_plain, v, q, t, "f16", seconds),
        "faiss HNSW f32": lambda: isolated(measure_faiss, v, q, t, "flat", seconds),
        "faiss HNSW SQ8": lambda: isolated(measure_faiss, v, q, t, "sq8", seconds),
        "numpy exact FP32": lambda: isolated(measure_numpy, v, q, seconds),
    }
    runs: dict[str, list[dict]] = {k: [] for k in contenders}
    names = list(contenders)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            runs[name].append(contenders[name]())
            print(f"  round {i}: {name}: {runs[name][-1]}", flush=True)
    return {
        name: {
            m: (statistics.median(x[m] for x in rs), min(x[m] for x in rs), max(x[m] for x in rs))
            for m in rs[0]
        }
        for name, rs in runs.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--bundles", type=Path, default=WORK_DIR / "minilm-bundles")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds = 2.0 if args.quick else 5.0
    WORK.mkdir(parents=True, exist_ok=True)
    if not (args.bundles / "onnx-int8").exists():
        from bench.backends import build_bundles

        build_bundles(args.bundles)
    from artifacts.catalog import read_catalog
    from builder.data.catalog import write_catalog
    from builder.index import default_queries, exact_top

    models, key_file, _pub = stamped_bundles(args.bundles)
    catalog_file = WORK / f"catalog-{args.items}.jsonl"
    if not catalog_file.exists():
        write_catalog(catalog_file, args.items)
    catalog = read_catalog(catalog_file)
    query_texts = default_queries(args.queries)
    print(f"catalog {len(catalog)} items; {len(query_texts)} queries", flush=True)
    vectors = embedded(models["onnx-int8"], catalog.texts, "catalog-int8")
    embed_s = EMBED_SECONDS["catalog-int8"]
    queries = {t: embedded(models[t], query_texts, f"queries-{t}") for t in models}
    q8 = queries["onnx-int8"]
    truth = exact_top(vectors, q8, 10)
    files = {}
    for name, arr in (("vectors", vectors), ("queries", q8), ("truth", truth)):
        files[name] = str(WORK / f"{name}.npy")
        np.save(files[name], arr)

    r: dict = {"machine": machine(), "stamp": stamp(), "items": len(catalog)}
    r["queries"], r["embed_s"] = len(query_texts), embed_s
    index_dir = _ship_index(r, catalog, vectors, q8, models["onnx-int8"], key_file)
    r["ann"] = compare(index_dir, files, seconds, rounds=1 if args.quick else 3)
    # mixing targets: the same index, queries embedded by another target
    base_top = exact_top(vectors, q8, 10)
    r["mix"] = {t: _recall(list(exact_top(vectors, q, 10)), base_top) for t, q in queries.items()}
    r["http"] = http_phase(args.bundles, index_dir, query_texts, seconds * 2)
    write_report(r)


def _fmt(v: tuple[float, float, float], digits: str = ".3g") -> str:
    med, lo, hi = v
    if lo == hi:
        return format(med, digits)
    return f"{format(med, digits)} ({format(lo, digits)}–{format(hi, digits)})"


def write_report(r: dict) -> None:
    ann = r["ann"]
    exact = ann["numpy exact FP32"]
    rows = []
    for name, m in ann.items():
        rows.append(
            [
                name,
                _fmt(m["recall"], ".4f"),
                _fmt(m["p50_ms"]),
                _fmt(m["p99_ms"]),
                _fmt(m["qps64"], ".0f"),
                f"{m['qps64'][0] / exact['qps64'][0]:.1f}x",
                f"{exact['p50_ms'][0] / m['p50_ms'][0]:.1f}x",
                "" if "build_s" not in m else _fmt(m["build_s"], ".1f"),
                "" if "bytes" not in m else f"{m['bytes'][0] / 2**20:.0f} MB",
            ]
        )
    ship = ann["usearch HNSW (Shipyard bundle, mmap)"]
    h = r["http"]
    off, warm = h.get("cache off", {}), h.get("cache warm", {})
    mix_rows = [[t, f"{v:.4f}"] for t, v in r["mix"].items()]
    spec = r["ship_spec"]
    filters = {k[7:-7]: v[0] for k, v in ship.items() if k.startswith("filter_")}
    shipped = (
        f"**The shipped index** (the builder's ladder, recall@10 on 200 queries: "
        f"{spec['attempts']}) holds `{spec['dtype']}` vectors, ef_search {spec['ef']}; the bundle is "
        f"{r['ship_bytes'] / 2**20:.0f} MB; built (single-threaded HNSW + recall check) in "
        f"{r['ship_build_s']:.1f} s per {r['items']:,} items. A process that opens it memory-mapped "
        f"grows by {ship['rss_open_mb'][0]:.0f} MB (ids, texts, field columns) and by "
        f"{ship['rss_used_mb'][0]:.0f} MB after {r['queries']:,} queries (the pages they touched). "
        "Filtered search p50 (ms): "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in filters.items())
        + " (category: 1 in 12 products; brand: one brand in stock; price_stock: 20-80 in stock)."
    )
    text = f"""# Catalog search — {r["stamp"]}

Machine: {r["machine"]}. Catalog: {r["items"]:,} generated products (5% with long descriptions),
embedded once by the MiniLM onnx-int8 bundle in {r["embed_s"]:.0f} s ({
        r["items"] / max(r["embed_s"], 1e-9):.0f} items/s; cached
between runs). Queries: {r["queries"]:,} held-out shopper queries (a seed the corpus does not use).
Recall@10 is against exact FP32 search over the same vectors. Each contender runs in its own
process; median of the interleaved rounds, (min–max) where they differ. c=64: 64 threads, one
query per call.

{
        md_table(
            [
                "contender",
                "recall@10",
                "c=1 p50 ms",
                "c=1 p99 ms",
                "c=64 queries/s",
                "c=64 vs numpy",
                "p50 vs numpy",
                "build s",
                "size",
            ],
            rows,
        )
    }

numpy's best case, 64 queries in one GEMM: {exact["qps_batched64"][0]:.0f} queries/s.

{shipped}

**Mixing targets** — top-10 overlap (exact search in the onnx-int8 catalog vectors) of queries
embedded by each target with queries embedded by onnx-int8, the index's own target:

{md_table(["query embedded by", "top-10 overlap"], mix_rows)}

**`/v1/search` over HTTP** (central + edge processes, MiniLM onnx-int8 on the edge; Python
client on the same 2 cores, so c=64 figures understate the server):

{
        md_table(
            [
                "",
                "c=1 p50 ms",
                "c=1 p99 ms",
                "/v1/embeddings c=1 p50 ms",
                "c=64 search/s (p99 ms)",
                "c=64 embeddings/s (p99 ms)",
            ],
            [
                [
                    "result cache off",
                    off.get("search_p50_ms"),
                    off.get("search_p99_ms"),
                    off.get("embed_p50_ms"),
                    f"{off.get('search_qps64', 0):.0f} ({off.get('search_p99_64', 0):.0f})",
                    f"{off.get('embed_qps64', 0):.0f} ({off.get('embed_p99_64', 0):.0f})",
                ],
                [
                    "result cache warm",
                    warm.get("search_p50_ms"),
                    warm.get("search_p99_ms"),
                    warm.get("embed_p50_ms"),
                    "",
                    "",
                ],
            ],
        )
    }
"""
    (REPORT_DIR / "search.md").write_text(text)
    (WORK / "search.json").write_text(json.dumps(r, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    threading.stack_size(1 << 20)
    main()

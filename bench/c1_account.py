"""Where a c=1 query's time goes: `wrk` latency vs the edge's own request and inference
histograms (sum/count scraped around each turn) vs the raw backend in a fresh process just before.

``PYTHONPATH=. python -m bench.c1_account [turns]`` (after ``make bench`` built the bundles).
Not part of ``make bench``: the serving part reports the c=1 gap; this says where it goes."""

import re
import sys
from pathlib import Path

import httpx
import numpy as np

import bench.serving as S
from bench import wrk
from bench.common import WORK_DIR


def scrape(url):
    text = httpx.get(url + "/metrics").text
    out = {}
    for name in (
        "shipyard_request_seconds",
        "shipyard_inference_seconds",
        "shipyard_queue_seconds",
    ):
        s = sum(float(v) for v in re.findall(rf"^{name}_sum{{[^}}]*}} (\S+)", text, re.M))
        c = sum(float(v) for v in re.findall(rf"^{name}_count{{[^}}]*}} (\S+)", text, re.M))
        out[name] = (s, c)
    return out


def raw_mean(bundle):
    m, q = S._raw_model(bundle, 300)
    lat = S._batch1_s(m, q)
    return {"mean": float(np.mean(lat) * 1e3), "p50": float(np.median(lat) * 1e3)}


def tokenise_us(bundle, n=400, rounds=3):
    """One query tokenised by the tokenizer's batch call (its thread pool) vs its single call,
    hot and right after a model run (as at c=1): p50 µs, the two taken in turns."""
    import time

    from artifacts.bundle import read_manifest
    from artifacts.textproc import TextEncoder
    from edge_runtime.backends.base import BackendSettings
    from edge_runtime.backends.onnxruntime import open_backend

    bundle = Path(bundle)
    m = read_manifest(bundle)
    tok = TextEncoder.for_bundle(bundle, m)._plain
    backend = open_backend(bundle, m, BackendSettings(threads=0))
    feeds = {n: np.ones((1, 12), np.int64) for n in backend.input_names}
    qs = [f"wireless noise cancelling headphones {i}" for i in range(n)]
    calls = {"batch call": lambda q: tok.encode_batch([q]), "single call": tok.encode}
    out = {}
    for after_run in (False, True):
        for name in calls:
            out[(name, after_run)] = []
        for _ in range(rounds):
            for name, fn in calls.items():
                lat = []
                for q in qs:
                    if after_run:
                        backend.infer(feeds)
                    t0 = time.perf_counter_ns()
                    fn(q)
                    lat.append(time.perf_counter_ns() - t0)
                out[(name, after_run)].append(float(np.median(lat)) / 1e3)
    return {f"{name}, {'after a model run' if a else 'hot'}": v for (name, a), v in out.items()}


def main():
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for name, runs in S.isolated(
        tokenise_us, str(WORK_DIR / "minilm-bundles" / "onnx-int8")
    ).items():
        print(f"tokenise one query, {name}: p50 {' / '.join(f'{v:.0f}' for v in runs)} µs")
    scripts = S.bodies(S.EDGE_MODEL)
    stack = S.Stack(WORK_DIR / "minilm-bundles")
    edge = stack.edge("d", result_cache={"max_bytes": 0})
    try:
        url = f"{edge.url}/v1/embeddings"
        wrk.run(url, scripts["queries"], 4, 2)
        for t in range(turns):
            raw = S.isolated(raw_mean, str(edge.bundle))
            a = scrape(edge.url)
            r = wrk.run(url, scripts["queries"], 1, 8)
            b = scrape(edge.url)
            d = {k: (b[k][0] - a[k][0]) / max(1, b[k][1] - a[k][1]) * 1e3 for k in a}
            n = b["shipyard_request_seconds"][1] - a["shipyard_request_seconds"][1]
            print(
                f"turn {t}: wrk p50 {r['p50_ms']:.2f} mean {1e3 / r['rps']:.2f} ms/req | app {d['shipyard_request_seconds']:.3f} "
                f"infer {d['shipyard_inference_seconds']:.3f} queue {d['shipyard_queue_seconds']:.3f} (n={n:.0f}) | raw mean {raw['mean']:.3f} p50 {raw['p50']:.3f}",
                flush=True,
            )
    finally:
        edge.close()
        stack.close()


if __name__ == "__main__":
    main()

"""onnxruntime's memory pattern planner on or off, as the edge runs the INT8 bundle.

The edge's batches change shape all the time (the batcher cuts length-sorted groups of the
queue within its token budget). The planner lays out every intermediate tensor of one input
shape in a single block; this replays a serving-like sequence of batch shapes through the
edge's own backend (``edge_runtime.backends.onnxruntime``) in a fresh process per setting,
three interleaved rounds, and reports items/s and the activation memory the process grew by;
then the same two settings on a whole edge node (``[backends] memory_pattern``), result cache
off: `wrk` c=64 on the product mix, then a 10x flood (c=1000), peak RSS through both.

    PYTHONPATH=. python -m bench.ort_memory [rounds]      (after ``make bench`` built the bundles)
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

from bench.common import REPORT_DIR, WORK_DIR, isolated, machine, md_table, stamp

BUNDLE = WORK_DIR / "minilm-bundles" / "onnx-int8"
WINDOW = 128  # items waiting together, as a busy queue holds them
MAX_BATCH, MAX_TOKENS = 64, 8192  # the batcher's defaults (edge_runtime.config)
SHAPES = [(1, 8), (16, 256), (32, 256), (64, 128), (64, 32)]


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _backend(pattern: bool):
    from artifacts.bundle import read_manifest
    from edge_runtime.backends.base import BackendSettings
    from edge_runtime.backends.onnxruntime import open_backend

    m = read_manifest(BUNDLE)
    return open_backend(BUNDLE, m, BackendSettings(threads=0, memory_pattern=pattern))


def serving_batches(n_items: int = 1200) -> tuple[list, int]:
    """The product mix cut as the batcher cuts a busy queue: windows of WINDOW waiting items,
    each length-sorted and split within MAX_BATCH items and MAX_TOKENS padded tokens."""
    from artifacts.bundle import read_manifest
    from artifacts.textproc import TextEncoder
    from bench.workloads import texts

    m = read_manifest(BUNDLE)
    encoded = TextEncoder.for_bundle(BUNDLE, m).encode(texts()[1][:n_items])
    batches = []
    for start in range(0, len(encoded), WINDOW):
        group = sorted(encoded[start : start + WINDOW], key=len)
        batch: list = []
        for e in group:
            if (batch and (len(batch) + 1) * len(e) > MAX_TOKENS) or len(batch) == MAX_BATCH:
                batches.append(batch)
                batch = []
            batch.append(e)
        batches.append(batch)
    return batches, len(encoded)


def replay(pattern: bool) -> dict[str, float]:
    """Items/s over the sequence (first sight of each shape, then again) and memory grown."""
    from artifacts.textproc import collate

    backend = _backend(pattern)
    batches, items = serving_batches()
    feeds = [collate(b, backend.input_names) for b in batches]
    base = _rss_mb()
    out = {}
    for name in ("first_pass", "second_pass"):
        t0 = time.perf_counter()
        for f in feeds:
            backend.infer(f)
        out[f"{name}_items_s"] = items / (time.perf_counter() - t0)
    out["grown_mb"] = _peak_mb() - base
    out["resident_after_mb"] = _rss_mb() - base
    return out


def one_shape(pattern: bool, batch: int, seq: int) -> dict[str, float]:
    import numpy as np

    backend = _backend(pattern)
    feeds = {
        n: (np.ones if n == "attention_mask" else np.zeros)((batch, seq), np.int64)
        for n in backend.input_names
    }
    base = _rss_mb()
    backend.infer(feeds)
    t0 = time.perf_counter()
    backend.infer(feeds)
    return {"grown_mb": _peak_mb() - base, "ms": (time.perf_counter() - t0) * 1e3}


def serving(rounds: int) -> dict[str, list[dict]]:
    """Edge nodes with the planner on and off, in turns: c=64 product mix, then a flood."""
    import bench.serving as S
    from artifacts.cli.procs import PeakRss
    from bench import wrk

    scripts = S.bodies(S.EDGE_MODEL)
    stack = S.Stack(WORK_DIR / "minilm-bundles")
    out: dict[str, list[dict]] = {"on": [], "off": []}
    try:
        for r in range(rounds):
            for name in ["on", "off"][r % 2 :] + ["on", "off"][: r % 2]:
                edge = stack.edge(
                    f"mem-{name}{r}",
                    result_cache={"max_bytes": 0},
                    backends={"memory_pattern": name == "on"},
                )
                try:
                    url = f"{edge.url}/v1/embeddings"
                    idle = edge.rss_mb()
                    wrk.run(url, scripts["queries"], 4, 2)
                    time.sleep(1)
                    with PeakRss(edge.child.pid) as rss:
                        c64 = wrk.run(url, scripts["products"], 64, 10)
                    fl = S.flood(url, scripts, 15, edge.child.pid)
                    row = {
                        "idle_mb": idle,
                        "rps": c64["rps"],
                        "p99_ms": c64["p99_ms"],
                        "goodput": fl["goodput"],
                        "flood_p99_ms": fl["admitted"].get("p99_ms", float("nan")),
                        "peak_mb": max(rss.peak, fl["rss_peak_mb"]),
                    }
                    out[name].append(row)
                    print(f"serving round {r}: planner {name}: {row}", flush=True)
                finally:
                    edge.close()
    finally:
        stack.close()
    return out


def spread(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    settings = {"planner on (onnxruntime's default)": True, "planner off (the edge)": False}
    runs: dict[str, list[dict]] = {k: [] for k in settings}
    shapes: dict[tuple[str, int, int], list[dict]] = {}
    names = list(settings)
    for r in range(rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            runs[name].append(isolated(replay, settings[name]))
            print(f"round {r}: {name}: {runs[name][-1]}", flush=True)
            for b, s in SHAPES:
                shapes.setdefault((name, b, s), []).append(
                    isolated(one_shape, settings[name], b, s)
                )
    on, off = (runs[n] for n in names)
    ratio = [
        b["second_pass_items_s"] / a["second_pass_items_s"] for a, b in zip(on, off, strict=True)
    ]
    ratio1 = [
        b["first_pass_items_s"] / a["first_pass_items_s"] for a, b in zip(on, off, strict=True)
    ]
    rows = [
        [
            name,
            spread([x["first_pass_items_s"] for x in runs[name]]),
            spread([x["second_pass_items_s"] for x in runs[name]]),
            spread([x["grown_mb"] for x in runs[name]]),
            spread([x["resident_after_mb"] for x in runs[name]]),
        ]
        for name in names
    ]
    shape_rows = [
        [f"{b} x {s}"]
        + [
            f"+{statistics.median(x['grown_mb'] for x in shapes[(n, b, s)]):.0f} MB, "
            f"{statistics.median(x['ms'] for x in shapes[(n, b, s)]):.1f} ms"
            for n in names
        ]
        for b, s in SHAPES
    ]
    _b, items = serving_batches()
    node = serving(rounds)
    node_rows = [
        [
            f"planner {name}",
            spread([x["idle_mb"] for x in node[name]]),
            spread([x["rps"] for x in node[name]]),
            spread([x["p99_ms"] for x in node[name]]),
            spread([x["goodput"] for x in node[name]]),
            spread([x["flood_p99_ms"] for x in node[name]]),
            spread([x["peak_mb"] for x in node[name]]),
        ]
        for name in ("on", "off")
    ]
    node_ratio = [b["rps"] / a["rps"] for a, b in zip(node["on"], node["off"], strict=True)]
    report = f"""# onnxruntime memory pattern planner: on vs off ({stamp()})

Machine: {machine()}. Bundle: `onnx-int8` (all-MiniLM-L6-v2), through the edge's own backend
class. {items} product-mix texts (5% long descriptions) cut as a busy batcher cuts them (windows of
{WINDOW} length-sorted, ≤ {MAX_BATCH} items, ≤ {MAX_TOKENS} padded tokens); each setting in a
fresh process, {rounds} interleaved rounds, median [min–max].

{md_table(["setting", "items/s, first pass", "items/s, second pass", "memory grown (peak), MB", "resident after, MB"], rows)}

Planner off / on, items/s per round: first pass {spread(ratio1, 2)}x, second pass {spread(ratio, 2)}x.

One shape at a time (fresh process each; memory grown by the first run, time of the second):

{md_table(["batch", *names], shape_rows)}

A whole edge node (`[backends] memory_pattern`), result cache off, `wrk` c=64 on the product mix
for 10 s, then a 10x flood (c=1000, 15 s); the two settings in turns, {rounds} rounds:

{md_table(["node", "idle RSS, MB", "c=64 req/s", "c=64 p99, ms", "flood goodput /s", "flood admitted p99, ms", "peak RSS, MB"], node_rows)}

Planner off / on, c=64 req/s per round: {spread(node_ratio, 2)}x.
"""
    (REPORT_DIR / "ort_memory.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()

"""Where a c=1 query's time goes: `wrk` latency vs the edge's own request and inference
histograms (sum/count scraped around each turn) vs the raw backend in a fresh process just before,
vs the HTTP floor (:mod:`bench.http_floor`: the same server stack answering a recorded answer),
each turn taking the three on the same minute of a drifting VM.

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
from bench.http_floor import RUNGS


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
    rungs: dict = {}
    p50: dict[str, list[float]] = {k: [] for k in ("raw", "edge", *RUNGS)}
    outside: dict[str, list[float]] = {k: [] for k in ("edge", *RUNGS)}
    inside: dict[str, list[float]] = {k: [] for k in ("edge", *RUNGS)}
    raws: list[float] = []
    try:
        url = f"{edge.url}/v1/embeddings"
        rungs = start_rungs(edge.url, edge.bundle, stack.work / "floor")
        urls = {"edge": url, **{k: u for k, (_, u) in rungs.items()}}
        for u in urls.values():
            wrk.run(u, scripts["queries"], 4, 2)
        for t in range(turns):
            raw = S.isolated(raw_mean, str(edge.bundle))
            p50["raw"].append(raw["p50"])
            order = list(urls)[t % len(urls) :] + list(urls)[: t % len(urls)]  # each goes first
            got: dict[str, dict] = {}
            for name in order:
                before = model_time(name, edge.url, urls)
                got[name] = wrk.run(urls[name], scripts["queries"], 1, 6)
                after = model_time(name, edge.url, urls)
                calls = max(1, after[1] - before[1])
                p50[name].append(got[name]["p50_ms"])
                # outside the model run, on the same requests: mean latency − mean run
                outside[name].append(1e3 / got[name]["rps"] - (after[0] - before[0]) / calls * 1e3)
                inside[name].append((after[0] - before[0]) / calls * 1e3)
            print(
                f"turn {t}: raw p50 {raw['p50']:.3f} mean {raw['mean']:.3f} | "
                + " | ".join(
                    f"{k} p50 {got[k]['p50_ms']:.3f} run {inside[k][-1]:.3f} outside {outside[k][-1]:.3f}"
                    for k in urls
                ),
                flush=True,
            )
            raws.append(raw["mean"])
        report(p50, outside, inside, raws)
    finally:
        for child, _ in rungs.values():
            child.stop(10)
        edge.close()
        stack.close()


def model_time(name: str, edge_url: str, urls: dict[str, str]) -> tuple[float, float]:
    """(seconds in model runs, runs) so far on server ``name``: the edge's inference
    histogram, a rung's ``/stats``."""
    if name == "edge":
        s, c = scrape(edge_url)["shipyard_inference_seconds"]
        return s, c
    if name == "floor":
        return 0.0, 0.0
    s, c = httpx.get(urls[name].replace("/v1/embeddings", "/stats")).text.split()
    return float(s), float(c)


def report(p50: dict, outside: dict, inside: dict, raws: list[float]) -> None:
    """Per-turn figures, median [min–max]. ``outside``: mean latency minus the mean model run
    on the same requests (so a drifting VM's model speed cancels out)."""
    print(f"\nraw backend batch-1 p50: {S.fmt(p50['raw'], 3, ' ms')}")
    print(
        f"edge c=1 p50: {S.fmt(p50['edge'], 3, ' ms')}; − raw p50 (the goal's measure): "
        f"{S.fmt([e - r for e, r in zip(p50['edge'], p50['raw'], strict=True)], 3, ' ms')}"
    )
    for k in ("run", "tokenise"):
        gap = [x - r for x, r in zip(p50[k], p50["raw"], strict=True)]
        print(f"  {k:9s} rung p50 − raw p50: {S.fmt(gap, 3, ' ms')}")
    edge_run = [e - r for e, r in zip(p50["edge"], p50["run"], strict=True)]
    print(
        f"  edge p50 − run rung p50 (what the edge adds over the least server): {S.fmt(edge_run, 3, ' ms')}"
    )
    for k in ("floor", "run", "tokenise", "edge"):
        print(f"  {k:9s} outside the model run: {S.fmt(outside[k], 3, ' ms')}")
    for k in ("run", "tokenise", "edge"):
        slower = [i - r for i, r in zip(inside[k], raws, strict=True)]
        print(
            f"  {k:9s} model run served at c=1 {S.fmt(inside[k], 3, ' ms')}; "
            f"− raw back-to-back mean: {S.fmt(slower, 3, ' ms')}"
        )


def start_rungs(edge_url: str, bundle: Path, home: Path) -> dict:
    """The :mod:`bench.http_floor` rungs, each answering the edge's own (base64) answer."""
    from artifacts.cli.procs import Child, free_port, python_cli

    home.mkdir(parents=True, exist_ok=True)
    r = httpx.post(
        f"{edge_url}/v1/embeddings",
        json={"model": S.EDGE_MODEL, "input": "usb-c charger 65w", "encoding_format": "base64"},
    )
    r.raise_for_status()
    answer = home / "answer.json"
    answer.write_bytes(r.content)
    kept = [
        f"{k}: {v}" for k, v in r.headers.items() if k.startswith(("x-shipyard", "server-timing"))
    ]
    answer.with_suffix(".headers").write_text("\n".join(kept) + "\n")
    out = {}
    for rung in RUNGS:
        port = free_port()
        argv = python_cli("bench.http_floor", rung, str(port), str(answer), str(bundle))
        child = Child(f"http-{rung}", argv, home / f"{rung}.log")
        child.wait_http(f"http://127.0.0.1:{port}/", 120)
        out[rung] = (child, f"http://127.0.0.1:{port}/v1/embeddings")
    return out


if __name__ == "__main__":
    main()

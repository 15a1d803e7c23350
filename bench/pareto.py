"""Pruned variants of all-MiniLM-L6-v2: speed, size, memory and quality, K x precision.

For K in {6 (the full model), 4, 3, 2} layers, one build each (``--prune layers=K``; distilled
with the builder's defaults) makes onnx-fp32 and onnx-int8 bundles. The variants are built with
the task gate opened, so every point of the front is measured; the table says whether each
would pass the default gate. Speed is measured per bundle in a fresh process, the bundles
interleaved over ``--rounds`` rounds (median, min–max), on the same texts as ``bench.backends``
(short queries at batch 1, product titles at batch 32). Quality is the gate's own teacher-
relative measure on the held-out splits: retrieval recall@10 of the known relevant products,
as a share of the FP32 teacher's (the worse split), with its 95% interval.

    python -m bench.pareto [--rounds 3] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

from bench.common import REPORT_DIR, WORK_DIR, isolated, machine, md_table, stamp

THREADS = 2
KS = (6, 4, 3, 2)
TARGETS = ("onnx-fp32", "onnx-int8")
WORK = WORK_DIR / "pareto"
OPEN_GATE = {"relevant_recall10_ratio": 0.0, "relevant_recall10_ratio_point": 0.0}


def _key(k: int, target: str) -> str:
    return target if k == 6 else f"{target}+pruned-L{k}"


def build_all(fresh: bool) -> dict[int, float]:
    """Build every K (reusing earlier builds unless ``fresh``); seconds per build."""
    from builder.pipeline import BuildConfig, build
    from tests.factories import minilm_dir

    times_file = WORK / "build_seconds.json"
    times = json.loads(times_file.read_text()) if times_file.exists() and not fresh else {}
    for k in KS:
        out = WORK / f"L{k}"
        if not fresh and str(k) in times and all((out / _key(k, t)).is_dir() for t in TARGETS):
            continue
        print(f"building L{k} ...", flush=True)
        t0 = time.monotonic()
        report = build(
            BuildConfig(
                model_dir=str(minilm_dir()),
                task="embedding",
                model_name="product-embedder",
                out_dir=str(out),
                targets=list(TARGETS),
                prune=None if k == 6 else f"layers={k}",
                thresholds={} if k == 6 else OPEN_GATE,
                threads=THREADS,
                overwrite=True,
                reference_cache_dir=str(WORK / "references"),
            )
        )
        if not report.ok:
            raise SystemExit(f"L{k}: {[(t.target, t.reason) for t in report.targets]}")
        times[str(k)] = time.monotonic() - t0
        times_file.parent.mkdir(parents=True, exist_ok=True)
        times_file.write_text(json.dumps(times))
    return {int(k): float(v) for k, v in times.items()}


def measure(path: str, n_latency: int, n_batches: int) -> dict[str, float]:
    """In a fresh process: batch-1 latency on short queries, batch-32 throughput on titles,
    and the process's peak RSS."""
    from artifacts.bundle import read_manifest
    from artifacts.textproc import TextEncoder, collate
    from bench.backends import _texts, _timed
    from builder.runners import bundle_runner

    m = read_manifest(Path(path))
    encoder = TextEncoder.for_bundle(Path(path), m)
    run = bundle_runner(Path(path), m, THREADS)
    names = run.input_names
    queries, titles = _texts(n_latency, n_batches)
    singles = [collate(encoder.encode([q]), names) for q in queries]
    batches = [
        collate(encoder.encode(titles[i : i + 32]), names) for i in range(0, len(titles), 32)
    ]
    timed = _timed(run, run, singles, batches, len(titles))
    return {"p50_ms": timed["p50_ms"], "items_s": timed["items_s"], "rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quality(path: Path) -> dict:
    from artifacts.bundle import read_manifest
    from artifacts.quality import thresholds_for
    from builder.gate import verdict

    m = read_manifest(path)
    q = m.quality
    ci = {k: (v[0], v[1]) for k, v in q.intervals.items()}
    failures = verdict(q.metrics, thresholds_for("embedding", basis="task"), ci)
    per_split = {s.name: s.metrics.get("relevant_recall10_ratio") for s in q.splits}
    return {
        "ratio": q.metrics.get("relevant_recall10_ratio"),
        "ratio_ci": q.intervals.get("relevant_recall10_ratio"),
        "per_split": per_split,
        "cosine": q.metrics.get("cosine_mean"),
        "task_gate": "passes" if not failures else "fails: " + "; ".join(failures),
        "size_mb": sum(f.size for f in m.files) / 2**20,
        "config": q.config,
        "kept": m.compression.layers_kept if m.compression else list(range(6)),
        "distil": (
            f"{m.compression.steps} steps / {m.compression.seconds:.0f} s, loss "
            f"{m.compression.loss_start:.3f}→{m.compression.loss_end:.3f}"
            if m.compression
            else "-"
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency", type=int, default=200)
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--fresh", action="store_true", help="rebuild every K")
    args = ap.parse_args()
    build_s = build_all(args.fresh)
    points = [(k, t) for k in KS for t in TARGETS]
    runs: dict[tuple[int, str], list[dict[str, float]]] = {p: [] for p in points}
    for r in range(args.rounds):
        order = points[r % len(points) :] + points[: r % len(points)]
        for k, t in order:
            path = str(WORK / f"L{k}" / _key(k, t))
            runs[(k, t)].append(isolated(measure, path, args.latency, args.batches))
            print(f"  round {r}: L{k} {t}: {runs[(k, t)][-1]}", flush=True)
    write_report(runs, build_s, args)


def _med(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def write_report(runs: dict, build_s: dict[int, float], args) -> None:
    base = {m: _med([x[m] for x in runs[(6, "onnx-fp32")]])[0] for m in ("p50_ms", "items_s")}
    rows, plot = [], []
    for (k, t), samples in runs.items():
        q = quality(WORK / f"L{k}" / _key(k, t))
        p50, p50_lo, p50_hi = _med([s["p50_ms"] for s in samples])
        thr, thr_lo, thr_hi = _med([s["items_s"] for s in samples])
        rss = statistics.median(s["rss_mb"] for s in samples)
        ratio, ci = q["ratio"], q["ratio_ci"]
        splits = ", ".join(f"{n} {v:.3f}" for n, v in q["per_split"].items() if v is not None)
        rows.append(
            [
                f"L{k}",
                "INT8" if t == "onnx-int8" else "FP32",
                f"{p50:.2f} ({p50_lo:.2f}–{p50_hi:.2f})",
                f"{base['p50_ms'] / p50:.2f}x",
                f"{thr:.0f} ({thr_lo:.0f}–{thr_hi:.0f})",
                f"{32e3 / thr:.0f}",
                f"{thr / base['items_s']:.2f}x",
                f"{q['size_mb']:.1f}",
                f"{rss:.0f}",
                f"{ratio:.3f} [{ci[0]:.3f}–{ci[1]:.3f}]" if ratio is not None and ci else "-",
                splits,
                f"{q['cosine']:.3f}",
                q["task_gate"] if k != 6 else "full model (fidelity gate)",
                f"{build_s.get(k, 0):.0f}",
            ]
        )
        plot.append((k, t, thr, p50, ratio or 0.0))
    table = md_table(
        [
            "layers",
            "precision",
            "b1 p50 ms (range)",
            "b1 vs L6 FP32",
            "b32 items/s (range)",
            "b32 ms per batch",
            "b32 vs L6 FP32",
            "bundle MB",
            "peak RSS MB",
            "recall vs teacher [95% CI]",
            "per split",
            "cos to teacher",
            "default task gate",
            "build s (both targets)",
        ],
        rows,
    )
    details = "\n".join(
        f"- L{k}: kept layers {quality(WORK / f'L{k}' / _key(k, 'onnx-fp32'))['kept']}; "
        f"{quality(WORK / f'L{k}' / _key(k, 'onnx-fp32'))['distil']}; INT8 config "
        f"`{quality(WORK / f'L{k}' / _key(k, 'onnx-int8'))['config']}`"
        for k in KS
    )
    _plot(plot, REPORT_DIR / "pareto.png")
    text = f"""# Pruned variants: the Pareto front — {stamp()}

Machine: {machine()}; {THREADS} threads. all-MiniLM-L6-v2, `artifact build --prune layers=K`
(greedy layer choice by output change, then distillation from the FP32 teacher on calibration
texts only, builder defaults: ≤ 600 steps / 120 s). Speed: each bundle in a fresh process,
{args.rounds} interleaved rounds, median (min–max); batch 1 = {args.latency} short queries,
batch 32 = {args.batches * 32} product titles (the texts of `bench.backends`). Quality: the
gate's teacher-relative recall@10 of the relevant products on the held-out splits (the worse
split, with its 95% paired-bootstrap interval) — the L6 rows compare the full model's bundles
with the same FP32 teacher. The default task gate asks ≥ 0.95 as measured and ≥ 0.90 for the
interval's lower bound, on both splits.

{table}

![Pareto front](pareto.png)

{details}
"""
    (REPORT_DIR / "pareto.md").write_text(text)
    print(text)


def _plot(points: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, idx, xlabel in (
        (axes[0], 2, "batch-32 throughput, items/s (higher is better)"),
        (axes[1], 3, "batch-1 p50 latency, ms (lower is better)"),
    ):
        for target, marker in (("onnx-fp32", "o"), ("onnx-int8", "s")):
            pts = [p for p in points if p[1] == target]
            ax.plot(
                [p[idx] for p in pts],
                [p[4] for p in pts],
                marker=marker,
                label="FP32" if target == "onnx-fp32" else "INT8",
            )
            for p in pts:
                ax.annotate(f"L{p[0]}", (p[idx], p[4]), textcoords="offset points", xytext=(4, 4))
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("recall@10 vs FP32 teacher")
        ax.legend()
    fig.suptitle("all-MiniLM-L6-v2: layers kept x precision")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

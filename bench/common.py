"""Shared benchmark plumbing: machine description, interleaved timing, markdown, plots."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPORT_DIR = Path(__file__).parent / "report"
WORK_DIR = Path(__file__).parent / ".work"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        isa = [
            f
            for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")
            if f" {f}" in text
        ]
        flags = ", ".join(isa)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu} · {os.cpu_count()} vCPU · {mem:.0f} GiB · {platform.machine()} ({flags}) · Python {platform.python_version()}"


def stamp() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def interleaved(
    contenders: dict[str, Callable[[], dict[str, float]]], rounds: int = 3, settle_s: float = 2.0
) -> dict[str, dict[str, float]]:
    """Run each contender's measurement once per round, round-robin (the order rotates each
    round), and keep the median of every metric: drift on a shared machine hits everyone
    alike. Between contenders we pause ``settle_s`` so one contender's wind-down is not charged
    to the next (use with :func:`isolated`)."""
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(settle_s)
            samples[name].append(contenders[name]())
            if os.environ.get("BENCH_VERBOSE"):
                print(f"  round {r}: {name}: {samples[name][-1]}", flush=True)
    return {
        name: {m: statistics.median(s[m] for s in runs) for m in runs[0]}
        for name, runs in samples.items()
    }


def isolated(fn: Callable[..., dict], *args: object, **kwargs: object) -> dict:
    """Run ``fn(*args, **kwargs)`` in a fresh process (spawned, so no runtime threads are inherited) and
    return its result. Measured here: after OpenVINO or PyTorch run, another runtime's batch-1
    latency stays ~2x worse for seconds, even in another process, while their thread pools
    wind down; a contender whose process has exited cannot do that to the next one."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args, kwargs)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def time_calls(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def bar_chart(
    path: Path, title: str, labels: list[str], series: dict[str, list[float]], ylabel: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4))
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + i * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x + width * (len(series) - 1) / 2, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def line_chart(
    path: Path,
    title: str,
    xs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    logy: bool = False,
    logx: bool = True,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, ys in series.items():
        ax.plot(xs[: len(ys)], ys, marker="o", label=name)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

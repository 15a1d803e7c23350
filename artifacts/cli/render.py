"""Readable rich tables for manifests, rankings and registry listings (CLI output only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from artifacts.manifest import EvalSplit, Manifest, Requires
from artifacts.quality import LOWER_IS_BETTER
from artifacts.targets import Ranking


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def fmt_num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def requires_text(req: Requires) -> str:
    parts: list[str] = []
    if req.arch:
        parts.append("arch " + "/".join(req.arch))
    if req.cpu_isa_all:
        parts.append("cpu " + "+".join(req.cpu_isa_all))
    if req.cpu_isa_any:
        parts.append("cpu any of " + "/".join(req.cpu_isa_any))
    if req.onnxruntime is not None:
        parts.append(f"onnxruntime {req.onnxruntime}".strip())
    if req.onnxruntime_providers:
        parts.append("EP " + "+".join(req.onnxruntime_providers))
    if req.openvino is not None:
        parts.append(f"openvino {req.openvino}".strip())
    if req.compute_capability:
        parts.append(f"sm {req.compute_capability} ({req.hardware_compatibility})")
    if req.tensorrt:
        vc = ", version-compatible" if req.tensorrt_version_compatible else ""
        parts.append(f"TensorRT {req.tensorrt}{vc}")
    return "; ".join(parts) or "none"


def manifest_table(m: Manifest, *, title: str | None = None) -> Table:
    t = Table(
        title=title or f"{m.model.name} v{m.model.version} · {m.bundle_key()}", show_header=False
    )
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row("model", f"{m.model.name} (source {m.model.source_name or '-'})")
    t.add_row("version", str(m.model.version or "unassigned"))
    t.add_row(
        "task", m.model.task + (f" · labels {', '.join(m.model.labels)}" if m.model.labels else "")
    )
    t.add_row(
        "target", f"{m.target.id} · {m.target.backend} · {m.target.precision} · {m.target.device}"
    )
    if m.target.variant:
        t.add_row("variant", variant_text(m))
    t.add_row("requires", requires_text(m.target.requires))
    t.add_row(
        "io",
        f"max_batch {m.io.max_batch} · max_seq_len {m.io.max_seq_len} · pooling {m.io.pooling}"
        f" · normalize {m.io.normalize} · dim {m.io.dim}",
    )
    q = m.quality
    verdict = "[green]passed[/green]" if q.passed else "[red]FAILED[/red]"
    metrics = ", ".join(
        metric_text(k, v, q.intervals.get(k), q.thresholds.get(k))
        for k, v in sorted(q.metrics.items())
    )
    t.add_row(
        "quality", f"{verdict} · config {escape(q.config or '-')} · {metrics or 'no metrics'}"
    )
    if q.basis == "task":
        t.add_row(
            "",
            f"[dim]gated on task quality relative to the {escape(q.reference)} (a variant "
            "cannot match the full model's vectors); *_ratio and *_reference metrics compare "
            "with it on the same data[/dim]",
        )
    if q.confidence:
        t.add_row(
            "",
            f"[dim]intervals: bootstrap {q.confidence:.0%}; the pessimistic bound had to clear "
            "each threshold, in every deciding split[/dim]",
        )
    for split in q.splits:
        t.add_row(f"eval: {escape(split.name)}", split_text(split))
    if q.attempts:
        t.add_row(
            "tried", "; ".join(f"{a.config}: {'pass' if a.passed else 'fail'}" for a in q.attempts)
        )
    p = m.perf
    t.add_row(
        "perf",
        f"p50 {fmt_num(p.latency_p50_ms, 2)} ms · p99 {fmt_num(p.latency_p99_ms, 2)} ms (batch 1) · "
        f"{fmt_num(p.throughput_items_s, 1)} items/s (batch {p.batch}) on "
        f"{p.host.cpu_model or '?'} × {p.host.threads}",
    )
    size = sum(f.size for f in m.files)
    t.add_row("files", f"{len(m.files)} files, {fmt_bytes(size)}")
    for f in m.files:
        t.add_row("", f"{f.path}  {fmt_bytes(f.size)}  {f.sha256[:23]}…")
    t.add_row("signed by", m.signing_key_id or "[yellow]unsigned[/yellow]")
    return t


def variant_text(m: Manifest) -> str:
    """``pruned-L4 · kept layers 0,3,4,5 of 6 · distilled 600 steps in 98 s (loss 0.59→0.11)``."""
    text = escape(m.target.variant)
    c = m.compression
    if c is not None:
        kept = ",".join(str(i) for i in c.layers_kept)
        text += (
            f" · {escape(c.method)} · kept layers {kept} of {c.layers_total} · distilled "
            f"{c.steps} steps in {c.seconds:.0f} s on {c.texts} calibration items "
            f"(held-back loss {fmt_num(c.loss_start)}→{fmt_num(c.loss_end)})"
        )
    return text


def metric_text(
    name: str, value: float, interval: list[float] | None, threshold: float | None
) -> str:
    """``recall10_overlap 0.967 [0.962–0.972] (≥0.95)``; ≤ for deviations."""
    text = f"{escape(name)} {fmt_num(value)}"
    if interval and len(interval) == 2:
        text += f" [{fmt_num(interval[0])}–{fmt_num(interval[1])}]"
    if threshold is not None:
        text += f" ({'≤' if name in LOWER_IS_BETTER else '≥'}{fmt_num(threshold)})"
    return text


def split_text(split: EvalSplit) -> str:
    """One eval split: role, size, verdict, its gated metrics and its worst slices."""
    verdict = "[green]passed[/green]" if split.passed else "[red]failed[/red]"
    head = (
        f"{escape(split.role)} · {split.items} items in {len(split.composition)} slices · {verdict}"
    )
    gated = ", ".join(
        metric_text(k, v, split.intervals.get(k), None)
        for k, v in sorted(split.metrics.items())
        if k in split.intervals
    )
    worst = []
    for metric in (
        "recall10_overlap",
        "relevant_recall10_ratio",
        "cosine_min",
        "spearman",
        "label_agreement",
    ):
        scored = [(m[metric], name) for name, m in split.slices.items() if metric in m]
        if scored:
            value, name = min(scored)
            worst.append(f"{metric} {fmt_num(value)} ({escape(name)})")
    tail = f"\n[dim]worst slice: {'; '.join(worst)}[/dim]" if worst else ""
    return f"{head} · {gated}{tail}"


def ranking_table(ranking: Ranking, *, title: str = "selection") -> Table:
    t = Table(title=title)
    t.add_column("#", justify="right")
    t.add_column("target")
    t.add_column("verdict")
    t.add_column("why")
    for i, c in enumerate(ranking.eligible, 1):
        t.add_row(str(i), c.target, "[green]eligible[/green]", c.note)
    for e in ranking.excluded:
        t.add_row("-", e.target, "[red]excluded[/red]", e.reason)
    return t


@dataclass
class TargetSummary:
    """One target's outcome, from a local build report or a remote build's manifest."""

    target: str
    passed: bool
    reason: str = ""
    config: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None
    size: int = 0
    tried: list[tuple[str, bool]] = field(default_factory=list)

    @classmethod
    def from_manifest(cls, m: dict, *, reason: str = "") -> TargetSummary:
        q, p = m["quality"], m["perf"]
        return cls(
            target=m["target"]["id"],
            passed=q["passed"],
            reason=reason,
            config=q.get("config", ""),
            metrics=q["metrics"],
            thresholds=q["thresholds"],
            intervals=q.get("intervals", {}),
            p50_ms=p.get("latency_p50_ms"),
            p99_ms=p.get("latency_p99_ms"),
            throughput=p.get("throughput_items_s"),
            size=sum(f["size"] for f in m["files"]),
            tried=[(a["config"], a["passed"]) for a in q.get("attempts", [])],
        )


def targets_table(title: str, rows: list[TargetSummary]) -> Table:
    """Per target: result, shipped config, gate metrics vs thresholds, speed, size, what was tried."""
    t = Table(title=title)
    for col in (
        "target",
        "result",
        "config",
        "gate (value [95% CI] / threshold)",
        "p50 ms",
        "p99 ms",
        "items/s",
        "size",
        "tried",
    ):
        t.add_column(col)
    fp32 = next((r.size for r in rows if r.target == "onnx-fp32" and r.passed), 0)
    for r in rows:
        gate = "\n".join(
            metric_text(k, v, r.intervals.get(k), r.thresholds.get(k))
            for k, v in r.metrics.items()
            if k in r.thresholds
        )
        size = fmt_bytes(r.size) if r.size else "-"
        if r.size and fp32 and r.target != "onnx-fp32":
            size += f" ({100 * r.size / fp32:.0f}%)"
        t.add_row(
            r.target,
            "[green]passed[/green]" if r.passed else f"[red]failed[/red]\n{r.reason[:300]}",
            r.config or "-",
            gate or "-",
            fmt_num(r.p50_ms, 2),
            fmt_num(r.p99_ms, 2),
            fmt_num(r.throughput, 1),
            size,
            "\n".join(f"{c}: {'pass' if ok else 'fail'}" for c, ok in r.tried) or "-",
        )
    return t


def simple_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*("-" if v is None else str(v) for v in row))
    return t


def console(stderr: bool = False) -> Console:
    """A console that does not wrap lines mid-sentence when output goes to a pipe or a log."""
    import sys

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 180
    return Console(stderr=stderr, soft_wrap=True, width=width)


def provenance_table(provenance: dict) -> Table:
    """Who built a bundle from what: the SLSA provenance its builder signed."""
    st = provenance["statement"]
    pred = st.get("predicate") or {}
    definition = pred.get("buildDefinition") or {}
    run = pred.get("runDetails") or {}
    params = definition.get("externalParameters") or {}
    t = Table(title="provenance (SLSA v1, in-toto, signed by the builder)", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("builder", str((run.get("builder") or {}).get("id", "?")))
    t.add_row("signed by", ", ".join(str(k) for k in provenance.get("signed_by", [])))
    t.add_row("build type", str(definition.get("buildType", "?")))
    for key in ("model", "version", "task", "target", "source", "calibration", "eval"):
        t.add_row(key, str(params.get(key)))
    t.add_row(
        "thresholds",
        ", ".join(f"{k} {v}" for k, v in (params.get("thresholds") or {}).items()) or "defaults",
    )
    toolchain = (definition.get("internalParameters") or {}).get("toolchain") or {}
    t.add_row("toolchain", ", ".join(f"{k} {v}" for k, v in toolchain.items()))
    meta = run.get("metadata") or {}
    t.add_row("built", f"{meta.get('startedOn', '?')} → {meta.get('finishedOn', '?')}")
    for bp in run.get("byproducts") or []:
        if bp.get("name") == "gate":
            t.add_row(
                "gate", ", ".join(f"{k} {v:.4f}" for k, v in (bp.get("content") or {}).items())
            )
    t.add_row("subjects", f"{len(st.get('subject') or [])} files")
    return t

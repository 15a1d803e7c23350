"""``artifact build``: run the builder locally with progress bars and a summary table.

The builder (torch, optimum, ...) is imported only when the command runs, so the rest of the
``artifact`` CLI stays light on edge nodes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from artifacts.cli import app
from artifacts.cli.render import TargetSummary, console, targets_table
from artifacts.cli.runner import ExitCode
from artifacts.errors import InputError
from artifacts.targets import parse_trt_compat
from artifacts.variants import parse_prune


class RichReporter:
    """One progress bar per stage/target, drawn on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def begin(self, scope: str, total: int) -> None:
        self.tasks[scope] = self.progress.add_task(scope, total=total or None, status="starting")

    def step(self, scope: str, message: str) -> None:
        if scope not in self.tasks:
            self.begin(scope, 0)
        self.progress.update(self.tasks[scope], advance=1, status=message)

    def end(self, scope: str, ok: bool, message: str) -> None:
        task = self.tasks.get(scope)
        if task is None:
            return
        total = self.progress.tasks[task].total or 1
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        self.progress.update(task, completed=total, total=total, status=f"{mark} {message[:90]}")


def parse_thresholds(values: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for value in values:
        name, sep, num = value.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(num)
        except ValueError:
            raise InputError(f"--threshold expects NAME=VALUE, got {value!r}") from None
    return out


def prune_option(value: str | None) -> str | None:
    """``--prune`` checked and canonical (``layers=4,steps=600,budget=120``), or None."""
    spec = parse_prune(value)
    return spec.as_text() if spec else None


def trt_compat_option(value: str) -> list[str]:
    try:
        return parse_trt_compat(value)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def summary_table(report) -> Table:
    """The local build's summary (same layout as `artifact submit --wait`)."""
    rows = []
    for r in report.targets:
        o = r.outcome
        rows.append(
            TargetSummary(
                target=r.target,
                passed=r.passed,
                reason=r.reason,
                config=o.config if o else "",
                metrics=o.gate.metrics if o and o.gate else {},
                thresholds=o.gate.thresholds if o and o.gate else {},
                intervals={k: list(v) for k, v in o.gate.intervals.items()} if o and o.gate else {},
                p50_ms=o.speed.p50_ms if o and o.speed else None,
                p99_ms=o.speed.p99_ms if o and o.speed else None,
                throughput=o.speed.throughput if o and o.speed else None,
                size=r.size_bytes,
                tried=[(a.config, a.passed) for a in (o.attempts if o else [])],
            )
        )
    return targets_table(
        f"build summary · {report.seconds:.0f} s · peak RSS {report.peak_rss_mb:.0f} MB", rows
    )


def report_json(report) -> dict:
    return {
        "ok": report.ok,
        "seconds": round(report.seconds, 1),
        "peak_rss_mb": round(report.peak_rss_mb, 1),
        "targets": [
            {
                "target": r.target,
                "passed": r.passed,
                "reason": r.reason,
                "path": r.path,
                "size_bytes": r.size_bytes,
                "config": r.outcome.config if r.outcome else "",
                "metrics": r.outcome.gate.metrics if r.outcome and r.outcome.gate else {},
                "attempts": [
                    a.config + (": pass" if a.passed else ": fail")
                    for a in (r.outcome.attempts if r.outcome else [])
                ],
            }
            for r in report.targets
        ],
    }


@app.command("build")
def build_cmd(
    model_dir: Path = typer.Argument(..., help="Hugging Face model directory"),
    task: str = typer.Option(..., "--task", help="embedding | rerank | classify"),
    model: str = typer.Option(
        ..., "--model", help="Model name in the registry, e.g. product-embedder"
    ),
    out: Path = typer.Option(..., "--out", help="Output directory: one bundle per target"),
    targets: str = typer.Option(
        "onnx-fp32,onnx-int8,openvino-int8", "--targets", help="Comma-separated target ids"
    ),
    calibration: Path | None = typer.Option(None, "--calibration", help="Calibration JSONL"),
    eval_file: Path | None = typer.Option(None, "--eval", help="Evaluation JSONL"),
    key: Path | None = typer.Option(None, "--key", help="ed25519 private key to sign the bundles"),
    version: int = typer.Option(
        0, "--version", help="Version number to stamp (0: assigned at push)"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing bundles in OUT"),
    threads: int = typer.Option(0, "--threads", help="CPU threads (0: all cores)"),
    threshold: list[str] = typer.Option(
        [], "--threshold", help="Override a gate threshold: NAME=VALUE"
    ),
    trt_compat: str = typer.Option(
        "none",
        "--trt-compat",
        help="TensorRT engines: none | version | hardware | same-cc (comma-separated)",
    ),
    prune: str | None = typer.Option(
        None,
        "--prune",
        help="Ship a smaller variant: layers=K[,steps=N][,budget=SECONDS] keeps K layers, "
        "distils them from the model and gates them on task quality (bundles TARGET+pruned-LK)",
    ),
    bf16: bool = typer.Option(
        True,
        "--bf16/--no-bf16",
        help="Gate openvino-int8 in BF16 too where this CPU runs it natively (bf16_gated)",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
) -> None:
    """Build, gate, benchmark and sign one bundle per target."""
    from builder.pipeline import BuildConfig, build

    config = BuildConfig(
        model_dir=str(model_dir),
        task=task,
        model_name=model,
        out_dir=str(out),
        targets=[t.strip() for t in targets.split(",") if t.strip()],
        calibration_file=str(calibration) if calibration else None,
        eval_file=str(eval_file) if eval_file else None,
        key_file=str(key) if key else None,
        version=version,
        overwrite=overwrite,
        threads=threads,
        thresholds=parse_thresholds(threshold),
        trt_compat=trt_compat_option(trt_compat),
        prune=prune_option(prune),
        bf16=bf16,
    )
    err = console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<14}"),
        BarColumn(bar_width=24),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        transient=False,
        disable=as_json or not sys.stderr.isatty(),
    ) as progress:
        report = build(config, RichReporter(progress))
    if as_json:
        typer.echo(json.dumps(report_json(report), indent=2))
    else:
        console().print(summary_table(report))
        for r in report.targets:
            if r.passed:
                console().print(f"[green]wrote[/green] {r.path}", highlight=False)
    if not report.ok:
        failed = ", ".join(r.target for r in report.targets if not r.passed)
        console(stderr=True).print(
            f"[red]error:[/red] target(s) failed: {failed} (see reasons above)"
        )
        raise typer.Exit(int(ExitCode.FAILED))

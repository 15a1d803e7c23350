"""Build-service verbs: submit (with live progress), builds, logs, cancel."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from artifacts import sourcetar
from artifacts.cli import app
from artifacts.cli.build import parse_thresholds
from artifacts.cli.registry import byte_progress, client, emit_json
from artifacts.cli.render import TargetSummary, console, simple_table, targets_table
from artifacts.digests import sha256_file
from artifacts.states import BuildState, JobState
from artifacts.wire import BuildInfo, BuildRequest

TERMINAL_BUILD = tuple(s for s in BuildState if not s.open)
STATE_STYLE = {
    JobState.PASSED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "yellow",
    JobState.RUNNING: "cyan",
    JobState.QUEUED: "white",
    JobState.WAITING: "magenta",
    JobState.BUILT: "blue",
    JobState.VERIFYING: "blue",
}


def _upload(c, path: Path, label: str, show: bool) -> str:
    digest = sha256_file(path)
    size = path.stat().st_size
    with byte_progress(size, label, show) as p:
        c.upload_blob(digest, path, lambda n: p.advance(p.task_ids[0], n))
    return digest


def status_table(info: BuildInfo, last_lines: dict[str, str]) -> Table:
    t = Table(title=f"build #{info.id} · {info.model} · {info.state}")
    for col in ("target", "state", "worker", "attempt", "latest"):
        t.add_column(col)
    for j in info.jobs:
        style = STATE_STYLE.get(j.state, "white")
        latest = (
            j.reason
            if j.state in (JobState.FAILED, JobState.WAITING, JobState.BUILT)
            else last_lines.get(j.target, "")
        )
        if j.cached:
            latest = "reused from the build cache"
        t.add_row(
            j.target,
            f"[{style}]{j.state}[/{style}]",
            j.worker or "-",
            str(j.attempts),
            latest[:120],
        )
    return t


def summaries(info: BuildInfo) -> list[TargetSummary]:
    out = []
    for j in info.jobs:
        if j.manifest:
            s = TargetSummary.from_manifest(j.manifest)
            s.reason = "reused from the build cache" if j.cached else ""
        else:
            s = TargetSummary(target=j.target, passed=False, reason=j.reason or j.state)
        out.append(s)
    return out


def wait_for(c, build_id: int, *, live: bool, poll_s: float = 1.0) -> BuildInfo:
    last_lines: dict[str, str] = {}
    after = 0
    info = c.build(build_id)
    with Live(
        status_table(info, last_lines),
        console=console(stderr=True),
        refresh_per_second=4,
        transient=False,
    ) as view:
        while True:
            for line in c.build_logs(build_id, after=after):
                after = line.id
                last_lines[line.target] = line.line
            info = c.build(build_id)
            if live:
                view.update(status_table(info, last_lines))
            if info.state in TERMINAL_BUILD:
                return info
            time.sleep(poll_s)


@app.command("submit")
def submit(
    model_dir: Path = typer.Argument(..., help="Hugging Face model directory"),
    model: str = typer.Option(..., "--model"),
    task: str = typer.Option(..., "--task", help="embedding | rerank | classify"),
    targets: str = typer.Option("onnx-fp32,onnx-int8,openvino-int8", "--targets"),
    promote_to: str | None = typer.Option(
        None, "--promote-to", help="Promote if every gate passes"
    ),
    calibration: Path | None = typer.Option(None, "--calibration"),
    eval_file: Path | None = typer.Option(None, "--eval"),
    threshold: list[str] = typer.Option([], "--threshold", help="NAME=VALUE"),
    wait: bool = typer.Option(
        False, "--wait", help="Show live progress until done, then the summary"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Upload a model to the build service and build every target on capable workers."""
    show = not as_json
    with client() as c, tempfile.TemporaryDirectory(prefix="shipyard-submit-") as tmp:
        tar = sourcetar.create(model_dir, Path(tmp) / "source.tar")
        sourcetar.validate(tar)
        req = BuildRequest(
            model=model,
            task=task,
            source_blob=_upload(c, tar, f"upload {model_dir.name}", show),
            targets=[t.strip() for t in targets.split(",") if t.strip()],
            promote_to=promote_to,
            calibration_blob=_upload(c, calibration, "upload calibration", show)
            if calibration
            else None,
            eval_blob=_upload(c, eval_file, "upload eval", show) if eval_file else None,
            thresholds=parse_thresholds(threshold),
        )
        created = c.submit_build(req)
        if not wait:
            if as_json:
                return emit_json(created)
            console().print(
                f"submitted build #{created.build_id}: {', '.join(j.target for j in created.jobs)}"
            )
            console().print(
                f"follow it with: artifact builds {created.build_id}  ·  artifact logs {created.build_id}"
            )
            return None
        info = wait_for(c, created.build_id, live=show)
    if as_json:
        emit_json(info)
    else:
        console().print(
            targets_table(f"build #{info.id} · {info.state} · {info.detail}", summaries(info))
        )
    if info.state != "passed":
        raise typer.Exit(2)
    return None


@app.command("builds")
def builds(
    build_id: int | None = typer.Argument(None), as_json: bool = typer.Option(False, "--json")
) -> None:
    """List builds, or show one (per-target state, why a job waits, results)."""
    with client() as c:
        if build_id is None:
            items = c.builds()
            if as_json:
                return emit_json(items)
            rows = [
                [
                    b.id,
                    b.model,
                    b.state,
                    b.created_at,
                    f"v{b.version}" if b.version else "-",
                    ", ".join(f"{j.target}:{j.state}" for j in b.jobs),
                ]
                for b in items
            ]
            console().print(
                simple_table("builds", ["#", "model", "state", "created", "version", "jobs"], rows)
            )
            return None
        info = c.build(build_id)
    if as_json:
        return emit_json(info)
    console().print(status_table(info, {}))
    if info.state in TERMINAL_BUILD:
        console().print(targets_table(f"build #{info.id} results · {info.detail}", summaries(info)))
    return None


@app.command("logs")
def logs(
    build_id: int = typer.Argument(...),
    follow: bool = typer.Option(False, "--follow", "-f"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A build's log lines (all targets), optionally following until it ends."""
    with client() as c:
        after = 0
        while True:
            lines = c.build_logs(build_id, after=after)
            for line in lines:
                after = line.id
                if as_json:
                    emit_json(line)
                else:
                    typer.echo(f"{line.at} [{line.target}] {line.line}")
            if not follow:
                return
            if not lines and c.build(build_id).state in TERMINAL_BUILD:
                return
            time.sleep(1.0)


@app.command("cancel")
def cancel(
    build_id: int = typer.Argument(...), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Cancel a build: queued jobs never start, running ones are stopped; nothing is registered."""
    with client() as c:
        info = c.cancel_build(build_id)
    emit_json(info) if as_json else console().print(status_table(info, {}))

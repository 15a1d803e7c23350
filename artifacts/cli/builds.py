"""Build-service verbs: submit (with live progress), builds, logs, cancel."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from artifacts import sourcetar
from artifacts.cli import app
from artifacts.cli.build import parse_thresholds, prune_option, trt_compat_option
from artifacts.cli.registry import byte_progress, client, emit_json
from artifacts.cli.render import TargetSummary, console, simple_table, targets_table
from artifacts.cli.runner import ExitCode
from artifacts.digests import sha256_file
from artifacts.states import BuildState, JobState
from artifacts.wire import BuildInfo, BuildRequest

TERMINAL_BUILD = tuple(s for s in BuildState if not s.open)
STATE_STYLE = {
    JobState.PASSED: "green",
    JobState.FAILED: "red",
    JobState.NO_CAPABLE_WORKER: "magenta",
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
            if j.state
            in (JobState.FAILED, JobState.NO_CAPABLE_WORKER, JobState.WAITING, JobState.BUILT)
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


class ProgressLog:
    """Progress as timestamped lines, for logs and CI (stdout is not a terminal): the build's
    and every job's state changes, and each target's result when it ends."""

    def __init__(self, write=None) -> None:
        self._write = write or (lambda line: print(line, flush=True))
        self._seen: dict[str, str] = {}

    def update(self, info: BuildInfo) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self._seen.get("") != info.state:
            self._seen[""] = info.state
            self._write(f"{now} build #{info.id} {info.model}: {info.state}")
        for j in info.jobs:
            key = f"{j.target}"
            if self._seen.get(key) == j.state:
                continue
            self._seen[key] = j.state
            detail = "reused from the build cache" if j.cached else (j.reason or "")
            worker = f" on {j.worker}" if j.worker else ""
            self._write(
                f"{now} build #{info.id} {j.target}: {j.state}{worker}"
                + (f" — {detail}" if detail else "")
            )


def wait_for(
    c,
    build_id: int,
    *,
    live: bool,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    log: ProgressLog | None = None,
) -> BuildInfo:
    """Follow a build until it ends or ``timeout_s`` passes (then the last state is returned,
    still open). ``live``: a live table on a terminal; otherwise ``log`` lines, if given."""
    last_lines: dict[str, str] = {}
    after = 0
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    info = c.build(build_id)
    with (
        Live(
            status_table(info, last_lines),
            console=console(stderr=True),
            refresh_per_second=4,
            transient=False,
        )
        if live
        else contextlib.nullcontext() as view
    ):
        while True:
            for line in c.build_logs(build_id, after=after):
                after = line.id
                last_lines[line.target] = line.line
            info = c.build(build_id)
            if view is not None:
                view.update(status_table(info, last_lines))
            elif log is not None:
                log.update(info)
            if info.state in TERMINAL_BUILD:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                return info
            time.sleep(
                poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic()))
            )


def exit_code(info: BuildInfo) -> ExitCode:
    """0 passed; 1 failed or cancelled, or a target failed; 3 still running at the timeout;
    4 a target had no capable worker (it waited past its deadline, or only such jobs are left
    at the timeout) while none failed otherwise."""
    if info.state == BuildState.PASSED:
        return ExitCode.OK
    if info.state in TERMINAL_BUILD:
        states = {JobState(j.state) for j in info.jobs}
        if (
            info.state != BuildState.CANCELLED
            and JobState.NO_CAPABLE_WORKER in states
            and states <= {JobState.PASSED, JobState.NO_CAPABLE_WORKER}
        ):
            return ExitCode.NO_CAPABLE_WORKER
        return ExitCode.FAILED
    open_jobs = [j for j in info.jobs if not JobState(j.state).terminal]
    if open_jobs and all(j.state == JobState.WAITING for j in open_jobs):
        return ExitCode.NO_CAPABLE_WORKER
    return ExitCode.TIMED_OUT


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
        False,
        "--wait",
        help="Follow the build until it ends (a live table on a terminal, log lines otherwise)",
    ),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        min=0,
        help="With --wait: stop waiting after this many seconds (exit 3, or 4 if only jobs "
        "waiting for a capable worker remain); the build goes on",
    ),
    trt_compat: str = typer.Option(
        "none",
        "--trt-compat",
        help="TensorRT engines: none | version | hardware | same-cc (comma-separated)",
    ),
    allow_partial: bool = typer.Option(
        False,
        "--allow-partial",
        help="With --promote-to: promote the targets that passed even if others did not",
    ),
    worker_deadline: float | None = typer.Option(
        None,
        "--worker-deadline",
        min=1,
        help="A job no live worker can build for this many seconds ends no-capable-worker "
        "(default: the service's, 900 s)",
    ),
    into_version: int | None = typer.Option(
        None,
        "--into-version",
        min=1,
        help="Build the targets into this existing, not yet promoted version (same model dir)",
    ),
    prune: str | None = typer.Option(
        None,
        "--prune",
        help="Build a pruned, distilled variant: layers=K[,steps=N][,budget=SECONDS] "
        "(bundles TARGET+pruned-LK, gated on task quality)",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Upload a model to the build service and build every target on capable workers."""
    show = not as_json
    prune = prune_option(prune)  # a malformed --prune fails before anything is uploaded
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
            trt_compat=trt_compat_option(trt_compat),
            allow_partial=allow_partial,
            worker_deadline_s=worker_deadline,
            into_version=into_version,
            prune=prune,
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
        tty = sys.stderr.isatty()
        info = wait_for(
            c,
            created.build_id,
            live=show and tty,
            timeout_s=timeout,
            log=ProgressLog() if show and not tty else None,
        )
    code = exit_code(info)
    if as_json:
        emit_json(info)
    else:
        console().print(
            targets_table(f"build #{info.id} · {info.state} · {info.detail}", summaries(info))
        )
        missing = [j.target for j in info.jobs if j.state == JobState.NO_CAPABLE_WORKER]
        if info.state in TERMINAL_BUILD and missing and info.version is not None:
            console(stderr=True).print(
                f"[magenta]no capable worker[/magenta] for {', '.join(missing)}; build "
                f"{'them' if len(missing) > 1 else 'it'} later into v{info.version} (while it "
                f"is not promoted): artifact submit … --targets {','.join(missing)} "
                f"--into-version {info.version}",
                highlight=False,
            )
        elif code in (ExitCode.TIMED_OUT, ExitCode.NO_CAPABLE_WORKER):
            waiting = [f"{j.target} ({j.reason})" for j in info.jobs if j.state == JobState.WAITING]
            console(stderr=True).print(
                f"[yellow]timed out[/yellow] after {timeout:g} s with build #{info.id} {info.state}"
                + (f"; waiting for a capable worker: {', '.join(waiting)}" if waiting else "")
                + f" — it goes on: artifact builds {info.id}",
                highlight=False,
            )
    if code != ExitCode.OK:
        raise typer.Exit(int(code))
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

"""``builder worker``: a remote (or the in-process) build worker."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

import typer

from artifacts.cli.runner import run_app

app = typer.Typer(
    name="builder", help="Shipyard build worker.", no_args_is_help=True, add_completion=False
)


@app.callback()
def _root() -> None:
    """Shipyard build worker."""


@app.command()
def worker(
    central: str = typer.Option(
        ...,
        "--central",
        help="Central URL, e.g. https://central.example:8700; several replicas comma-separated",
    ),
    token: str | None = typer.Option(
        None, "--token", help="A `build` token (or $SHIPYARD_WORKER_TOKEN)"
    ),
    name: str = typer.Option(socket.gethostname().lower(), "--name"),
    concurrency: int = typer.Option(1, "--concurrency", min=1),
    work_dir: Path = typer.Option(Path("~/.shipyard/worker"), "--work-dir"),
    targets: list[str] = typer.Option(
        [], "--target", help="Restrict to these targets (default: all this host can build)"
    ),
    lease_wait: float = typer.Option(20.0, "--lease-wait"),
    build_timeout: float = typer.Option(1800.0, "--build-timeout"),
    threads: int = typer.Option(0, "--threads"),
    max_input_bytes: int = typer.Option(
        16 << 30,
        "--max-input-bytes",
        min=1,
        help="Refuse (and discard) an input blob past this size while it downloads",
    ),
    bf16: bool = typer.Option(
        True,
        "--bf16/--no-bf16",
        help="Gate openvino-int8 in BF16 too where this CPU runs it natively (needs verifying "
        "workers with native BF16)",
    ),
) -> None:
    """Lease build jobs this machine can run, build them, upload the bundles."""
    from builder.worker import WorkerConfig, run_worker

    token = token or os.environ.get("SHIPYARD_WORKER_TOKEN")
    if not token:
        raise typer.BadParameter("pass --token or set SHIPYARD_WORKER_TOKEN")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = WorkerConfig(
        central=central,
        token=token,
        name=name.replace("_", "-")[:64],
        work_dir=str(work_dir.expanduser()),
        concurrency=concurrency,
        lease_wait=lease_wait,
        build_timeout=build_timeout,
        targets=targets,
        threads=threads,
        max_input_bytes=max_input_bytes,
        bf16=bf16,
    )
    run_worker(cfg)


def main(argv: list[str] | None = None) -> int:
    return run_app(app, argv)


def entry() -> None:  # pragma: no cover
    sys.exit(main())

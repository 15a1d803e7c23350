"""``artifact catalog``: the catalog queue — bind a catalog to its model, publish product
changes onto NATS JetStream, start or resume a re-embedding run, show progress."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from artifacts import embed_queue as eq
from artifacts.cli import app
from artifacts.cli.registry import JSON, client, emit_json
from artifacts.cli.render import console, simple_table
from artifacts.digests import sha256_bytes
from artifacts.errors import InputError
from artifacts.wire import CatalogBinding, CatalogInfo, RunRequest

catalog_app = typer.Typer(
    help="The catalog queue (NATS JetStream re-embedding).", no_args_is_help=True
)
app.add_typer(catalog_app, name="catalog")

NATS = typer.Option(
    eq.DEFAULT_NATS_URL,
    "--nats-url",
    envvar="SHIPYARD_NATS_URL",
    help="NATS (comma list for a cluster)",
)


def read_updates(path: Path) -> list[eq.CatalogUpdate]:
    """The file's products and deletes, checked whole before anything is published."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    return eq.updates_from_lines(lines, str(path))


async def _publish(
    url: str, name: str, updates: list[eq.CatalogUpdate], batch_id: str
) -> tuple[int, int]:
    nc = await eq.connect(url, name="artifact-catalog-publish")
    try:
        js = nc.jetstream(timeout=10.0)
        await eq.ensure_streams(js)
        return await eq.publish_updates(js, name, updates, batch_id)
    finally:
        await nc.close()


@catalog_app.command("publish")
def publish(
    file: Path = typer.Argument(..., help="JSONL: {id, text, fields?} or {id, delete: true}"),
    name: str = typer.Option(..., "--catalog", help="the catalog's name"),
    nats_url: str = NATS,
    as_json: bool = JSON,
) -> None:
    """Publish product changes onto catalog.updates.<name> (a repeat within 10 minutes is
    stored once, by the file's digest); central applies them and embeds what changed."""
    eq.check_catalog_name(name)
    updates = read_updates(file)
    # the file's digest names its changes: publishing the same file again stores nothing new
    batch_id = sha256_bytes(file.read_bytes())
    stored, dups = asyncio.run(_publish(nats_url, name, updates, batch_id))
    if as_json:
        emit_json({"catalog": name, "published": stored, "duplicates": dups})
        return
    console().print(f"{name}: {stored} changes published, {dups} duplicates dropped by the broker")


@catalog_app.command("bind")
def bind(  # noqa: PLR0913 - one option per binding field
    name: str,
    model: str = typer.Option(..., "--model", help="the embedding model"),
    index: str = typer.Option(..., "--index", help="the index's registry name"),
    target: str = typer.Option("onnx-int8", "--target", help="the bundle that embeds the catalog"),
    channel: str = typer.Option("stable", "--channel", help="the channel edges serve"),
    stage: str = typer.Option("candidate", "--stage-channel", help="promoting here re-embeds"),
    chunk: int = typer.Option(64, "--chunk", help="products per embed job"),
    as_json: bool = JSON,
) -> None:
    """Bind a catalog to its embedding model and index."""
    binding = CatalogBinding(
        model=model, index=index, target=target, channel=channel, stage_channel=stage, chunk=chunk
    )
    with client() as c:
        _show(c.bind_catalog(name, binding), as_json)


@catalog_app.command("reembed")
def reembed(
    name: str,
    version: int | None = typer.Option(None, "--version", help="default: the serving channel's"),
    no_promote: bool = typer.Option(False, "--no-promote", help="build the index, promote nothing"),
    discard: bool = typer.Option(
        False,
        "--discard-vectors",
        help="forget the run's stored vectors first (after a refused index)",
    ),
    as_json: bool = JSON,
) -> None:
    """Start (or resume) re-embedding for a model version: what is still missing is sent."""
    with client() as c:
        run = c.start_run(
            name, RunRequest(version=version, promote=not no_promote, discard_vectors=discard)
        )
        _show(c.catalog(name), as_json)
    if not as_json:
        console().print(f"run {run.id}: {run.total - run.done} products sent to embed workers")


@catalog_app.command("status")
def status(name: str, as_json: bool = JSON) -> None:
    """Products, runs (done/total, rate, ETA, state) and dead letters."""
    with client() as c:
        _show(c.catalog(name), as_json)


def _show(info: CatalogInfo, as_json: bool) -> None:
    if as_json:
        emit_json(info)
        return
    b = info.binding
    bound = (
        f"{b.model} {b.target} -> index {b.index} (stage {b.stage_channel}, serve {b.channel})"
        if b
        else "not bound"
    )
    dead = "?" if info.dead_letters is None else str(info.dead_letters)
    console().print(
        f"{info.name}: {info.items} products; {bound}; dead letters {dead}; queue {info.queue}"
    )
    rows = [
        [
            r.id,
            f"v{r.version}",
            r.state,
            f"{r.done}/{r.total}",
            f"{r.rate_per_s:.0f}/s",
            "-" if r.eta_s is None else f"{r.eta_s:.0f} s",
            "-" if r.index_version is None else f"v{r.index_version}",
            r.reason[:60],
        ]
        for r in info.runs
    ]
    if rows:
        console().print(
            simple_table(
                "runs", ["run", "model", "state", "done", "rate", "eta", "index", "reason"], rows
            )
        )

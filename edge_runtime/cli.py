"""``edge-runtime``: serve, probe this node, show a running node's status."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import httpx
import msgspec
import typer

from artifacts.cli.render import console, simple_table
from artifacts.cli.runner import run_app

app = typer.Typer(
    name="edge-runtime", help="Shipyard edge node.", no_args_is_help=True, add_completion=False
)


@app.command()
def serve(
    config: Path | None = typer.Option(
        None, "--config", help="edge.toml (settings also from SHIPYARD_EDGE_*)"
    ),
    log_level: str = typer.Option("info", "--log-level"),
    log_format: str = typer.Option(
        "text", "--log-format", help="text | json (one object per line, with the trace id)"
    ),
) -> None:
    """Sync verified bundles, pick the best backend, serve the HTTP API."""
    from edge_runtime.config import load_config

    _configure(log_level, log_format)
    _serve(load_config(config))


@app.command("embed-worker")
def embed_worker(
    config: Path | None = typer.Option(
        None, "--config", help="edge.toml (settings also from SHIPYARD_EDGE_*)"
    ),
    catalog: list[str] = typer.Option(
        [], "--catalog", help="a catalog to embed (repeatable; default [embed_worker] catalogs)"
    ),
    nats_url: str | None = typer.Option(None, "--nats-url", envvar="SHIPYARD_NATS_URL"),
    log_level: str = typer.Option("info", "--log-level"),
    log_format: str = typer.Option("text", "--log-format", help="text | json"),
) -> None:
    """Consume the catalog queue's embed jobs (a node that also serves, or a dedicated worker):
    each job's texts go through the batcher's low-priority lane, vectors back to central."""
    import msgspec.structs

    from edge_runtime.config import load_config

    _configure(log_level, log_format)
    cfg = load_config(config)
    ew = msgspec.structs.replace(
        cfg.embed_worker,
        enabled=True,
        catalogs=catalog or cfg.embed_worker.catalogs,
        nats_url=nats_url or cfg.embed_worker.nats_url,
    )
    _serve(msgspec.structs.replace(cfg, embed_worker=ew).validate())


def _configure(log_level: str, log_format: str) -> None:
    from artifacts.logs import configure_logging

    try:
        configure_logging(log_level, log_format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _serve(cfg) -> None:
    from artifacts.sdnotify import serve as serve_notifying
    from edge_runtime.http.app import create_app
    from edge_runtime.node import EdgeNode

    node = EdgeNode(cfg)
    what = ", ".join(f"{m.name}:{m.channel}" for m in cfg.models) or "no models"
    if cfg.embed_worker.enabled:
        what += f"; embedding catalogs {', '.join(cfg.embed_worker.catalogs)} from {cfg.embed_worker.nats_url}"
    console(stderr=True).print(
        f"edge-runtime: serving {what} on "
        f"http://{cfg.server.host}:{cfg.server.port} (registry {cfg.registry.url}, cache {cfg.cache_dir})"
    )
    serve_notifying(
        create_app(node),
        node.notifier,
        host=cfg.server.host,
        port=cfg.server.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=cfg.server.drain_s,
        limit_concurrency=cfg.server.max_connections,  # beyond this uvicorn answers 503
        read_timeout_s=cfg.server.read_timeout_s,
        one_write=cfg.server.one_write_per_response,
    )


@app.command()
def probe(as_json: bool = typer.Option(False, "--json")) -> None:
    """What this node can run: CPU ISA, memory, GPUs, TensorRT, onnxruntime, OpenVINO."""
    from artifacts.probe import probe_node

    caps = probe_node()
    if as_json:
        typer.echo(msgspec.json.format(msgspec.json.encode(caps), indent=2).decode())
        return
    rows: list[list[object]] = [
        ["host", caps.hostname],
        ["arch", caps.arch],
        ["cpu", caps.cpu_model],
        ["isa", ", ".join(caps.cpu_isa)],
        ["cores", caps.cpu_cores],
        ["memory", f"{caps.memory_mb} MB"],
        [
            "gpus",
            "; ".join(
                f"{g.name} sm_{g.compute_capability.replace('.', '')} {g.memory_mb} MB"
                for g in caps.gpus
            )
            or "none",
        ],
        ["cuda driver", caps.cuda_driver or "-"],
        ["tensorrt", caps.tensorrt or "not installed"],
        [
            "onnxruntime",
            f"{caps.onnxruntime} ({', '.join(caps.onnxruntime_providers)})"
            if caps.onnxruntime
            else "not installed",
        ],
        [
            "openvino",
            f"{caps.openvino} ({', '.join(caps.openvino_devices)})"
            if caps.openvino
            else "not installed",
        ],
    ]
    rows += [[f"probe error: {k}", v] for k, v in caps.probe_errors.items()]
    console().print(simple_table("node capabilities", ["", "value"], rows))


def status_tables(st: dict) -> list:
    tables = []
    for m in st["models"]:
        rows = [[c["target"], c["status"], c.get("detail", "")[:140]] for c in m["candidates"]]
        title = f"{m['model']}:{m['channel']} · {m['state']} · {m['reason']}"
        tables.append(simple_table(title, ["candidate", "outcome", "why"], rows))
    return tables


@app.command()
def status(
    url: str = typer.Option("http://127.0.0.1:8080", "--url"),
    as_json: bool = typer.Option(False, "--json"),
    api_key_env: str = typer.Option(
        "SHIPYARD_EDGE_API_KEY", "--api-key-env", help="environment variable holding a status key"
    ),
) -> None:
    """What a running edge node serves, and why each candidate was chosen or not."""
    key = os.environ.get(api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        st = httpx.get(f"{url.rstrip('/')}/v1/status", timeout=10, headers=headers).json()
    except httpx.HTTPError as exc:
        console(stderr=True).print(f"[red]error:[/red] cannot reach {url}: {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    console().print(f"node {st['node']} · ready: {st['ready']} · registry {st['registry']}")
    for t in status_tables(st):
        console().print(t)


keys_app = typer.Typer(help="API keys of the edge API (hashed in [server] api_keys_file).")
app.add_typer(keys_app, name="api-key")


@keys_app.command("add")
def api_key_add(
    name: str = typer.Argument(..., help="who uses it (a metrics label)"),
    file: Path = typer.Option(..., "--file", help="the api_keys_file edge.toml names"),
    rate: float = typer.Option(0.0, "--rate", help="requests per second; 0: unlimited"),
    scopes: str = typer.Option("infer", "--scopes", help="infer,status,metrics"),
) -> None:
    """Create a key, store its hash, print the key once (then `kill -HUP` the node)."""
    from edge_runtime.http.api_keys import add_key

    key = add_key(file, name, rate, [s.strip() for s in scopes.split(",") if s.strip()])
    console(stderr=True).print(f"added {name} to {file}; reload a running node with SIGHUP")
    typer.echo(key)


def main(argv: list[str] | None = None) -> int:
    return run_app(app, argv)


def entry() -> None:  # pragma: no cover
    sys.exit(main())

"""``central``: run the service, create tokens, trust publisher keys."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, cast

import msgspec
import typer

from artifacts.cli.render import console, simple_table
from artifacts.cli.runner import run_app
from artifacts.errors import InputError
from central.settings import FLEET_CLAIMS, CentralConfig

app = typer.Typer(
    name="central",
    help="Shipyard central: registry, builds, fleet.",
    no_args_is_help=True,
    add_completion=False,
)
token_app = typer.Typer(help="Bearer tokens.", no_args_is_help=True)
workers_app = typer.Typer(help="Enrolled build workers.", no_args_is_help=True)
tuf_app = typer.Typer(help="The TUF repository edges follow.", no_args_is_help=True)
keys_app = typer.Typer(help="Trusted publisher keys.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(keys_app, name="keys")
app.add_typer(workers_app, name="workers")
app.add_typer(tuf_app, name="tuf")

JSON = typer.Option(False, "--json", help="Machine-readable output")
HOME = typer.Option("~/.shipyard/central", "--home", help="Service home: database, blobs, keys")
DB = typer.Option(
    None, "--database-url", help="postgresql+asyncpg://… (default: SQLite under --home)"
)

OCI_URL = typer.Option(
    None,
    "--oci-url",
    envvar="SHIPYARD_OCI_URL",
    help="Keep blobs in this OCI distribution registry (what several replicas share) instead "
    "of HOME/blobs; credentials from SHIPYARD_OCI_USERNAME / SHIPYARD_OCI_PASSWORD",
)
OCI_REPOSITORY = typer.Option(
    "shipyard/blobs", "--oci-repository", envvar="SHIPYARD_OCI_REPOSITORY"
)


def _oci(url: str | None, repository: str) -> dict[str, Any]:
    """The OCI settings (credentials only from the environment, never a flag: ps shows flags)."""
    if not url:
        return {}
    return {
        "oci_url": url,
        "oci_repository": repository,
        "oci_username": os.environ.get("SHIPYARD_OCI_USERNAME"),
        "oci_password": os.environ.get("SHIPYARD_OCI_PASSWORD"),
    }


@app.command()
def serve(
    home: str = HOME,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8700, "--port"),
    database_url: str | None = DB,
    local_workers: int = typer.Option(
        2,
        "--local-workers",
        help="In-process CPU build workers (0: none; two let one verify what the other built)",
    ),
    worker_deadline: float = typer.Option(
        900.0,
        "--worker-deadline",
        min=1,
        help="A job no live worker can build or verify for this many seconds ends "
        "no-capable-worker (a build may ask for its own)",
    ),
    drain_s: float = typer.Option(
        10.0, "--drain-s", min=0, help="SIGTERM: in-flight requests get this long to finish"
    ),
    read_timeout: float = typer.Option(
        10.0,
        "--read-timeout",
        min=0,
        help="Close a connection whose request headers take longer than this, or whose body "
        "brings under 1 KiB/s over such a window (slow clients); 0: never",
    ),
    log_level: str = typer.Option("info", "--log-level"),
    log_format: str = typer.Option(
        "text", "--log-format", help="text | json (one object per line, with the trace id)"
    ),
    otlp_endpoint: str | None = typer.Option(
        None,
        "--otlp-endpoint",
        help="Send OpenTelemetry traces over OTLP/HTTP here (needs the otel extra)",
    ),
    oci_url: str | None = OCI_URL,
    oci_repository: str = OCI_REPOSITORY,
    oci_public_url: str | None = typer.Option(
        None,
        "--oci-public-url",
        envvar="SHIPYARD_OCI_PUBLIC_URL",
        help="The OCI registry as clients reach it (for --blob-redirect; default --oci-url)",
    ),
    nats_url: str | None = typer.Option(
        None,
        "--nats-url",
        envvar="SHIPYARD_NATS_URL",
        help="NATS JetStream for the catalog queue (e.g. nats://127.0.0.1:4222; comma list for a cluster)",
    ),
    blob_redirect: bool = typer.Option(
        False,
        "--blob-redirect",
        help="GET /v1/blobs answers 307 to the OCI registry instead of streaming through",
    ),
    tuf_online_keys: str | None = typer.Option(
        None,
        "--tuf-online-keys",
        envvar="SHIPYARD_TUF_ONLINE_KEYS",
        help="The TUF online keys every replica shares (default HOME/tuf/online)",
    ),
    fleet_max_nodes_per_token: int = typer.Option(
        256,
        "--fleet-max-nodes-per-token",
        envvar="SHIPYARD_FLEET_MAX_NODES_PER_TOKEN",
        min=1,
        help="Node names one token may report in fleet heartbeats (409 past it)",
    ),
    fleet_claims: str = typer.Option(
        "first-report",
        "--fleet-claims",
        envvar="SHIPYARD_FLEET_CLAIMS",
        help="Who gives a node its token: first-report (the first token to report it) or "
        "assigned (only an admin: `artifact fleet-handover --to TOKEN NODE...`)",
    ),
) -> None:
    """Run the registry/build/fleet service (migrates the database first). Several replicas
    can serve one PostgreSQL database and one OCI registry (README: Scaling out)."""
    from artifacts.logs import configure_logging
    from artifacts.sdnotify import Notifier
    from artifacts.sdnotify import serve as serve_notifying
    from central.app import create_app

    try:
        configure_logging(log_level, log_format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    config = CentralConfig(
        home=home,
        host=host,
        port=port,
        database_url=database_url,
        local_workers=local_workers,
        worker_deadline_s=worker_deadline,
        otlp_endpoint=otlp_endpoint,
        oci_public_url=oci_public_url,
        blob_redirect=blob_redirect,
        nats_url=nats_url,
        tuf_online_keys=tuf_online_keys,
        fleet_max_nodes_per_token=fleet_max_nodes_per_token,
        fleet_claims=fleet_claims,
        **_oci(oci_url, oci_repository),
    )
    if fleet_claims not in FLEET_CLAIMS:
        raise typer.BadParameter(f"--fleet-claims must be one of {', '.join(FLEET_CLAIMS)}")
    if blob_redirect and not oci_url:
        raise typer.BadParameter("--blob-redirect needs --oci-url (local blobs have no URL)")
    notifier = Notifier()
    app_ = create_app(config, notifier=notifier)
    console(stderr=True).print(
        f"central: serving on {config.url} (home {config.home_path}, db {config.db_url.split('://')[0]})"
    )
    serve_notifying(
        app_,
        notifier,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=drain_s,
        read_timeout_s=read_timeout,
    )


def _offline(
    home: str, database_url: str | None, work, *, read_only: bool = False, **settings: Any
) -> object:
    """Run ``work(services)`` against the service's database without starting the service;
    migrated first, unless ``read_only`` (a listing, a dry run): that changes nothing and
    refuses a schema that is not this central's."""
    from central.services import Services

    config = CentralConfig(home=home, database_url=database_url, local_workers=0, **settings)
    sqlite_file = config.sqlite_path
    if read_only and sqlite_file is not None and not sqlite_file.is_file():
        raise InputError(  # a listing of nothing must not create a central's home or database
            f"no central database at {sqlite_file}: nothing to read (wrong --home?)"
        )

    async def run() -> object:
        from central.db import migrate, schema_behind

        svc = Services(config)
        try:
            if not read_only:
                await migrate(svc.db.engine)
            elif (behind := await schema_behind(svc.db.read_engine)) is not None:
                raise InputError(
                    f"{behind}: a read-only command changes nothing — start `central serve` "
                    "(or run a command that writes) to migrate it first"
                )
            return await work(svc)
        finally:
            await svc.blobs.store.close()
            await svc.db.close()

    return asyncio.run(run())


@app.command("gc")
def gc(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would go and why; change nothing"
    ),
    keep: int = typer.Option(10, "--keep", min=1, help="Newest versions kept per model"),
    history: int = typer.Option(
        3, "--history", min=0, help="Each channel's latest distinct versions kept"
    ),
    edge_window_days: float = typer.Option(
        7.0, "--edge-window-days", min=0, help="Versions an edge ran this recently stay"
    ),
    grace_hours: float = typer.Option(
        24.0, "--grace-hours", min=0.25, help="Unreferenced blobs younger than this stay"
    ),
    log_days: float = typer.Option(
        90.0, "--log-days", min=0, help="Build logs of builds finished longer ago go"
    ),
    audit_days: float | None = typer.Option(
        None, "--audit-days", min=0, help="Audit rows older than this are exported, then deleted"
    ),
    audit_export: Path | None = typer.Option(
        None, "--audit-export", help="Where the audit rows go first (JSONL)"
    ),
    home: str = HOME,
    database_url: str | None = DB,
    as_json: bool = JSON,
    oci_url: str | None = OCI_URL,
    oci_repository: str = OCI_REPOSITORY,
) -> None:
    """Retention and garbage collection: old versions nothing needs, unreferenced blobs, old
    build logs and (exported first) audit rows. Safe beside a running service."""
    from central.gc.policy import RetentionPolicy
    from central.gc.service import Collector, Plan, Result

    if audit_days is not None and audit_export is None and not dry_run:
        raise typer.BadParameter(
            "--audit-days needs --audit-export FILE: rows go only after export"
        )
    policy = RetentionPolicy(
        keep=keep,
        history=history,
        edge_window_s=edge_window_days * 86400,
        grace_s=grace_hours * 3600,
        log_days=log_days,
        audit_days=audit_days,
    )

    async def work(svc):
        collector = Collector(svc.db, svc.blobs.store, svc.audit, policy)
        plan = await collector.plan()
        return plan, (None if dry_run else await collector.apply(plan, audit_export=audit_export))

    plan, result = cast(
        "tuple[Plan, Result | None]",
        _offline(home, database_url, work, read_only=dry_run, **_oci(oci_url, oci_repository)),
    )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "versions": [
                        {"model": d.model, "version": d.version, "keep": d.keep, "why": d.why}
                        for d in plan.versions
                    ],
                    "blobs": [{"digest": d, "bytes": n} for d, n in plan.blobs],
                    "orphan_files": len(plan.orphans),
                    "log_lines": plan.logs,
                    "audit_rows": plan.audit,
                    "result": None if result is None else result.__dict__,
                },
                indent=2,
            )
        )
        return
    rows = [
        [d.model, f"v{d.version}", "keep" if d.keep else "DELETE", d.why] for d in plan.versions
    ]
    console().print(simple_table("versions", ["model", "version", "", "why"], rows))
    size = sum(n for _, n in plan.blobs)
    console().print(
        f"blobs: {len(plan.blobs)} unreferenced past the grace ({size / 1e6:.1f} MB), "
        f"{len(plan.orphans)} files without a row; build log lines: {plan.logs}; "
        f"audit rows past retention: {plan.audit}"
    )
    if result is None:
        console().print("dry run: nothing changed")
    else:
        console().print(
            f"deleted {len(result.versions)} versions, {result.blobs} blobs "
            f"({result.bytes / 1e6:.1f} MB), {result.logs} log lines, {result.audit} audit rows"
            + (f" (exported to {result.exported})" if result.exported else "")
            + (f"; kept {', '.join(result.skipped)}: changed meanwhile" if result.skipped else "")
        )


@token_app.command("create")
def token_create(
    scope: list[str] = typer.Option(
        ..., "--scope", help="pull | push | promote | build | embed | admin (repeatable)"
    ),
    name: str = typer.Option("cli", "--name"),
    expires_in: float | None = typer.Option(
        None, "--expires-in", help="Seconds until the token stops working (default: never)"
    ),
    catalog: list[str] | None = typer.Option(
        None,
        "--catalog",
        help="Bind the token to this catalog (repeatable; scopes embed and pull only): it "
        "reaches these catalogs' routes and indexes and no other's (an embed worker's token)",
    ),
    home: str = HOME,
    database_url: str | None = DB,
) -> None:
    """Create a bearer token and print it (it is stored hashed; this is the only time it is shown)."""

    async def work(svc) -> str:
        return await svc.tokens.create(
            name, scope, actor="cli", expires_in_s=expires_in, catalogs=catalog or None
        )

    typer.echo(_offline(home, database_url, work))


@token_app.command("list")
def token_list(home: str = HOME, database_url: str | None = DB) -> None:
    """Every token: name, scopes, bound worker, expiry, state (never the secret)."""

    async def work(svc) -> list:
        return await svc.tokens.list()

    rows = [
        [
            t.id,
            t.name,
            ",".join(t.scopes),
            t.worker or "",
            ",".join(t.catalogs) if t.catalogs is not None else "any",
            t.expires_at or "never",
            t.state,
        ]
        for t in _offline(home, database_url, work, read_only=True)  # type: ignore[attr-defined]
    ]
    console().print(
        simple_table(
            "tokens", ["id", "name", "scopes", "worker", "catalogs", "expires", "state"], rows
        )
    )


@token_app.command("revoke")
def token_revoke(
    token_id: int = typer.Argument(..., help="The token's id (`central token list`)"),
    home: str = HOME,
    database_url: str | None = DB,
) -> None:
    """Revoke a token (a running service stops accepting it within 2 s)."""

    async def work(svc):
        return await svc.tokens.revoke(token_id, "cli")

    info = _offline(home, database_url, work)
    console().print(f"revoked #{info.id} {info.name}")  # type: ignore[attr-defined]


@workers_app.command("enroll")
def workers_enroll(
    name: str = typer.Argument(..., help="The worker's name (its identity)"),
    targets: str = typer.Option(..., "--targets", help="Comma-separated targets it may build"),
    capabilities_file: Path | None = typer.Option(
        None, "--capabilities-file", help="The host it must run on (`edge-runtime probe --json`)"
    ),
    home: str = HOME,
    database_url: str | None = DB,
) -> None:
    """Enrol a build worker; prints its credential (give it to the worker as
    SHIPYARD_WORKER_TOKEN; it generates its own signing key on first start)."""
    caps = msgspec.json.decode(capabilities_file.read_bytes()) if capabilities_file else None
    wanted = [t.strip() for t in targets.split(",") if t.strip()]

    async def work(svc) -> str:
        return await svc.workers.enroll(name, wanted, caps, "cli")

    typer.echo(_offline(home, database_url, work))


@workers_app.command("list")
def workers_list(home: str = HOME, database_url: str | None = DB) -> None:
    async def work(svc) -> list:
        return await svc.workers.list()

    rows = [
        [
            w.name,
            ",".join(w.allowed_targets),
            w.key_id or "-",
            w.last_seen,
            "disabled" if w.disabled else "enabled",
        ]
        for w in _offline(home, database_url, work, read_only=True)  # type: ignore[attr-defined]
    ]
    console().print(
        simple_table("workers", ["name", "may build", "key", "last seen", "state"], rows)
    )


@workers_app.command("reset-key")
def workers_reset_key(
    name: str = typer.Argument(...), home: str = HOME, database_url: str | None = DB
) -> None:
    """Forget a worker's key (rotation: it registers a new one on its next start)."""

    async def work(svc):
        return await svc.workers.reset_key(name, "cli")

    _offline(home, database_url, work)
    console().print(f"{name}: key cleared; it registers a new one on its next start")


@workers_app.command("disable")
def workers_disable(
    name: str = typer.Argument(...),
    reason: str = typer.Option("", "--reason"),
    home: str = HOME,
    database_url: str | None = DB,
) -> None:
    """Disable a worker: its credentials are revoked, channels serving what it built halt."""
    from central.auth.service import Principal

    async def work(svc):
        return await svc.workers.disable(name, reason, Principal("cli", frozenset({"admin"})))

    _offline(home, database_url, work)
    console().print(f"{name}: disabled; channels serving its builds are halted")


@keys_app.command("trust")
def keys_trust(
    pub: Path = typer.Argument(..., help="A publisher's .pub file"),
    name: str = typer.Option("", "--name", help="A label (default: the file's stem)"),
    home: str = HOME,
    database_url: str | None = DB,
) -> None:
    """Accept pushed bundles signed by this key. Written to the database: a running service
    (every replica) applies it within a couple of seconds, no restart."""
    try:
        pem = pub.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {pub}: {exc}") from None
    label = name or pub.stem

    async def work(svc):
        return await svc.key_trust.trust(pem, label, actor="cli")

    result: tuple = _offline(home, database_url, work)  # type: ignore[assignment]
    info, created = result
    state = "trusted" if created else "already trusted"
    console().print(f"{state}: {info.key_id} ({info.name}, {info.source})")


@keys_app.command("untrust")
def keys_untrust(
    key_id: str = typer.Argument(..., help="The key id (`central keys list`)"),
    home: str = HOME,
    database_url: str | None = DB,
) -> None:
    """Refuse new pushes signed by this key (bundles it signed stay registered)."""

    async def work(svc):
        return await svc.key_trust.untrust(key_id, actor="cli")

    info = _offline(home, database_url, work)
    console().print(f"untrusted: {info.key_id} ({info.name})")  # type: ignore[attr-defined]


@keys_app.command("list")
def keys_list(home: str = HOME, database_url: str | None = DB, as_json: bool = JSON) -> None:
    """The publisher keys central accepts pushes from, and where each comes from."""

    async def work(svc) -> list:
        return await svc.key_trust.list()

    keys = _offline(home, database_url, work, read_only=True)
    if as_json:
        typer.echo(msgspec.json.encode(keys).decode())
        return
    rows = [[k.key_id, k.name, k.source, k.added_by, k.added_at] for k in keys]  # type: ignore[attr-defined]
    console().print(
        simple_table("trusted publisher keys", ["key id", "name", "source", "by", "added"], rows)
    )


ONLINE_KEYS = typer.Option(
    None,
    "--tuf-online-keys",
    help="The TUF online keys (timestamp, snapshot, models) every replica shares "
    "(default HOME/tuf/online)",
)


@tuf_app.command("init")
def tuf_init(
    offline_keys: Path = typer.Option(
        ..., "--offline-keys", help="Where the root and targets keys go (keep it offline)"
    ),
    home: str = HOME,
    database_url: str | None = DB,
    online_keys: Path | None = ONLINE_KEYS,
) -> None:
    """Create the TUF repository (in the database) before the first start, with its root and
    targets keys kept outside central's home (central serve creates them under
    HOME/tuf/offline otherwise)."""

    async def work(svc):
        if await svc.tuf.exists():
            raise InputError("the database already holds a TUF repository")
        await svc.tuf.start(new_root=True)
        return svc.tuf.repo.metadata_dir / "1.root.json"

    first = _offline(
        home,
        database_url,
        work,
        tuf_offline_keys=str(offline_keys),
        tuf_online_keys=str(online_keys) if online_keys else None,
    )
    console().print(
        f"TUF repository created; root and targets keys in {offline_keys} (keep them offline). "
        f"Give edge nodes {first} as tuf_root."
    )


@tuf_app.command("rotate")
def tuf_rotate(
    role: str = typer.Argument(..., help="root | targets | snapshot | timestamp | models"),
    offline_keys: Path | None = typer.Option(
        None,
        "--offline-keys",
        help="Where the root and targets keys are (default HOME/tuf/offline)",
    ),
    home: str = HOME,
    database_url: str | None = DB,
    online_keys: Path | None = ONLINE_KEYS,
) -> None:
    """Replace a role's key through a new root version (edges follow it on their next update).
    Run it where the offline keys are; a new online key must then reach every replica's
    tuf_online_keys (each restarts with it)."""

    async def work(svc):
        return await svc.tuf.rotate(role)

    new = _offline(
        home,
        database_url,
        work,
        tuf_offline_keys=str(offline_keys) if offline_keys else None,
        tuf_online_keys=str(online_keys) if online_keys else None,
    )
    console().print(f"{role}: new key {new}")


@tuf_app.command("root")
def tuf_root(home: str = HOME, database_url: str | None = DB) -> None:
    """Print the current root.json (what an edge node's ``tuf_root`` starts from)."""

    async def work(svc):
        return await svc.tuf.root_json()

    sys.stdout.write(cast(bytes, _offline(home, database_url, work, read_only=True)).decode())


def main(argv: list[str] | None = None) -> int:
    return run_app(app, argv)


def entry() -> None:  # pragma: no cover
    sys.exit(main())

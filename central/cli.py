"""``central``: run the service, create tokens, trust publisher keys."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from pathlib import Path

import typer

from artifacts.cli.render import console
from artifacts.cli.runner import run_app
from artifacts.signing import key_id_of, load_public_key
from central.settings import CentralConfig

app = typer.Typer(
    name="central",
    help="Shipyard central: registry, builds, fleet.",
    no_args_is_help=True,
    add_completion=False,
)
token_app = typer.Typer(help="Bearer tokens.", no_args_is_help=True)
keys_app = typer.Typer(help="Trusted publisher keys.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(keys_app, name="keys")

HOME = typer.Option("~/.shipyard/central", "--home", help="Service home: database, blobs, keys")
DB = typer.Option(
    None, "--database-url", help="postgresql+asyncpg://… (default: SQLite under --home)"
)


@app.command()
def serve(
    home: str = HOME,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8700, "--port"),
    database_url: str | None = DB,
    local_workers: int = typer.Option(
        1, "--local-workers", help="In-process CPU build workers (0: none)"
    ),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Run the registry/build/fleet service (migrates the database first)."""
    import uvicorn

    from central.app import create_app

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = CentralConfig(
        home=home, host=host, port=port, database_url=database_url, local_workers=local_workers
    )
    app_ = create_app(config)
    console(stderr=True).print(
        f"central: serving on {config.url} (home {config.home_path}, db {config.db_url.split('://')[0]})"
    )
    uvicorn.run(
        app_,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@token_app.command("create")
def token_create(
    scope: list[str] = typer.Option(
        ..., "--scope", help="pull | push | promote | build | admin (repeatable)"
    ),
    name: str = typer.Option("cli", "--name"),
    home: str = HOME,
    database_url: str | None = DB,
) -> None:
    """Create a bearer token and print it (it is stored hashed; this is the only time it is shown)."""
    from central.audit.service import AuditLog
    from central.auth.service import TokenService
    from central.db import Database, migrate

    config = CentralConfig(home=home, database_url=database_url)

    async def run() -> str:
        config.home_path.mkdir(parents=True, exist_ok=True)
        db = Database(config.db_url)
        try:
            await migrate(db.engine)
            return await TokenService(db, AuditLog(db)).create(name, scope, actor="cli")
        finally:
            await db.close()

    typer.echo(asyncio.run(run()))


@keys_app.command("trust")
def keys_trust(
    pub: Path = typer.Argument(..., help="A publisher's .pub file"), home: str = HOME
) -> None:
    """Accept bundles signed by this key (takes effect on the next start)."""
    key = load_public_key(pub)
    kid = key_id_of(key)
    dest_dir = CentralConfig(home=home).trusted_keys_path
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{kid.split(':')[1]}.pub"
    shutil.copyfile(pub, dest)
    console().print(f"trusted {kid} ({dest}); restart central to apply")


@keys_app.command("show")
def keys_show(home: str = HOME) -> None:
    """Print central's own build-signing public key (edge nodes must trust it)."""
    path = CentralConfig(home=home).keys_path / "publisher.pub"
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist yet: start central once")
    sys.stdout.write(path.read_text())


def main(argv: list[str] | None = None) -> int:
    return run_app(app, argv)


def entry() -> None:  # pragma: no cover
    sys.exit(main())

"""The ``artifact`` command: keys, inspect, verify, build, and the registry verbs.

Each verb lives in the submodule for its area; heavy imports (the builder's torch) happen
inside the command that needs them so ``artifact verify`` stays fast and light.
"""

from __future__ import annotations

import contextlib
import sys

import typer

from artifacts.cli.runner import run_app

app = typer.Typer(
    name="artifact",
    help="Shipyard artifacts: build, sign, verify, push, pull, promote and resolve bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Publisher signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _register() -> None:
    from artifacts.cli import bundles, registry  # noqa: F401  (commands register on import)

    with contextlib.suppress(ImportError):  # the builder verbs need no heavy import here
        from artifacts.cli import build, builds, index  # noqa: F401
    from artifacts.cli import catalog  # noqa: F401  (light: nats-py)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: run the app, turning ShipyardError into a one-line error + exit 1."""
    _register()
    return run_app(app, argv)


def entry() -> None:  # pragma: no cover
    sys.exit(main())

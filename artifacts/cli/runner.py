"""One way every Shipyard console script runs its typer app and maps errors to exit codes."""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from artifacts.errors import ShipyardError


def run_app(
    app: typer.Typer,
    argv: list[str] | None,
    user_errors: tuple[type[Exception], ...] = (ShipyardError,),
) -> int:
    """Run ``app``: a user error prints one red line (exit 1), a usage error its usage (exit 2)."""
    try:
        result = app(args=argv, standalone_mode=False)
        return result if isinstance(result, int) else 0  # typer.Exit(code) returns here
    except user_errors as exc:
        from artifacts.cli.render import console

        console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except TyperException as exc:  # usage errors (typer's click exceptions derive from it)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            sys.stderr.write(f"error: {exc.format_message()}\n")
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return 130

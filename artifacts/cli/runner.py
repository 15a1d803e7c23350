"""One way every Shipyard console script runs its typer app and maps errors to exit codes."""

from __future__ import annotations

import sys
from enum import IntEnum

import typer
from typer.exceptions import TyperException

from artifacts.errors import ShipyardError


class ExitCode(IntEnum):
    """Exit status of every Shipyard command (README: "Exit codes")."""

    OK = 0  # done; for builds: every target passed
    FAILED = 1  # a user error, or a build/target that failed
    USAGE = 2  # bad arguments or options
    TIMED_OUT = 3  # --timeout passed while work was still running or queued
    NO_CAPABLE_WORKER = 4  # --timeout passed while jobs wait for a worker that can build them


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

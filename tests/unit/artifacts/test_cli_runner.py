"""Every console script maps outcomes to exit codes the same way (artifacts.cli.runner)."""

import pytest
import typer

from artifacts.cli.runner import run_app
from artifacts.errors import ShipyardError


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.command()
    def go(what: str, n: int = 1) -> None:
        if what == "fail":
            raise ShipyardError("the bundle is broken")
        if what == "value":
            raise ValueError("bad value")
        if what == "exit":
            raise typer.Exit(3)
        if what == "bug":
            raise RuntimeError("a bug")

    @app.command()
    def other() -> None:
        pass

    return app


def test_exit_codes(capsys):
    app = _app()
    assert run_app(app, ["go", "ok"]) == 0
    assert run_app(app, ["go", "fail"]) == 1
    assert "the bundle is broken" in capsys.readouterr().err
    assert run_app(app, ["go", "exit"]) == 3
    assert run_app(app, ["go", "ok", "--n", "x"]) == 2  # usage error shows usage
    assert "Usage" in capsys.readouterr().err
    assert run_app(app, ["nope"]) == 2


def test_extra_user_errors_and_bugs_surface():
    app = _app()
    assert run_app(app, ["go", "value"], (ShipyardError, ValueError)) == 1
    with pytest.raises(RuntimeError, match="a bug"):  # a bug is not swallowed
        run_app(app, ["go", "bug"])

"""The `sessionhub` command: one Typer app, one module per command (group).

A command module defines its function (or its own Typer app) and is added
here with one line; `main` is the console script's entry point.
"""

from __future__ import annotations

import typer

from . import sessions
from .admin import admin
from .demo import demo
from .doctor import doctor
from .monitor import monitor
from .stats import stats

__all__ = ["app", "main"]

app = typer.Typer(
    name="sessionhub",
    help="Distributed HTTP sessions for Python web apps: operations and the demo.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Distributed HTTP sessions for Python web apps."""
    # A callback keeps `sessionhub demo` a sub-command even while it is the only one.


app.command()(demo)
app.add_typer(sessions.app)
app.command()(stats)
app.command()(monitor)
app.command()(doctor)
app.command()(admin)


def main() -> None:
    app()

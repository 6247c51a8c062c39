"""The `sessionhub` command: one Typer app, one module per command (group).

A command module defines its function (or its own Typer app) and is added
here with one line; `main` is the console script's entry point.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperGroup

from ..ids import hide_ids
from . import sessions
from .admin import admin
from .demo import demo
from .doctor import doctor
from .monitor import monitor
from .stats import stats

__all__ = ["app", "main"]


@contextmanager
def _ids_hidden() -> Iterator[None]:
    try:
        yield
    except typer.TyperException as exc:
        exc.message = hide_ids(exc.message)
        raise


class _Commands(TyperGroup):
    """The root command: its usage errors (no such command, an extra argument, a bad
    value...) repeat what was typed, so they hide what may be a session id."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _ids_hidden():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _ids_hidden():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Commands,
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

"""`sessionhub admin`: serve the admin dashboard with uvicorn.

Operators sign in with HTTP Basic and the password from ``--password-file``
or ``SESSIONHUB_ADMIN_PASSWORD`` (any user name; at least 12 characters):
without one the command refuses to start, since the dashboard can end any
session. It listens on 127.0.0.1 unless told otherwise; put it behind TLS
before exposing it, Basic sends the password with every request. Wrong
passwords are limited as the ``admin.sign_in`` settings say.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .common import ConfigOption, NamespaceOption, UrlOption, fail, load_settings

__all__ = ["admin"]

PASSWORD_VARIABLE = "SESSIONHUB_ADMIN_PASSWORD"  # noqa: S105 (a variable name)


def _password(path: Path | None) -> str:
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            fail(f"cannot read the password file: {exc.strerror} ({path})", 2)
    password = os.environ.get(PASSWORD_VARIABLE, "")
    if not password:
        fail(f"the dashboard needs a password: set {PASSWORD_VARIABLE} or --password-file", 2)
    return password


def admin(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8001,
    password_file: Annotated[
        Path | None,
        typer.Option(help=f"File holding the operators' password (else ${PASSWORD_VARIABLE})."),
    ] = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve the admin dashboard (HTTP Basic, one password) until Ctrl-C."""
    try:
        import uvicorn

        from ..admin import AdminApp, PasswordAuth
    except ModuleNotFoundError as exc:
        fail(f"the dashboard needs {exc.name}: pip install 'sessionhub[admin]'", 2)
    try:
        auth = PasswordAuth(_password(password_file))
    except ValueError as exc:
        fail(str(exc), 2)
    settings = load_settings(url, namespace, config)
    app = AdminApp.from_settings(settings, authenticate=auth)
    typer.echo(f"sessionhub admin on http://{host}:{port}/ ({settings.redis.target().describe()})")
    uvicorn.run(app, host=host, port=port, log_level="warning")

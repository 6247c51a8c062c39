"""`sessionhub sessions`: list, show and end sessions.

With ``--user`` a listing reads that user's index (one round trip); without,
it scans every primary (SCAN, with progress) and keeps the most recently used.
Sessions are named by their handle, never their id.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..events import Reason, decode_principal
from ..record import AUTH_TIME, CLIENT_INFO, PRINCIPAL, RecordError, parse_record
from ..users import SessionInfo
from .common import (
    ConfigOption,
    JsonOption,
    NamespaceOption,
    UrlOption,
    check_handle,
    check_user,
    connect,
    duration,
    fail,
    print_json,
    printable,
    session_fields,
    timestamp,
)
from .keyspace import newest_sessions

__all__ = ["app"]

app = typer.Typer(name="sessions", help="List, show and end sessions.", no_args_is_help=True)

UserOption = Annotated[
    str | None, typer.Option("--user", help="The principal (user) whose sessions to take.")
]


def stdout() -> Console:
    """A console for tables; wide when writing to a pipe or file, so nothing is cut."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def stderr() -> Console:
    return Console(stderr=True)


def client_summary(info: dict[str, Any], width: int = 60) -> str:
    text = ", ".join(
        f"{key}={value if isinstance(value, str) else orjson.dumps(value).decode()}"
        for key, value in info.items()
    )
    text = printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def session_table(title: str, sessions: list[SessionInfo]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("handle", "principal", "created", "last access", "expires in", "client"):
        table.add_column(name, no_wrap=name != "client", overflow="fold")
    now = time.time()
    for info in sessions:
        table.add_row(
            Text(info.handle),
            Text(printable(info.principal) if info.principal else "-"),
            Text(timestamp(info.created_at)),
            Text(timestamp(info.accessed_at)),
            Text(duration(info.expires_at - now)),
            Text(client_summary(info.client_info)),
        )
    return table


@app.command("list")
def list_sessions(
    user: UserOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    json: JsonOption = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
) -> None:
    """List sessions, most recently used first: one user's, or the whole keyspace's."""
    if user is not None:
        check_user(user)
    with connect(url, namespace, config) as deployment:
        if user is not None:
            try:
                sessions = deployment.manager.sessions_of(user)
            except ValueError as exc:
                fail(str(exc), 2)
            sessions = sorted(sessions, key=lambda s: s.accessed_at, reverse=True)[:limit]
            title = f"{len(sessions)} session(s) of {printable(user)}"
        else:
            sessions = newest_sessions(deployment, limit, stderr())
            title = f"{len(sessions)} most recently used session(s)"
    if json:
        print_json([session_fields(info) for info in sessions])
    else:
        stdout().print(session_table(title, sessions))


def _attributes(fields: dict[bytes, bytes]) -> dict[str, int]:
    """Attribute name -> stored size in bytes (values are not shown: they may be secrets)."""
    found = {}
    for name, value in fields.items():
        if name[:1] != b"!":
            try:
                found[str(orjson.loads(name))] = len(value)
            except orjson.JSONDecodeError:
                found[printable(name.decode(errors="replace"))] = len(value)
    return found


def _client_info(raw: bytes | None) -> Any:
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {"unreadable": printable(raw.decode(errors="replace")[:200]) if raw else ""}


@app.command("show")
def show(
    handle: Annotated[str, typer.Argument(help="The session's handle (as listed).")],
    json: JsonOption = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one session: times, principal, client info, attribute names and sizes."""
    check_handle(handle)
    with connect(url, namespace, config) as deployment:
        key = deployment.store.commands.key(handle)
        blob: bytes | None = deployment.client.get(key)  # type: ignore[assignment]
        ttl = deployment.client.pttl(key)
    if not blob or blob[:1] == b"!":  # ended or moved (see lua/track.lua)
        fail(f"no live session {handle}")
    try:
        record = parse_record(blob)
    except RecordError as exc:
        fail(f"session {handle} holds no readable record ({exc})")
    meta, fields = record.meta, record.fields
    client = fields.get(CLIENT_INFO)
    auth_time = fields.get(AUTH_TIME)
    shown: dict[str, Any] = {
        "handle": handle,
        "principal": decode_principal(fields.get(PRINCIPAL)),
        "created_at": meta.created / 1000,
        "accessed_at": meta.accessed / 1000,
        "expires_at": meta.expires / 1000,
        "ttl_seconds": ttl / 1000 if ttl and ttl > 0 else None,
        "idle_timeout_seconds": meta.idle / 1000,
        "absolute_deadline": meta.deadline / 1000,
        "authenticated_at": int(auth_time) / 1000 if auth_time else None,
        "version": meta.version,
        "client_info": _client_info(client),
        "attributes": _attributes(fields),
    }
    if json:
        print_json(shown)
        return
    table = Table(show_header=False, title=f"session {handle}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in shown.items():
        if name.endswith(("_at", "deadline")):
            text = timestamp(value)
        elif name in ("client_info", "attributes"):
            text = printable(orjson.dumps(value).decode())
        else:
            text = printable("-" if value is None else str(value))
        table.add_row(name.replace("_", " "), Text(text))
    stdout().print(table)


@app.command("end")
def end(
    handle: Annotated[
        str | None, typer.Argument(help="The session to end (or --user for all of one user's).")
    ] = None,
    user: UserOption = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
) -> None:
    """End one session by its handle, or every session of --user (reason: admin)."""
    if (handle is None) == (user is None):
        fail("give a session handle or --user, not both", 2)
    if handle is not None:
        check_handle(handle)
    if user is not None:
        check_user(user)
    with connect(url, namespace, config) as deployment:
        manager = deployment.manager
        if handle is not None:
            if not manager.end_session(handle, reason=Reason.ADMIN):
                fail(f"no live session {handle}")
            typer.echo(f"ended session {handle}")
            return
        assert user is not None
        try:
            ended = manager.end_sessions(user, reason=Reason.ADMIN)
        except ValueError as exc:
            fail(str(exc), 2)
    typer.echo(f"ended {len(ended)} session(s) of {printable(user)}")
    for each in ended:
        typer.echo(f"  {each}")

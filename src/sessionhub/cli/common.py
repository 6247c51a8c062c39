"""What the operator commands share: where Redis is, one-line errors, output.

Every command takes ``--url`` (else ``SESSIONHUB_REDIS__URL`` and the other
``SESSIONHUB_*`` settings, ``.env``, or ``--config FILE``), ``--namespace``,
and, when it reads, ``--json``. Whatever the application's ``store`` setting
says, the commands look at Redis: a memory store has nothing to see from
outside its process.

Text that came from users (principals, client info) is printed with control
characters escaped: a crafted user agent must not drive the operator's
terminal. No message repeats a session id: errors do not echo what was typed,
and anything shaped like an id is hidden from them all the same
(`sessionhub.ids.hide_ids`); a ``--user`` shaped like one is refused.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import redis
import typer
from redis.exceptions import RedisClusterException, RedisError

from ..config import ConfigError, Settings
from ..connect import redis_client
from ..errors import StoreUnavailable
from ..events import Event
from ..ids import hide_ids, is_handle, looks_like_id
from ..manager import SessionManager
from ..stores.redis import RedisStore
from ..users import SessionInfo

__all__ = [
    "ConfigOption",
    "Deployment",
    "JsonOption",
    "NamespaceOption",
    "UrlOption",
    "check_handle",
    "check_user",
    "connect",
    "duration",
    "event_fields",
    "fail",
    "print_json",
    "printable",
    "reporting",
    "session_fields",
    "timestamp",
]

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Redis URL (redis://, rediss://, redis+sentinel://, redis+cluster://); "
        "default: the settings (SESSIONHUB_REDIS__URL...).",
        show_default=False,
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        help="Key prefix of the sessions (default: the settings, else 'sh').", show_default=False
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="A YAML or TOML settings file.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit with `code` (2: bad input, 1: anything else)."""
    typer.echo(f"error: {printable(hide_ids(message))}", err=True)
    raise typer.Exit(code)


@dataclass
class Deployment:
    """The Redis the commands look at, and a session manager on it."""

    settings: Settings
    client: redis.Redis | redis.cluster.RedisCluster
    store: RedisStore
    manager: SessionManager

    @property
    def where(self) -> str:
        """What this is, without credentials: "redis 127.0.0.1:6379 db 0"."""
        return self.settings.redis.target().describe()

    def close(self) -> None:
        self.store.close()
        self.client.close()


def load_settings(url: str | None, namespace: str | None, config: Path | None) -> Settings:
    overrides: dict[str, Any] = {}
    if url is not None:
        overrides["redis"] = {"url": url}
    if namespace is not None:
        overrides["namespace"] = namespace
    try:
        return Settings.load(config, **overrides)
    except ConfigError as exc:
        fail(str(exc).replace("\n", " "), 2)


@contextmanager
def connect(url: str | None, namespace: str | None, config: Path | None) -> Iterator[Deployment]:
    """The deployment the options name; a Redis failure inside becomes one line, exit 1."""
    settings = load_settings(url, namespace, config)
    client = redis_client(settings.redis)
    store = RedisStore(client, namespace=settings.namespace, **settings.redis.store_options())
    deployment = Deployment(
        settings, client, store, SessionManager(store, lifecycle=settings.lifecycle())
    )
    try:
        with reporting(deployment.where):
            yield deployment
    finally:
        deployment.close()


@contextmanager
def reporting(where: str) -> Iterator[None]:
    """Redis errors as one line naming the deployment, and exit status 1."""
    try:
        yield
    except StoreUnavailable as exc:
        fail(f"Redis at {where}: {exc.reason}")
    except (RedisError, RedisClusterException) as exc:
        fail(f"Redis at {where}: {type(exc).__name__}: {exc}")


def check_handle(handle: str) -> str:
    if is_handle(handle):
        return handle
    if looks_like_id(handle):
        fail(
            "that looks like a session id (a cookie's value), not a handle: commands take "
            "the handle `sessions list --user USER` shows, never an id (not printed here)",
            2,
        )
    fail(
        f"not a session handle ({len(handle)} characters): a handle is 23, a shard "
        "character and a digest, as `sessions list` shows",
        2,
    )


def check_user(user: str) -> str:
    """`user` (a principal), unless it looks like a session id pasted by mistake."""
    if looks_like_id(user):
        fail(
            "--user looks like a session id (a cookie's value), not a user name: give "
            "the user's name (the id is not printed, nor looked up)",
            2,
        )
    return user


# -- output --------------------------------------------------------------------------------


def printable(text: str) -> str:
    """`text` with control characters (terminal escapes among them) shown as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def timestamp(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float) -> str:
    """A short duration: "45s", "29m 12s", "3h 04m", "2d 5h"."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def print_json(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def session_fields(info: SessionInfo) -> dict[str, Any]:
    """One session as JSON (an anonymous session's principal is null)."""
    return {
        "handle": info.handle,
        "principal": info.principal or None,
        "created_at": info.created_at,
        "accessed_at": info.accessed_at,
        "expires_at": info.expires_at,
        "authenticated_at": info.authenticated_at,
        "client_info": info.client_info,
    }


def event_fields(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type.value,
        "handle": event.handle,
        "at": event.at,
        "principal": event.principal,
        "previous": event.previous,
        "reason": event.reason.value if event.reason else None,
        "created_at": event.created_at,
        "expires_at": event.expires_at,
    }

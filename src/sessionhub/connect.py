"""Building Redis clients from settings: the one place that does it.

Say where Redis is with a URL, or with the fields of `RedisSettings`:

=================================================================  ==========================
URL                                                                deployment
=================================================================  ==========================
``redis://[[user]:password@]host[:port][/db]``                     one server
``rediss://...``                                                   one server, TLS
``unix://[[user]:password@]/path/to/redis.sock[?db=N]``            one server, Unix socket
``redis+sentinel://[[user]:password@]host:port[,host:port]/service[/db]``
                                                                   Sentinel: the sentinels,
                                                                   then the service name
``rediss+sentinel://...``                                          Sentinel, TLS everywhere
``redis+cluster://[[user]:password@]host:port[,host:port]``        Cluster: seed nodes
``rediss+cluster://...``                                           Cluster, TLS
=================================================================  ==========================

The user and password in a URL are the data servers'; sentinels often have
their own, given as ``?sentinel_username=...&sentinel_password=...`` or with
the settings fields of those names.

Every command gives up within `RedisSettings.timeout` (1 s unless set): the
socket timeouts bound one attempt, and a failed connection is retried with
jittered exponential backoff only while another whole attempt still fits in
what is left of that time. Timeouts are not retried: the server is slow, and
the command may have run.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

from .stores.redis.durable import DEFAULT_TIMEOUT as DURABLE_ENDS_TIMEOUT
from .stores.redis.failover import FAILOVER_WAIT, acheck_primary, check_primary

if HIREDIS_AVAILABLE:
    import hiredis

    _HIREDIS_PACK: Callable[[tuple[Any, ...]], bytes] | None = hiredis.pack_command
else:  # redis[hiredis] is a dependency, but redis-py ignores a hiredis it deems too old
    _HIREDIS_PACK = None

__all__ = [
    "AsyncBoundedRetry",
    "BoundedRetry",
    "Kind",
    "LeanAsyncConnection",
    "RedisSettings",
    "Target",
    "async_redis_client",
    "node_client",
    "redis_client",
]

T = TypeVar("T")
Kind = Literal["standalone", "sentinel", "cluster"]
Address = tuple[str, int]

_DEFAULT_PORTS: dict[str, int] = {"standalone": 6379, "sentinel": 26379, "cluster": 6379}
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
# What a URL scheme may be (RFC 3986), short enough to be one of ours: only such is shown.
_SCHEME_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,19}")
_QUERY_OPTIONS: dict[Kind, set[str]] = {
    "standalone": {"db"},
    "sentinel": {"sentinel_username", "sentinel_password"},
    "cluster": set(),
}


@dataclass(frozen=True, slots=True)
class Target:
    """Where Redis is, resolved from a URL or from the settings fields.

    `addresses` are the server's (standalone), the sentinels' or the seed nodes'.
    """

    kind: Kind
    addresses: tuple[Address, ...]
    service: str | None = None
    unix_socket: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """Where this points, without credentials (safe to log)."""
        where = self.unix_socket or ",".join(f"{host}:{port}" for host, port in self.addresses)
        tls = " (TLS)" if self.tls else ""
        if self.kind == "sentinel":
            return f"sentinel {where} service {self.service!r} db {self.db}{tls}"
        if self.kind == "cluster":
            return f"cluster {where}{tls}"
        return f"redis {where} db {self.db}{tls}"


def parse_address(text: str, default_port: int) -> Address:
    """'host:port', 'host' or '[v6]:port' -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"malformed address {text!r}")
    else:
        host, _, port_text = text.partition(":")
        if ":" in port_text:
            raise ValueError(f"malformed address {text!r}: write IPv6 hosts as [host]:port")
    if not host:
        raise ValueError(f"address {text!r} has no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address {text!r} has no valid port")
    return host, int(port_text)


def parse_url(url: str) -> Target:
    """The deployment a Redis URL names. Errors never repeat the URL (it may hold a password)."""
    scheme, has_scheme, rest = url.partition("://")
    if not has_scheme or not _SCHEME_SHAPE.fullmatch(scheme):
        # Without "://" the whole URL would pass for the scheme: "user:secret@host".
        raise ValueError(f"the Redis URL has no scheme; start it with one of {', '.join(_SCHEMES)}")
    if scheme.lower() not in _SCHEMES or not rest:
        raise ValueError(
            f"unsupported Redis URL scheme {scheme!r}; use one of {', '.join(_SCHEMES)}"
        )
    kind, tls = _SCHEMES[scheme.lower()]
    parts = urlsplit(f"x://{rest}")
    userinfo, _, netloc = parts.netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user_text, has_password, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if has_password else None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(query) - _QUERY_OPTIONS[kind]
    if unknown:
        allowed = ", ".join(sorted(_QUERY_OPTIONS[kind])) or "none"
        raise ValueError(
            f"unknown option(s) {', '.join(sorted(unknown))} in the Redis URL (allowed: {allowed})"
        )
    path = [segment for segment in parts.path.split("/") if segment]
    common: dict[str, Any] = {"username": username, "password": password, "tls": tls}

    if scheme.lower() == "unix":
        if netloc or not parts.path:
            raise ValueError("a unix:// Redis URL is unix:///path/to/socket")
        return Target(
            "standalone", (), unix_socket=parts.path, db=_db(query.get("db", "0")), **common
        )
    if not netloc:
        raise ValueError("the Redis URL names no host")
    addresses = tuple(parse_address(item, _DEFAULT_PORTS[kind]) for item in netloc.split(","))
    if kind == "standalone":
        if len(addresses) != 1:
            raise ValueError(
                "a redis:// URL names one server; use redis+sentinel:// or redis+cluster://"
            )
        if len(path) > 1:
            raise ValueError("a redis:// URL path is at most the database number")
        db = _db(path[0] if path else query.get("db", "0"))
        return Target("standalone", addresses, db=db, **common)
    if kind == "sentinel":
        if not 1 <= len(path) <= 2:
            raise ValueError("a redis+sentinel:// URL needs the service name: .../service[/db]")
        return Target(
            "sentinel",
            addresses,
            service=unquote(path[0]),
            db=_db(path[1] if len(path) == 2 else "0"),
            sentinel_username=query.get("sentinel_username") or None,
            sentinel_password=query.get("sentinel_password") or None,
            **common,
        )
    if path and path != ["0"]:
        raise ValueError("a Cluster has only database 0: redis+cluster://host:port,host:port")
    return Target("cluster", addresses, **common)


#: The highest database index any Redis can have (its `databases` is at most 2^31 - 1).
MAX_DB = 2**31 - 2


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError("the Redis database must be a number")
    if int(text) > MAX_DB:
        raise ValueError(f"the Redis database must be a number from 0 to {MAX_DB}")
    return int(text)


class RedisSettings(BaseModel):
    """Where the session Redis is, and how long to wait for it.

    With `url` set, the URL says which deployment and where; otherwise
    `sentinels` + `service_name` mean Sentinel, `cluster_nodes` mean Cluster,
    and `host`/`port` one server. Credentials left out of the URL come from
    the fields. Timeouts are seconds.
    """

    # A URL may hold a password: keep inputs out of validation errors and reprs.
    # A misspelt key (``redis: {ur: ...}``) is an error, not a silent default.
    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")

    url: str | None = Field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 6379
    username: str | None = None
    password: SecretStr | None = None
    db: int = Field(default=0, ge=0, le=MAX_DB)

    #: Sentinel: "host:port" of each sentinel, and the name of the monitored service.
    sentinels: list[str] = Field(default_factory=list)
    service_name: str | None = None
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = None
    #: Cluster: "host:port" of a few nodes; the rest are discovered.
    cluster_nodes: list[str] = Field(default_factory=list)

    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: Check the server's certificate and host name (only turn off for tests).
    tls_verify: bool = True

    #: The most one command may take, retries included: then StoreUnavailable.
    timeout: float = Field(default=1.0, gt=0)
    #: One attempt: to open a connection, and to wait for an answer.
    connect_timeout: float = Field(default=0.25, gt=0)
    socket_timeout: float = Field(default=0.5, gt=0)
    #: At most this many retries of a failed connection (within `timeout`).
    retries: int = Field(default=3, ge=0)
    #: Jittered exponential backoff between retries: base and cap, seconds.
    backoff_base: float = Field(default=0.02, ge=0)
    backoff_cap: float = Field(default=0.1, ge=0)

    @field_validator("url")
    @classmethod
    def _parse_url(cls, url: str | None) -> str | None:
        if url is not None:
            parse_url(url)  # a malformed URL is an error named redis.url
        return url

    #: Sentinel: the most a write waits for a failover to end before the 503.
    failover_wait: float = Field(default=FAILOVER_WAIT, ge=0)
    #: Replicas each end of a session (logout...) must reach before it is
    #: acknowledged; unset: 1 with Sentinel, else 0 (refused above 0 on Cluster).
    durable_ends: int | None = Field(default=None, ge=0)
    #: How long an end waits for them (below socket_timeout).
    durable_ends_timeout: float = Field(default=DURABLE_ENDS_TIMEOUT, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RedisSettings:
        if self.connect_timeout + self.socket_timeout > self.timeout:
            raise ValueError(
                "connect_timeout + socket_timeout must not exceed timeout "
                f"({self.connect_timeout} + {self.socket_timeout} > {self.timeout}): "
                "one attempt alone would overrun the bound"
            )
        kind = self.target().kind  # a malformed URL or address fails here, when made
        if self.durable_ends and kind == "cluster":
            raise ValueError(
                "durable_ends is not available on Cluster (see docs/operating.md): "
                "leave it unset and set min-replicas-to-write on the primaries"
            )
        durable = self.durable_ends if self.durable_ends is not None else kind == "sentinel"
        if durable and self.durable_ends_timeout >= self.socket_timeout:
            raise ValueError(
                f"durable_ends_timeout ({self.durable_ends_timeout}) must be below "
                f"socket_timeout ({self.socket_timeout}): the answer to WAIT must come in time"
            )
        return self

    def target(self) -> Target:
        """The deployment these settings name."""
        password = self.password.get_secret_value() if self.password else None
        sentinel_password = (
            self.sentinel_password.get_secret_value() if self.sentinel_password else None
        )
        fallback: dict[str, Any] = {
            "username": self.username,
            "password": password,
            "sentinel_username": self.sentinel_username,
            "sentinel_password": sentinel_password,
        }
        if self.url:
            target = parse_url(self.url)
            filled = {
                name: getattr(target, name) if getattr(target, name) is not None else value
                for name, value in fallback.items()
            }
            return Target(
                target.kind,
                target.addresses,
                service=target.service,
                unix_socket=target.unix_socket,
                db=target.db,
                tls=target.tls or self.tls,
                **filled,
            )
        if self.sentinels and self.cluster_nodes:
            raise ValueError("set either sentinels or cluster_nodes, not both")
        if self.sentinels:
            if not self.service_name:
                raise ValueError("Sentinel needs service_name (the name the sentinels monitor)")
            addresses = tuple(parse_address(item, 26379) for item in self.sentinels)
            return Target(
                "sentinel",
                addresses,
                service=self.service_name,
                db=self.db,
                tls=self.tls,
                **fallback,
            )
        if self.cluster_nodes:
            if self.db:
                raise ValueError("a Cluster has only database 0")
            addresses = tuple(parse_address(item, 6379) for item in self.cluster_nodes)
            return Target("cluster", addresses, tls=self.tls, **fallback)
        return Target("standalone", ((self.host, self.port),), db=self.db, tls=self.tls, **fallback)

    @property
    def attempt_time(self) -> float:
        """The longest one attempt can take: connect, then wait for the answer."""
        return self.connect_timeout + self.socket_timeout

    def client_options(self, *, sentinel: bool = False) -> dict[str, Any]:
        """Keyword arguments for every connection to a data server (or to a sentinel)."""
        target = self.target()
        options: dict[str, Any] = {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
            "username": target.sentinel_username if sentinel else target.username,
            "password": target.sentinel_password if sentinel else target.password,
        }
        if target.tls:
            options.update(
                ssl=True,
                ssl_ca_certs=self.tls_ca_file,
                ssl_certfile=self.tls_cert_file,
                ssl_keyfile=self.tls_key_file,
                ssl_cert_reqs=ssl.CERT_REQUIRED if self.tls_verify else ssl.CERT_NONE,
                ssl_check_hostname=self.tls_verify,
            )
        return options

    def store_options(self) -> dict[str, Any]:
        """Keyword arguments of `RedisStore` and `AsyncRedisStore` these settings decide."""
        return {
            "durable_ends": self.durable_ends,
            "durable_ends_timeout": self.durable_ends_timeout,
            "failover_wait": self.failover_wait,
            # A Cluster slot on the move is waited for as long as one command may take.
            "redirect_patience": self.timeout,
        }

    def backoff(self) -> ExponentialWithJitterBackoff:
        return ExponentialWithJitterBackoff(cap=self.backoff_cap, base=self.backoff_base)

    def cluster_retries(self) -> int:
        """Cluster clients only take a retry count; allow one if two attempts fit."""
        fits = 2 * self.attempt_time + self.backoff_cap <= self.timeout
        return min(self.retries, 1) if fits else 0


# -- Retries bounded by time -------------------------------------------------------
#
# redis-py nests retries (a command's retry wraps a connect that has its own), so
# a plain retry count multiplies. The deadline is set by the outermost retry of a
# command and shared by every retry nested in it: it is kept per task (or per
# thread, outside asyncio), so a task started meanwhile gets its own.
#
# Not in a ContextVar: a coroutine abandoned inside a retry (its task destroyed
# while pending, as in a process shutting down) is closed later by the garbage
# collector, in whatever context is current then, and a ContextVar token cannot
# be reset from there. A table keyed by task is cleaned from anywhere.


class _Deadlines:
    """The deadline of the command each task (or thread) is running, if any."""

    def __init__(self) -> None:
        # Weak keys: a deadline never keeps an abandoned task alive.
        self._tasks: weakref.WeakKeyDictionary[asyncio.Task[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._threads: dict[int, float] = {}
        # No lock: each entry is touched only by its own task or thread (and, for
        # an abandoned task, by the collector once nothing else can), and a lock
        # taken here could be re-entered by a collection that releases a deadline.

    def _table(self) -> tuple[dict[Any, float] | weakref.WeakKeyDictionary[Any, float], object]:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop in this thread
            task = None
        if task is not None:
            return self._tasks, task
        return self._threads, threading.get_ident()

    def get(self) -> float | None:
        table, owner = self._table()
        return table.get(owner)

    def claim(self, deadline: float) -> Callable[[], None] | None:
        """Set the caller's deadline unless it has one; returns what releases it."""
        table, owner = self._table()
        if owner in table:
            return None  # nested in a command's retry: share its deadline
        table[owner] = deadline

        def release() -> None:
            table.pop(owner, None)

        return release


_deadlines = _Deadlines()


class _Budget:
    """The time rule shared by the sync and the async retry."""

    def __init__(self, total: float, attempt: float, backoff_cap: float) -> None:
        self.total = total
        self.attempt = attempt
        self.backoff_cap = backoff_cap

    def open(self) -> Callable[[], None] | None:
        return _deadlines.claim(time.monotonic() + self.total)

    @staticmethod
    def close(release: Callable[[], None] | None) -> None:
        if release is not None:
            release()

    def allows(self, error: Exception, is_retryable: Callable[[Exception], bool] | None) -> bool:
        """Retry only if the caller agrees and a backoff plus a whole attempt still fit."""
        if is_retryable is not None and not is_retryable(error):
            return False
        deadline = _deadlines.get()
        left = float("inf") if deadline is None else deadline - time.monotonic()
        return left >= self.backoff_cap + self.attempt


class BoundedRetry(redis.retry.Retry):
    """redis-py's `Retry`, on connection errors only, that never outlasts `total` seconds."""

    def __init__(
        self, backoff: Any, retries: int, *, total: float, attempt: float, backoff_cap: float
    ) -> None:
        super().__init__(backoff, retries, supported_errors=(RedisConnectionError,))
        self.budget = _Budget(total, attempt, backoff_cap)

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        release = self.budget.open()
        try:
            return super().call_with_retry(
                do,
                fail,
                lambda error: self.budget.allows(error, is_retryable),
                with_failure_count,
            )
        finally:
            self.budget.close(release)


class AsyncBoundedRetry(redis.asyncio.retry.Retry):
    """The asyncio twin of `BoundedRetry` (same `_Budget` rule)."""

    def __init__(
        self, backoff: Any, retries: int, *, total: float, attempt: float, backoff_cap: float
    ) -> None:
        super().__init__(backoff, retries, supported_errors=(RedisConnectionError,))
        self.budget = _Budget(total, attempt, backoff_cap)

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        release = self.budget.open()
        try:
            return await super().call_with_retry(
                do,
                fail,
                lambda error: self.budget.allows(error, is_retryable),
                with_failure_count,
            )
        finally:
            self.budget.close(release)


# -- A leaner asyncio connection ----------------------------------------------------
#
# A redis.asyncio command costs more of the caller's CPU than a sync one, in two
# places sessionhub's commands do not need: it packs every command in pure Python
# (the sync client packs with hiredis, so it needs nothing here), and with a socket
# timeout (ours always have one) it wraps every write in `asyncio.wait_for`, which
# before Python 3.12 runs the write in a Task of its own. Yet a write that leaves
# the transport's buffer below its high-water mark never waits: `drain()` returns at
# once. So this connection packs with hiredis and writes such a command straight
# into an empty, open transport; anything else (a large write, a buffer not yet
# empty, a closing transport, a health check) takes redis-py's own send, with its
# write timeout. A command stays bounded: its reply is read under the socket
# timeout, and no reply can come before the command has gone out.
#
# This leans on redis-py internals (`_writer`, the send and the classes it replaces),
# so each is checked where it is used: whatever does not look as expected gets
# redis-py's own behaviour back, never an error.

_REDIS_SEND = redis.asyncio.connection.AbstractConnection.send_packed_command


class LeanAsyncConnection(redis.asyncio.connection.AbstractConnection):
    """Mixed into redis.asyncio's connection classes: hiredis packing, direct small writes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # hiredis writes str as strict UTF-8, redis-py's default (and sessionhub's);
        # any other encoding keeps redis-py's packer.
        encoding = (
            getattr(self.encoder, "encoding", None),
            getattr(self.encoder, "encoding_errors", None),
        )
        self._hiredis_pack = _HIREDIS_PACK if encoding == ("utf-8", "strict") else None

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        name = args[0]
        # redis-py splits a name of several words ("CONFIG GET"); those, and any
        # argument hiredis refuses (None, bool, bytearray), stay with its packer,
        # which also raises its own DataError for what it refuses.
        if self._hiredis_pack is not None and (
            (isinstance(name, str) and name.isalpha())
            or (isinstance(name, bytes) and b" " not in name)
        ):
            try:
                return [self._hiredis_pack(args)]
            except TypeError:
                pass
        return super().pack_command(*args)

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        writer = getattr(self, "_writer", None)
        if (
            isinstance(command, list)
            and isinstance(writer, asyncio.StreamWriter)  # else not connected, or not asyncio's
            and not (check_health and self.health_check_interval)
            # redis-py's send wrapped (a tracer, a test counting round trips): use it
            and redis.asyncio.connection.AbstractConnection.send_packed_command is _REDIS_SEND
        ):
            transport = writer.transport
            if (
                not transport.is_closing()
                and not transport.get_write_buffer_size()
                and sum(map(len, command)) <= transport.get_write_buffer_limits()[1]
            ):
                writer.writelines(command)
                return
        await super().send_packed_command(command, check_health)


# The lean twin of each class redis.asyncio picks (TCP, TLS, Unix socket, Sentinel).
# Only these: a class a later redis-py picks instead keeps its own send.
_LEAN_CLASSES: dict[type[Any], type[Any]] = {
    base: type(f"Lean{base.__name__}", (LeanAsyncConnection, base), {"__module__": __name__})
    for base in (
        redis.asyncio.connection.Connection,
        redis.asyncio.connection.SSLConnection,
        redis.asyncio.connection.UnixDomainSocketConnection,
        redis.asyncio.sentinel.SentinelManagedConnection,
        redis.asyncio.sentinel.SentinelManagedSSLConnection,
    )
}


def _lean_twin(base: Any) -> Any:
    return _LEAN_CLASSES.get(base, base)


def _with_lean_connections(client: Any) -> Any:
    """The asyncio client, making lean connections (it has none yet: they open lazily)."""
    if not isinstance(client, redis.asyncio.cluster.RedisCluster):
        pool = client.connection_pool
        pool.connection_class = _lean_twin(pool.connection_class)
        return client
    # A Cluster client takes no connection class: the seed nodes it has built have
    # theirs, and the nodes it discovers later take it from its connection kwargs.
    for node in client.startup_nodes:
        node.connection_class = _lean_twin(node.connection_class)
    options = client.get_connection_kwargs()
    if "connection_class" in options:
        options["connection_class"] = _lean_twin(options["connection_class"])
    return client


# -- The builders -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Flavor:
    """redis-py's classes for one I/O style: the builder below is written once for both."""

    redis: Any
    cluster: Any
    cluster_node: Any
    sentinel: Any
    retry: Any
    bounded_retry: Any
    #: redis-py's `redis_connect_func` for a Sentinel client's connections.
    check_primary: Any
    #: What the built client still needs (the asyncio one: lean connections).
    finish: Callable[[Any], Any]


_SYNC = _Flavor(
    redis.Redis,
    redis.cluster.RedisCluster,
    redis.cluster.ClusterNode,
    redis.sentinel.Sentinel,
    redis.retry.Retry,
    BoundedRetry,
    check_primary,
    lambda client: client,
)
_ASYNC = _Flavor(
    redis.asyncio.Redis,
    redis.asyncio.cluster.RedisCluster,
    redis.asyncio.cluster.ClusterNode,
    redis.asyncio.sentinel.Sentinel,
    redis.asyncio.retry.Retry,
    AsyncBoundedRetry,
    acheck_primary,
    _with_lean_connections,
)


def _build(settings: RedisSettings, flavor: _Flavor) -> Any:
    return flavor.finish(_client(settings, flavor))


def _client(settings: RedisSettings, flavor: _Flavor) -> Any:
    target = settings.target()
    options = settings.client_options()
    if target.kind == "cluster":
        # A Cluster client takes only a retry count; it refreshes its slot map itself.
        return flavor.cluster(
            startup_nodes=[flavor.cluster_node(host, port) for host, port in target.addresses],
            retry=flavor.retry(settings.backoff(), settings.cluster_retries()),
            **options,
        )
    retry = flavor.bounded_retry(
        settings.backoff(),
        settings.retries,
        total=settings.timeout,
        attempt=settings.attempt_time,
        backoff_cap=settings.backoff_cap,
    )
    if target.kind == "sentinel":
        # A sentinel that does not answer is not retried: the next one is asked.
        sentinels = flavor.sentinel(
            list(target.addresses),
            sentinel_kwargs={
                **settings.client_options(sentinel=True),
                "retry": flavor.retry(NoBackoff(), 0),
            },
        )
        # Sentinel may still name a demoted server for a moment after a failover:
        # a new connection proves its server is the primary (or asks again).
        return sentinels.master_for(
            target.service,
            db=target.db,
            retry=retry,
            redis_connect_func=flavor.check_primary,
            **options,
        )
    if target.unix_socket is not None:
        return flavor.redis(
            unix_socket_path=target.unix_socket, db=target.db, retry=retry, **options
        )
    host, port = target.addresses[0]
    return flavor.redis(host=host, port=port, db=target.db, retry=retry, **options)


def redis_client(settings: RedisSettings) -> redis.Redis | redis.cluster.RedisCluster:
    """A synchronous client for the deployment `settings` name (bytes replies)."""
    client: redis.Redis | redis.cluster.RedisCluster = _build(settings, _SYNC)
    return client


def async_redis_client(
    settings: RedisSettings,
) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
    """An asyncio client for the deployment `settings` name (bytes replies)."""
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = _build(settings, _ASYNC)
    return client


def node_client(
    settings: RedisSettings, address: Address, *, sentinel: bool = False
) -> redis.Redis:
    """A plain client for one server (or one sentinel) of the deployment, never retried.

    For tools that look at each node in turn (the doctor, admin listings).
    """
    options = settings.client_options(sentinel=sentinel)
    host, port = address
    return redis.Redis(host=host, port=port, retry=redis.retry.Retry(NoBackoff(), 0), **options)

"""Connection settings: URLs and fields, bad input, the time bound, TLS, the asyncio connection."""

from __future__ import annotations

import asyncio
import enum
import gc
import os
import signal
import sys
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
from pydantic import SecretStr, ValidationError
from redis.backoff import NoBackoff
from redis.exceptions import DataError

import sessionhub.connect
from sessionhub import AsyncRedisStore, AsyncSessionManager, RedisStore, SessionManager
from sessionhub.connect import (
    AsyncBoundedRetry,
    BoundedRetry,
    LeanAsyncConnection,
    RedisSettings,
    Target,
    async_redis_client,
    node_client,
    redis_client,
)
from sessionhub.errors import StoreUnavailable
from sessionhub.ids import IdScheme
from sessionhub.stores.base import Read
from tests.proxy import Proxy
from tests.servers import (
    RedisCluster,
    RedisSentinelSet,
    RedisServer,
    TlsRedisServer,
    free_port,
)

SLACK = 0.5  # two shared cores: a generous margin on every time bound


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h", Target("standalone", (("h", 6379),))),
        (
            "redis://alice:p%40ss@h:6380/2",
            Target("standalone", (("h", 6380),), db=2, username="alice", password="p@ss"),
        ),
        ("rediss://:secret@h", Target("standalone", (("h", 6379),), password="secret", tls=True)),
        ("redis://[::1]:7000/1", Target("standalone", (("::1", 7000),), db=1)),
        (
            "unix:///run/redis.sock?db=3",
            Target("standalone", (), unix_socket="/run/redis.sock", db=3),
        ),
        (
            "redis+sentinel://:pw@s1:26379,s2,s3:26380/mymaster/4?sentinel_password=sp",
            Target(
                "sentinel",
                (("s1", 26379), ("s2", 26379), ("s3", 26380)),
                service="mymaster",
                db=4,
                password="pw",
                sentinel_password="sp",
            ),
        ),
        (
            "rediss+sentinel://s1/mymaster",
            Target("sentinel", (("s1", 26379),), service="mymaster", tls=True),
        ),
        ("redis+cluster://n1:7000,n2:7001", Target("cluster", (("n1", 7000), ("n2", 7001)))),
        (
            "rediss+cluster://u:p@n1/0",
            Target("cluster", (("n1", 6379),), username="u", password="p", tls=True),
        ),
    ],
)
def test_urls(url: str, expected: Target) -> None:
    assert RedisSettings(url=url).target() == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:hunter2@h", "unsupported Redis URL scheme 'http'"),
        ("default:hunter2@h:6379", "no scheme"),  # forgotten: all of it would be the scheme
        ("hunter2hunter2hunter2://h", "no scheme"),
        ("redis://:hunter2@h?socket_timeout=9", "unknown option"),
        ("redis://:hunter2@a:1,b:2", "one server"),
        ("redis://:hunter2@h/zero", "must be a number"),
        ("redis://:hunter2@h/2147483647", "must be a number from 0 to 2147483646"),
        ("redis://:hunter2@h/1/2", "at most the database"),
        ("redis://:hunter2@h:99999", "no valid port"),
        ("redis://:hunter2@h:port", "no valid port"),
        ("redis://:hunter2@::1:6379", "IPv6"),
        ("redis://:hunter2@", "no host"),
        ("redis+sentinel://:hunter2@s1,s2", "service name"),
        ("redis+sentinel://:hunter2@s1/svc/1/2", "service name"),
        ("redis+sentinel://:hunter2@s1/svc?password=x", "unknown option"),
        ("redis+cluster://:hunter2@n1/3", "only database 0"),
        ("unix://:hunter2@host/sock", "unix:///path"),
    ],
)
def test_bad_urls_are_refused_without_echoing_the_password(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        RedisSettings(url=url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sentinels": ["s1:26379"]}, "service_name"),
        ({"sentinels": ["s1"], "service_name": "m", "cluster_nodes": ["n1"]}, "not both"),
        ({"cluster_nodes": ["n1:7000"], "db": 1}, "only database 0"),
        ({"db": -1}, "greater than or equal to 0"),
        ({"db": 2**31}, "less than or equal to 2147483646"),
        ({"cluster_nodes": ["n1:x"]}, "no valid port"),
        ({"socket_timeout": 2.0}, "must not exceed timeout"),
        ({"timeout": 0}, "greater than 0"),
        ({"retries": -1}, "greater than or equal to 0"),
    ],
)
def test_bad_fields_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RedisSettings(**fields)


def test_fields_name_each_deployment() -> None:
    sentinel = RedisSettings(sentinels=["s1", "s2:26380"], service_name="m", db=2).target()
    assert sentinel == Target("sentinel", (("s1", 26379), ("s2", 26380)), service="m", db=2)
    cluster = RedisSettings(cluster_nodes=["n1:7000"], tls=True).target()
    assert cluster == Target("cluster", (("n1", 7000),), tls=True)
    assert RedisSettings(host="h", port=1, db=3).target() == Target("standalone", (("h", 1),), db=3)


def test_credentials_left_out_of_the_url_come_from_the_fields() -> None:
    settings = RedisSettings(
        url="redis+sentinel://s1/m",
        password=SecretStr("from-env"),
        sentinel_password=SecretStr("sentinel-secret"),
    )
    target = settings.target()
    assert (target.password, target.sentinel_password) == ("from-env", "sentinel-secret")
    in_url = RedisSettings(url="redis://:in-url@h", password=SecretStr("from-env")).target()
    assert in_url.password == "in-url"


def test_secrets_stay_out_of_reprs_and_descriptions() -> None:
    settings = RedisSettings(url="redis+sentinel://:hunter2@s1/m?sentinel_password=hunter3")
    shown = repr(settings) + repr(settings.target()) + settings.target().describe()
    assert "hunter" not in shown
    assert settings.target().describe() == "sentinel s1:26379 service 'm' db 0"


def test_builders_pick_the_client_for_the_deployment() -> None:
    # Cluster clients contact their seeds when built; Sentinel and standalone ones lazily.
    sentinel = redis_client(RedisSettings(url="redis+sentinel://127.0.0.1:1/m"))
    assert isinstance(sentinel, redis.Redis)
    assert isinstance(sentinel.connection_pool, redis.sentinel.SentinelConnectionPool)
    assert isinstance(sentinel.get_retry(), BoundedRetry)
    async_sentinel = async_redis_client(RedisSettings(url="redis+sentinel://127.0.0.1:1/m"))
    assert isinstance(async_sentinel, redis.asyncio.Redis)
    assert isinstance(async_sentinel.connection_pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert isinstance(async_sentinel.get_retry(), AsyncBoundedRetry)
    plain = redis_client(RedisSettings(url="unix:///nowhere.sock"))
    assert isinstance(plain, redis.Redis)
    assert plain.get_connection_kwargs()["path"] == "/nowhere.sock"


def _unreachable(**fields: Any) -> RedisSettings:
    return RedisSettings(port=free_port(), **fields)


def test_a_closed_port_fails_within_the_bound_even_with_many_retries() -> None:
    # 1000 retries allowed, but no retry may start once it could overrun `timeout`.
    settings = _unreachable(retries=1000, timeout=0.6, socket_timeout=0.3, backoff_cap=0.02)
    manager = SessionManager(RedisStore(redis_client(settings)))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="ConnectionError"):
        manager.load(IdScheme().new().id)
    assert time.monotonic() - started < settings.timeout + SLACK


async def test_a_closed_port_fails_within_the_bound_async() -> None:
    settings = _unreachable(retries=1000, timeout=0.6, socket_timeout=0.3, backoff_cap=0.02)
    client = async_redis_client(settings)
    manager = AsyncSessionManager(AsyncRedisStore(client))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="ConnectionError"):
        await manager.load(IdScheme().new().id)
    assert time.monotonic() - started < settings.timeout + SLACK
    await client.aclose()


def test_retries_happen_while_they_fit() -> None:
    """With room for them, failed connections are retried (jittered, not immediate)."""
    attempts = 0

    def fail() -> None:
        nonlocal attempts
        attempts += 1
        raise redis.ConnectionError("refused")

    settings = RedisSettings(retries=3, backoff_base=0.01, backoff_cap=0.05)
    retry = BoundedRetry(
        settings.backoff(),
        settings.retries,
        total=settings.timeout,
        attempt=settings.attempt_time,
        backoff_cap=settings.backoff_cap,
    )
    with pytest.raises(redis.ConnectionError):
        retry.call_with_retry(fail, lambda error: None)
    assert attempts == 4
    # A timeout is not retried: the server is slow and the command may have run.
    attempts = 0

    def slow() -> None:
        nonlocal attempts
        attempts += 1
        raise redis.TimeoutError("slow")

    with pytest.raises(redis.TimeoutError):
        retry.call_with_retry(slow, lambda error: None)
    assert attempts == 1


async def test_a_task_started_inside_a_command_gets_its_own_time() -> None:
    """A task inherits the context of the retry that started it, not its deadline."""
    retry = AsyncBoundedRetry(NoBackoff(), 3, total=0.05, attempt=0.01, backoff_cap=0.0)
    spawned: list[asyncio.Task[int]] = []
    attempts = 0

    async def nothing(error: Exception) -> None:
        return None

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise redis.ConnectionError("once more")
        return attempts

    async def later() -> int:
        await asyncio.sleep(0.1)  # the first command's deadline is long gone
        return await retry.call_with_retry(flaky, nothing)

    async def command() -> str:
        spawned.append(asyncio.create_task(later()))
        return "done"

    assert await retry.call_with_retry(command, nothing) == "done"
    assert await spawned[0] == 3  # retried, on its own deadline


def test_commands_abandoned_while_connecting_leave_no_error_behind(
    redis_server: RedisServer,
) -> None:
    """A process shutting down with requests still opening connections (a rolling restart).

    Their coroutines are closed later by the garbage collector, in whatever context
    is current then: releasing their retry deadline must work from there.
    """
    unraisable: list[str] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda report: unraisable.append(repr(report.exc_value))
    proxy = Proxy(redis_server.port).start()
    try:
        proxy.stall()  # connections are accepted, the handshake is never answered
        settings = RedisSettings(port=proxy.port, timeout=5, connect_timeout=2, socket_timeout=2)
        loop = asyncio.new_event_loop()
        client = async_redis_client(settings)
        store = AsyncRedisStore(client)
        handle = IdScheme().new().handle
        read = Read(handle, 0, 0.5)
        tasks = [loop.create_task(store.aexecute(read)) for _ in range(50)]
        loop.run_until_complete(asyncio.sleep(0.3))
        assert not any(task.done() for task in tasks)
        loop.close()  # the tasks are never finished
        del tasks, store, client, loop

        async def collect() -> None:
            gc.collect()  # from a task of another loop: another context

        asyncio.run(collect())
    finally:
        sys.unraisablehook = previous_hook
        proxy.close()
    assert not [error for error in unraisable if "Context" in error], unraisable[:3]


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsRedisServer]:
    server = TlsRedisServer()
    server.start()
    yield server
    server.cleanup()


def test_tls_with_the_servers_ca(tls_server: TlsRedisServer) -> None:
    settings = RedisSettings(
        url=f"rediss://127.0.0.1:{tls_server.port}", tls_ca_file=str(tls_server.ca_file)
    )
    manager = SessionManager(RedisStore(redis_client(settings)))
    session = manager.load(None)
    session["over"] = "tls"
    session_id = manager.commit(session).id
    assert manager.load(session_id)["over"] == "tls"
    with node_client(settings, ("127.0.0.1", tls_server.port)) as one_node:
        assert one_node.dbsize() == 1


async def test_tls_async(tls_server: TlsRedisServer) -> None:
    settings = RedisSettings(port=tls_server.port, tls=True, tls_ca_file=str(tls_server.ca_file))
    client = async_redis_client(settings)
    assert await client.ping()
    await client.aclose()


def test_tls_refuses_an_unknown_certificate(tls_server: TlsRedisServer) -> None:
    settings = RedisSettings(url=f"rediss://127.0.0.1:{tls_server.port}")  # system CAs only
    manager = SessionManager(RedisStore(redis_client(settings)))
    with pytest.raises(StoreUnavailable):
        manager.load(IdScheme().new().id)
    unverified = RedisSettings(url=f"rediss://127.0.0.1:{tls_server.port}", tls_verify=False)
    assert redis_client(unverified).ping()


def test_plain_text_to_a_tls_port_is_unavailable_not_a_hang(tls_server: TlsRedisServer) -> None:
    settings = RedisSettings(port=tls_server.port)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        SessionManager(RedisStore(redis_client(settings))).load(IdScheme().new().id)
    assert time.monotonic() - started < settings.timeout + SLACK


# -- The lean asyncio connection ---------------------------------------------------------
#
# Every asyncio client packs with hiredis and writes a small command straight into
# its transport; the rest keeps redis-py's send (sessionhub.connect explains why).


def _connection_classes(client: Any) -> set[type[Any]]:
    """What `client` makes its connections of (a Cluster: its nodes, and nodes to come)."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        nodes = client.get_nodes() or client.startup_nodes
        options: dict[str, Any] = client.get_connection_kwargs()
        return {node.connection_class for node in nodes} | {options["connection_class"]}
    return {client.connection_pool.connection_class}


def _standalone(settings: RedisSettings) -> redis.asyncio.Redis:
    client = async_redis_client(settings)
    assert isinstance(client, redis.asyncio.Redis)
    return client


def _lean_connection_class() -> Any:
    return _standalone(RedisSettings()).connection_pool.connection_class


@pytest.mark.parametrize(
    ("url", "twin_of"),
    [
        ("redis://127.0.0.1:1", redis.asyncio.connection.Connection),
        ("rediss://127.0.0.1:1", redis.asyncio.connection.SSLConnection),
        ("unix:///nowhere.sock", redis.asyncio.connection.UnixDomainSocketConnection),
        ("redis+sentinel://127.0.0.1:1/m", redis.asyncio.sentinel.SentinelManagedConnection),
        ("rediss+sentinel://127.0.0.1:1/m", redis.asyncio.sentinel.SentinelManagedSSLConnection),
        ("redis+cluster://127.0.0.1:1", redis.asyncio.connection.Connection),
        ("rediss+cluster://127.0.0.1:1", redis.asyncio.connection.SSLConnection),
    ],
)
def test_every_asyncio_client_makes_lean_connections(url: str, twin_of: type[Any]) -> None:
    (connection_class,) = _connection_classes(async_redis_client(RedisSettings(url=url)))
    assert connection_class.__bases__ == (LeanAsyncConnection, twin_of)


class _Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", "é and spaces"),
        ("SET", b"k", b"\x00\xff\r\n"),
        ("SET", "k", 2**70),
        ("SET", "k", -3),
        ("SET", "k", 0.1),
        ("SET", "k", 1e20),
        ("SET", "k", float("inf")),
        ("SET", "k", ""),
        ("SET", "k", "x" * 100_000),
        ("SET", "k", bytearray(b"ab")),
        ("SET", "k", memoryview(b"ab")),
        ("SET", "k", _Color.RED),
        ("CONFIG GET", "maxmemory"),
        (b"CONFIG GET", b"maxmemory"),
        ("CONFIG\tGET", "maxmemory"),
        ("JSON.SET", "k", "$", "1"),
    ],
)
def test_commands_are_packed_as_redis_py_packs_them(args: tuple[Any, ...]) -> None:
    lean = _lean_connection_class()()
    plain = redis.asyncio.Connection()
    assert b"".join(lean.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_values_redis_py_refuses_are_refused_alike() -> None:
    lean = _lean_connection_class()()
    plain = redis.asyncio.Connection()
    refused_values: tuple[Any, ...] = (None, True, object())
    for value in refused_values:
        with pytest.raises(DataError) as refused:
            plain.pack_command("SET", "k", value)
        with pytest.raises(DataError) as lean_refused:
            lean.pack_command("SET", "k", value)
        assert str(lean_refused.value) == str(refused.value)


def test_redis_py_packs_without_hiredis_or_for_another_encoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lean_class = _lean_connection_class()
    assert lean_class()._hiredis_pack is not None  # the default: hiredis, UTF-8
    latin = lean_class(encoding="latin-1")
    assert latin._hiredis_pack is None
    assert b"".join(latin.pack_command("SET", "k", "é")).endswith(b"$1\r\n\xe9\r\n")
    monkeypatch.setattr(sessionhub.connect, "_HIREDIS_PACK", None)
    assert lean_class()._hiredis_pack is None
    args = ("EVALSHA", "f" * 40, 1, "k", 2.5, b"v")
    assert lean_class().pack_command(*args) == redis.asyncio.Connection().pack_command(*args)


async def _round_trips(client: Any) -> None:
    """Arguments of every type, names of two words, a script call, a pipeline."""
    tag = f"{{lean-{uuid.uuid4().hex}}}"  # one Cluster slot for all the keys
    values: list[Any] = ["é and spaces", b"\x00\xff\r\n", 2**70, -7, 0.1, 1e20, ""]
    keys = [f"{tag}:{number}" for number in range(len(values))]
    for key, value in zip(keys, values, strict=True):
        assert await client.set(key, value)
    stored = [await client.get(key) for key in keys]
    expected = [b"\xc3\xa9 and spaces", b"\x00\xff\r\n", b"%d" % 2**70, b"-7", b"0.1", b"1e+20"]
    assert stored == [*expected, b""]
    assert await client.execute_command("OBJECT ENCODING", keys[3]) == b"int"
    assert await client.execute_command("CONFIG GET", "maxmemory") == {"maxmemory": "0"}
    sha = await client.script_load("return ARGV")
    arguments = ["a", b"b", 3, 4.5, *range(8)]
    assert await client.evalsha(sha, 1, keys[0], *arguments) == [
        str(argument).encode() if not isinstance(argument, bytes) else argument
        for argument in arguments
    ]
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(keys[0])
        pipe.incr(keys[3])
        pipe.delete(*keys)
        assert await pipe.execute() == [expected[0], -6, len(keys)]


async def _connections(client: Any) -> list[Any]:
    """A connection to each server `client` talks to, as its pool or its nodes give them."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        connections = []
        for node in client.get_nodes():
            connections.append(node.acquire_connection())
            node.release(connections[-1])
        return connections
    connection = await client.connection_pool.get_connection()
    await client.connection_pool.release(connection)
    return [connection]


@pytest.fixture(scope="module")
def unix_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.extra = ("--unixsocket", str(server.dir / "redis.sock"), "--unixsocketperm", "700")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[RedisSentinelSet]:
    servers = RedisSentinelSet(replicas=0).start()
    yield servers
    servers.cleanup()


def _settings_of(kind: str, request: pytest.FixtureRequest) -> RedisSettings:
    if kind == "tcp":
        return RedisSettings(port=request.getfixturevalue("redis_server").port)
    if kind == "unix":
        server: RedisServer = request.getfixturevalue("unix_server")
        return RedisSettings(url=f"unix://{server.dir / 'redis.sock'}")
    if kind == "tls":
        tls: TlsRedisServer = request.getfixturevalue("tls_server")
        return RedisSettings(port=tls.port, tls=True, tls_ca_file=str(tls.ca_file))
    if kind == "sentinel":
        servers: RedisSentinelSet = request.getfixturevalue("sentinel_set")
        where = ",".join(f"{host}:{port}" for host, port in servers.sentinel_addresses)
        return RedisSettings(url=f"redis+sentinel://{where}/{servers.service}")
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    return RedisSettings(url=f"redis+cluster://127.0.0.1:{cluster.ports[0]}")  # others found


@pytest.mark.parametrize("kind", ["tcp", "unix", "tls", "sentinel", "cluster"])
async def test_every_kind_of_deployment_is_served_by_lean_connections(
    kind: str, request: pytest.FixtureRequest
) -> None:
    client = async_redis_client(_settings_of(kind, request))
    await _round_trips(client)
    connections = await _connections(client)
    assert len(connections) == (3 if kind == "cluster" else 1)
    assert all(isinstance(connection, LeanAsyncConnection) for connection in connections)
    await client.aclose()


async def _tasks_started(call: Coroutine[Any, Any, Any]) -> int:
    loop = asyncio.get_running_loop()
    started = 0

    def counting_factory(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> Any:
        nonlocal started
        started += 1
        return asyncio.Task(coro, loop=loop, **options)

    loop.set_task_factory(counting_factory)
    try:
        await call
    finally:
        loop.set_task_factory(None)
    return started


async def test_a_small_command_is_written_without_a_task_of_its_own(
    redis_server: RedisServer,
) -> None:
    """redis-py writes each command in a Task of its own under a socket timeout (< 3.12)."""
    client = async_redis_client(RedisSettings(port=redis_server.port))
    await client.ping()  # connected

    async def commands() -> None:
        for _ in range(50):
            await client.get("lean:absent")

    assert await _tasks_started(commands()) == 0
    await client.aclose()


async def test_a_command_larger_than_the_socket_buffers_goes_through(
    redis_server: RedisServer,
) -> None:
    """Too large to write at once: redis-py's own send, which waits for the socket."""
    settings = RedisSettings(
        port=redis_server.port, timeout=10, connect_timeout=1, socket_timeout=5
    )
    client = async_redis_client(settings)
    key = f"lean:large:{uuid.uuid4().hex}"
    value = os.urandom(20 * 2**20)
    assert await client.set(key, value)
    assert await client.get(key) == value
    async with client.pipeline(transaction=False) as pipe:
        for number in range(100):
            pipe.set(f"{key}:{number}", value[: 2**20])
        pipe.delete(key, *(f"{key}:{number}" for number in range(100)))
        assert (await pipe.execute())[-1] == 101
    await client.aclose()


@pytest.fixture
def stoppable() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@contextmanager
def _stopped(server: RedisServer) -> Iterator[None]:
    """The server's process stopped: connections stay open, nothing is read or answered."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def test_a_stopped_redis_fails_commands_within_the_bound(stoppable: RedisServer) -> None:
    settings = RedisSettings(port=stoppable.port)
    client = async_redis_client(settings)
    manager = AsyncSessionManager(AsyncRedisStore(client))
    session = await manager.load(None)
    session["n"] = 1
    session_id = (await manager.commit(session)).id
    assert session_id is not None
    writer = async_redis_client(settings)
    await writer.ping()  # connected too: its next command goes out on this connection
    with _stopped(stoppable):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timed out") as caught:
            await manager.load(session_id)
        assert time.monotonic() - started < settings.timeout + SLACK
        assert "Timeout reading" in str(caught.value.__cause__)  # written at once, no reply
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError, match="Timeout writing"):
            await writer.set("lean:large", b"x" * 20 * 2**20)  # redis-py's send, its bound
        assert time.monotonic() - started < settings.timeout + SLACK
    assert (await manager.load(session_id))["n"] == 1  # the same client carries on
    assert await writer.ping()
    await client.aclose()
    await writer.aclose()


async def test_a_direct_write_that_cannot_go_out_is_bounded_by_the_read(
    stoppable: RedisServer,
) -> None:
    """A small command is written without waiting for the socket: the reply's timeout covers it."""
    settings = RedisSettings(port=stoppable.port)
    client = _standalone(settings)
    pool: Any = client.connection_pool
    connection = await pool.get_connection()
    transport = connection._writer.transport  # the buffer the direct write checks
    command = connection.pack_command("SET", "lean:k", b"x" * 60_000)
    with _stopped(stoppable):
        for _ in range(1000):  # each goes out whole, until the kernel's buffers are full
            if transport.get_write_buffer_size():
                break
            await connection.send_packed_command(command)
        else:
            pytest.fail("60 MB went out to a stopped server")
        # The last command is written but cannot go out, and never will while stopped.
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError, match="Timeout reading"):
            await connection.read_response()
        assert time.monotonic() - started < settings.socket_timeout + SLACK
        assert not connection.is_connected  # dropped, as after any timeout
    await pool.release(connection)
    assert await client.ping()
    await client.aclose()


async def test_a_connection_closed_by_the_server_is_replaced(redis_server: RedisServer) -> None:
    client = async_redis_client(RedisSettings(port=redis_server.port))
    key = f"lean:{uuid.uuid4().hex}"
    await client.set(key, b"v")
    with redis_server.client() as admin:
        opened = admin.info("stats")["total_connections_received"]
        assert admin.client_kill_filter(_id=await client.client_id()) == 1
        assert await client.get(key) == b"v"
        assert admin.info("stats")["total_connections_received"] == opened + 1
        admin.delete(key)
    await client.aclose()


async def test_a_wrapped_redis_py_send_sees_every_command(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracer (or a test counting round trips) that wraps redis-py's send is used."""
    sent: list[Any] = []
    original = redis.asyncio.connection.AbstractConnection.send_packed_command

    async def recorded(connection: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        await original(connection, command, check_health)

    client = async_redis_client(RedisSettings(port=redis_server.port))
    await client.ping()
    monkeypatch.setattr(
        redis.asyncio.connection.AbstractConnection, "send_packed_command", recorded
    )
    await client.get("lean:absent")
    await client.exists("lean:absent")
    assert len(sent) == 2
    await client.aclose()

"""Connection settings: URLs and fields, bad input, the time bound, TLS."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from pydantic import SecretStr, ValidationError
from redis.backoff import NoBackoff

from sessionhub import AsyncRedisStore, AsyncSessionManager, RedisStore, SessionManager
from sessionhub.connect import (
    AsyncBoundedRetry,
    BoundedRetry,
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
from tests.servers import RedisServer, TlsRedisServer, free_port

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
        ("http://:hunter2@h", "unsupported Redis URL scheme"),
        ("redis://:hunter2@h?socket_timeout=9", "unknown option"),
        ("redis://:hunter2@a:1,b:2", "one server"),
        ("redis://:hunter2@h/zero", "must be a number"),
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

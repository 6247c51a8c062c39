from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import hypothesis
import pytest
import redis
import redis.asyncio

from tests.id_watch import IdWatch
from tests.servers import RedisCluster, RedisServer

# Property tests run against real servers on a shared machine: no per-example
# deadline. Under CI=true the examples are derandomized (the same every run);
# each test bounds its own number of examples (tests/test_fuzz.py).
hypothesis.settings.register_profile("dev", deadline=None)
hypothesis.settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
hypothesis.settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")


@pytest.fixture(scope="session", autouse=True)
def no_session_id_is_logged() -> Iterator[IdWatch]:
    """No log record of the whole run, at DEBUG and up, holds a session id issued in it."""
    with IdWatch().installed() as watch:
        yield watch
    assert not watch.leaks, f"session ids in {len(watch.leaks)} log record(s): {watch.leaks[:5]}"


class CountingConnection(redis.Connection):
    """Counts what is sent: one packed send is one round trip."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class AsyncCountingConnection(redis.asyncio.Connection):
    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        AsyncCountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


def counting_client(port: int) -> redis.Redis:
    pool = redis.ConnectionPool(port=port, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool)


def async_counting_client(port: int) -> redis.asyncio.Redis:
    pool = redis.asyncio.ConnectionPool(port=port, connection_class=AsyncCountingConnection)
    return redis.asyncio.Redis(connection_pool=pool)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = counting_client(redis_server.port)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
async def async_redis_client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = async_counting_client(redis_server.port)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-primary Cluster shared by the tests that flush it themselves."""
    cluster = RedisCluster(primaries=3).start()
    yield cluster
    cluster.cleanup()

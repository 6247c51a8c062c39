"""Client-side caching of reads: two stores on one Redis stand for two instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.cluster

from sessionhub import AsyncRedisStore, AsyncSessionManager, RedisStore, SessionManager
from sessionhub.config import Settings
from sessionhub.session import Session
from sessionhub.stores.redis.cache import RETRY_SECONDS
from tests.conftest import (
    AsyncCountingConnection,
    CountingConnection,
    async_counting_client,
    counting_client,
)
from tests.servers import RedisCluster, RedisSentinelSet, RedisServer

#: A correctness bound, not a benchmark: an invalidation takes microseconds here.
BOUND = 1.0


def _sent() -> int:
    return CountingConnection.sent


def _killed_invalidations(client: redis.Redis) -> None:
    """CLIENT KILL the subscribed (invalidation) connections."""
    assert client.client_kill_filter(_type="pubsub") >= 1


def _within(seconds: float, done: Callable[[], bool]) -> float:
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < seconds, "not seen in time"
        time.sleep(0.001)
    return time.monotonic() - start


@pytest.fixture
def two(redis_client: redis.Redis) -> Iterator[tuple[SessionManager, SessionManager, RedisStore]]:
    """Instance A (no cache) and instance B (caching) on one Redis."""
    port = redis_client.get_connection_kwargs()["port"]
    cached = RedisStore(counting_client(port), cache=True)
    cached.client.ping()  # its connection's handshake is not a read's round trip
    assert cached.invalidations is not None
    assert cached.invalidations.cache.listening
    yield SessionManager(RedisStore(redis_client)), SessionManager(cached), cached
    cached.close()


def _new_session(manager: SessionManager, **values: Any) -> str:
    session = manager.load(None)
    session.update(values)
    session_id = manager.commit(session).id
    assert session_id is not None
    return session_id


def test_a_repeat_read_costs_no_round_trip(two: Any) -> None:
    a, b, _ = two
    session_id = _new_session(a, user="ann")
    before = _sent()
    assert b.load(session_id)["user"] == "ann"
    assert _sent() - before == 1  # the first read: a GET
    before = _sent()
    for _ in range(5):
        assert b.load(session_id)["user"] == "ann"
    assert _sent() - before == 0


def test_another_instances_write_is_seen(two: Any) -> None:
    a, b, _ = two
    session_id = _new_session(a, n=1)
    b.load(session_id)
    session = a.load(session_id)
    session["n"] = 2
    a.commit(session)
    assert _within(BOUND, lambda: b.load(session_id)["n"] == 2) < BOUND
    before = _sent()
    assert b.load(session_id)["n"] == 2  # cached again, fresh
    assert _sent() - before == 0


def test_a_read_after_an_invalidation_is_one_fresh_round_trip(two: Any) -> None:
    a, b, store = two
    session_id = _new_session(a, n=1)
    b.load(session_id)
    session = a.load(session_id)
    session["n"] = 2
    a.commit(session)
    invalidations = store.invalidations
    _within(BOUND, lambda: invalidations.drain() or len(invalidations.cache) == 0)
    before = _sent()
    assert b.load(session_id)["n"] == 2
    assert _sent() - before == 1


def test_a_logout_elsewhere_ends_the_cached_session(two: Any) -> None:
    a, b, _ = two
    session_id = _new_session(a, user="ann")
    assert b.load(session_id)["user"] == "ann"
    session = a.load(session_id)
    session.invalidate()
    a.commit(session)
    assert _within(BOUND, lambda: b.load(session_id).id is None) < BOUND


def test_own_writes_are_seen_at_once(two: Any) -> None:
    _, b, store = two
    session_id = _new_session(b, n=1)
    for n in range(2, 6):
        session = b.load(session_id)
        session["n"] = n
        b.commit(session)
        assert b.load(session_id)["n"] == n  # no wait for the invalidation
    session = b.load(session_id)
    session.invalidate()
    b.commit(session)
    assert b.load(session_id).id is None
    assert len(store.invalidations.cache) == 0


def test_a_stale_cached_read_cannot_write_or_revive(two: Any, redis_client: redis.Redis) -> None:
    """Logout and rotation work on Redis's copy: a stale read changes nothing."""
    a, b, store = two
    cache = store.invalidations.cache
    session_id = _new_session(a, user="ann")
    session = b.load(session_id)
    key = store.commands.key(session.handle)
    blob = redis_client.get(key)
    ended = a.load(session_id)
    ended.invalidate()
    a.commit(ended)
    assert redis_client.get(key) is None

    def stale() -> Session:
        # As if the logout's invalidation had not arrived yet.
        store.invalidations.drain()
        cache.put(key, blob, cache.epoch)
        served: Session = b.load(session_id)
        assert served["user"] == "ann"
        return served

    written = stale()
    written["cart"] = 1
    assert b.commit(written).id is None  # gone: nothing stored
    rotated = stale()
    b.login(rotated, "ann")
    assert b.commit(rotated).id is None
    assert redis_client.keys("sh:s:*") == []


def test_a_killed_invalidation_connection_drops_the_cache(
    two: Any, redis_client: redis.Redis
) -> None:
    a, b, store = two
    session_id = _new_session(a, n=1)
    b.load(session_id)
    assert len(store.invalidations.cache) == 1
    _killed_invalidations(redis_client)
    time.sleep(0.05)  # the FIN reaches B's socket
    before = _sent()
    assert b.load(session_id)["n"] == 1
    assert _sent() - before == 1  # dropped: asked Redis
    cache = store.invalidations.cache
    assert not cache.listening
    assert len(cache) == 0
    before = _sent()
    b.load(session_id)
    assert _sent() - before == 1  # nothing cached while deaf
    time.sleep(RETRY_SECONDS)
    b.load(session_id)  # reopens the connection, then reads
    assert cache.listening
    b.load(session_id)
    before = _sent()
    b.load(session_id)
    assert _sent() - before == 0


def test_a_redis_restart_drops_the_cache() -> None:
    server = RedisServer().start()
    try:
        a = SessionManager(RedisStore(counting_client(server.port)))
        store = RedisStore(counting_client(server.port), cache=True)
        b = SessionManager(store)
        session_id = _new_session(a, n=1)
        b.load(session_id)
        server.restart()  # nothing saved: every session is gone
        time.sleep(0.05)
        assert b.load(session_id).id is None
        assert not store.invalidations.cache.listening  # type: ignore[union-attr]
        store.close()
    finally:
        server.cleanup()


def test_the_cache_keeps_at_most_its_size(redis_client: redis.Redis) -> None:
    port = redis_client.get_connection_kwargs()["port"]
    store = RedisStore(counting_client(port), cache=True, cache_size=3)
    store.client.ping()
    manager = SessionManager(store)
    ids = [_new_session(manager, n=n) for n in range(5)]
    for session_id in ids:
        manager.load(session_id)
    assert len(store.invalidations.cache) == 3  # type: ignore[union-attr]
    before = _sent()
    manager.load(ids[-1])
    assert _sent() - before == 0
    manager.load(ids[0])  # pushed out
    assert _sent() - before == 1
    store.close()


def test_cluster_is_refused(redis_cluster: RedisCluster) -> None:
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    with pytest.raises(ValueError, match="not Cluster"):
        RedisStore(client, cache=True)
    client.close()


def test_settings_turn_it_on(redis_server: RedisServer) -> None:
    settings = Settings.load(
        store="redis", redis={"url": redis_server.url}, client_cache={"enabled": True, "size": 5}
    )
    store = settings.session_manager().store
    assert isinstance(store, RedisStore)
    assert store.invalidations is not None
    assert store.invalidations.cache.size == 5
    store.close()
    plain = Settings.load(store="redis", redis={"url": redis_server.url}).session_manager().store
    assert isinstance(plain, RedisStore)
    assert plain.invalidations is None


# -- asyncio --------------------------------------------------------------------------


async def _async_new_session(manager: AsyncSessionManager, **values: Any) -> str:
    session = await manager.load(None)
    session.update(values)
    session_id = (await manager.commit(session)).id
    assert session_id is not None
    return session_id


async def _async_within(seconds: float, done: Callable[[], Any]) -> float:
    start = time.monotonic()
    while not await done():
        assert time.monotonic() - start < seconds, "not seen in time"
        await asyncio.sleep(0.001)
    return time.monotonic() - start


async def test_async_two_instances(redis_server: RedisServer) -> None:
    port = redis_server.port
    a = AsyncSessionManager(AsyncRedisStore(async_counting_client(port)))
    store = AsyncRedisStore(async_counting_client(port), cache=True)
    b = AsyncSessionManager(store)
    assert await store.start_cache()
    await store.client.ping()
    session_id = await _async_new_session(a, n=1)

    before = AsyncCountingConnection.sent
    assert (await b.load(session_id))["n"] == 1
    assert AsyncCountingConnection.sent - before == 1
    before = AsyncCountingConnection.sent
    for _ in range(5):
        assert (await b.load(session_id))["n"] == 1
    assert AsyncCountingConnection.sent - before == 0

    session = await a.load(session_id)
    session["n"] = 2
    await a.commit(session)

    async def changed() -> bool:
        return bool((await b.load(session_id))["n"] == 2)

    assert await _async_within(BOUND, changed) < BOUND

    own = await b.load(session_id)
    own["n"] = 3
    await b.commit(own)
    assert (await b.load(session_id))["n"] == 3  # at once

    session = await a.load(session_id)
    session.invalidate()
    await a.commit(session)

    async def ended() -> bool:
        return (await b.load(session_id)).id is None

    assert await _async_within(BOUND, ended) < BOUND
    await store.aclose()


async def test_async_killed_invalidation_connection(redis_server: RedisServer) -> None:
    port = redis_server.port
    a = AsyncSessionManager(AsyncRedisStore(async_counting_client(port)))
    store = AsyncRedisStore(async_counting_client(port), cache=True)
    b = AsyncSessionManager(store)
    assert await store.start_cache()
    session_id = await _async_new_session(a, n=1)
    await b.load(session_id)
    assert store.invalidations is not None
    cache = store.invalidations.cache
    assert len(cache) == 1
    with redis_server.client() as admin:
        _killed_invalidations(admin)
    await asyncio.sleep(0.05)  # the listener hears the connection close
    assert not cache.listening
    assert len(cache) == 0
    before = AsyncCountingConnection.sent
    await b.load(session_id)
    await b.load(session_id)
    assert AsyncCountingConnection.sent - before == 2  # nothing cached while deaf
    await asyncio.sleep(RETRY_SECONDS)
    await b.load(session_id)  # starts the listener again
    assert await store.start_cache()
    await b.load(session_id)
    before = AsyncCountingConnection.sent
    await b.load(session_id)
    assert AsyncCountingConnection.sent - before == 0
    await store.aclose()


def test_sentinel_caches_and_hears_invalidations() -> None:
    """The invalidation connection is made like the client's: through the sentinels."""
    servers = RedisSentinelSet(replicas=0).start()
    try:
        sentinels = ",".join(f"{host}:{port}" for host, port in servers.sentinel_addresses)
        settings = Settings.load(
            store="redis",
            redis={"url": f"redis+sentinel://{sentinels}/{servers.service}"},
            client_cache={"enabled": True},
        )
        a = SessionManager(RedisStore(servers.primary.client()))
        b = settings.session_manager()
        store = b.store
        assert isinstance(store, RedisStore)
        assert store.invalidations is not None
        assert store.invalidations.cache.listening
        session_id = _new_session(a, n=1)
        assert b.load(session_id)["n"] == 1
        assert len(store.invalidations.cache) == 1
        session = a.load(session_id)
        session["n"] = 2
        a.commit(session)
        assert _within(BOUND, lambda: b.load(session_id)["n"] == 2) < BOUND
        store.close()
    finally:
        servers.cleanup()

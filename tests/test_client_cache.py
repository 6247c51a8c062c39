"""Client-side caching of reads: two stores on one Redis stand for two instances."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis.cluster

from sessionhub import (
    AsyncRedisStore,
    AsyncSessionManager,
    RedisStore,
    SessionEnded,
    SessionManager,
    StoreUnavailable,
    connect,
)
from sessionhub.config import Settings
from sessionhub.session import Session
from sessionhub.stores.redis.cache import RETRY_SECONDS
from tests.conftest import (
    AsyncCountingConnection,
    CountingConnection,
    async_counting_client,
    counting_client,
)
from tests.proxy import Proxy
from tests.servers import RedisCluster, RedisSentinelSet, RedisServer

#: A correctness bound, not a benchmark: an invalidation takes microseconds here.
BOUND = 1.0

#: Long enough that no heartbeat PING falls among the commands a test counts.
QUIET = 60.0

#: Short, for the tests of the heartbeat itself: nothing is served 2 x this after
#: Redis was last heard from.
HEARTBEAT = 0.2

#: How long an instance whose Redis goes silent waits for it, retries included.
TIMEOUT = 0.4


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
    cached = RedisStore(counting_client(port), cache=True, cache_heartbeat=QUIET)
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


def _write(manager: SessionManager, session_id: str, **values: Any) -> None:
    session = manager.load(session_id)
    session.update(values)
    manager.commit(session)


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
    _write(a, session_id, n=2)
    assert _within(BOUND, lambda: b.load(session_id)["n"] == 2) < BOUND
    before = _sent()
    assert b.load(session_id)["n"] == 2  # cached again, fresh
    assert _sent() - before == 0


def test_a_read_after_an_invalidation_is_one_fresh_round_trip(two: Any) -> None:
    a, b, store = two
    session_id = _new_session(a, n=1)
    b.load(session_id)
    _write(a, session_id, n=2)
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
    with pytest.raises(SessionEnded):
        b.commit(written)  # gone: nothing stored
    rotated = stale()
    b.login(rotated, "ann")
    with pytest.raises(SessionEnded):
        b.commit(rotated)
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
        store = RedisStore(counting_client(server.port), cache=True, cache_heartbeat=QUIET)
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
    store = RedisStore(counting_client(port), cache=True, cache_size=3, cache_heartbeat=QUIET)
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
        store="redis",
        redis={"url": redis_server.url},
        client_cache={"enabled": True, "size": 5, "heartbeat": 0.5},
    )
    store = settings.session_manager().store
    assert isinstance(store, RedisStore)
    assert store.invalidations is not None
    assert store.invalidations.cache.size == 5
    assert store.invalidations.cache.heartbeat == 0.5
    store.close()
    plain = Settings.load(store="redis", redis={"url": redis_server.url}).session_manager().store
    assert isinstance(plain, RedisStore)
    assert plain.invalidations is None


# -- the heartbeat: a connection that stays open but delivers nothing ----------------


def _gets(server: RedisServer) -> int:
    """How many GETs the server has run (PINGs and the like not counted)."""
    with server.client() as admin:
        stats: dict[str, Any] = admin.info("commandstats").get("cmdstat_get", {})
        return int(stats.get("calls", 0))


def _timed(port: int) -> connect.RedisSettings:
    return connect.RedisSettings(
        port=port, timeout=TIMEOUT, connect_timeout=0.1, socket_timeout=0.2
    )


def _timed_client(port: int) -> redis.Redis:
    client = connect.redis_client(_timed(port))
    assert isinstance(client, redis.Redis)
    return client


def _until_cached(read: Callable[[], Session], server: RedisServer) -> None:
    """Read until a read is answered from memory (the session's own creation may be
    invalidated after the first read cached it)."""

    def cached() -> bool:
        before = _gets(server)
        read()
        return _gets(server) == before

    _within(BOUND, cached)


@contextmanager
def _stopped(server: RedisServer) -> Iterator[float]:
    """The server's process stopped: connections stay open, nothing is read or answered."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def _last_served(read: Callable[[], Session], since: float) -> float:
    """Read until refused; when the last read answered from memory began, after `since`.

    Redis is unreachable, so a read that answers answered from memory.
    """
    last = since
    refused = 0
    deadline = time.monotonic() + 4 * HEARTBEAT + 10 * TIMEOUT
    while refused < 3:  # and never served again once refused
        assert time.monotonic() < deadline, "still served from memory"
        began = time.monotonic()
        try:
            session = read()
        except StoreUnavailable:
            refused += 1
            continue
        assert refused == 0, "served from memory again"
        assert session["user"] == "ann"
        last = began
        time.sleep(0.01)
    return last - since


def test_a_silent_partition_stops_the_cache_within_the_bound(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """B's link to Redis stops delivering (no reset) while A logs the user out."""
    proxy = Proxy(redis_server.port).start()
    a = SessionManager(RedisStore(redis_client))
    store = RedisStore(_timed_client(proxy.port), cache=True, cache_heartbeat=HEARTBEAT)
    b = SessionManager(store)
    assert store.invalidations is not None
    cache = store.invalidations.cache
    try:
        session_id = _new_session(a, user="ann")
        _until_cached(lambda: b.load(session_id), redis_server)
        proxy.stall()
        stalled = time.monotonic()
        ended = a.load(session_id)
        ended.invalidate()
        a.commit(ended)  # B's invalidation is held in the partition
        assert _last_served(lambda: b.load(session_id), stalled) < 2 * HEARTBEAT
        assert not cache.listening
        assert len(cache) == 0
        proxy.resume()
        _within(BOUND + TIMEOUT, lambda: b.load(session_id).id is None)
        # Caching resumes on a new invalidation connection.
        _within(2 * RETRY_SECONDS, lambda: b.load(session_id).id is None and cache.listening)
        session_id = _new_session(a, user="bob")
        _until_cached(lambda: b.load(session_id), redis_server)
    finally:
        store.close()
        proxy.close()


def test_a_stopped_redis_stops_the_cache_within_the_bound() -> None:
    server = RedisServer().start()
    store = RedisStore(_timed_client(server.port), cache=True, cache_heartbeat=HEARTBEAT)
    try:
        a = SessionManager(RedisStore(server.client()))
        b = SessionManager(store)
        session_id = _new_session(a, user="ann")
        _until_cached(lambda: b.load(session_id), server)
        with _stopped(server) as stopped:
            assert _last_served(lambda: b.load(session_id), stopped) < 2 * HEARTBEAT
        cache = store.invalidations.cache  # type: ignore[union-attr]
        _within(2 * RETRY_SECONDS, lambda: b.load(session_id)["user"] == "ann" and cache.listening)
        _until_cached(lambda: b.load(session_id), server)  # cached again
    finally:
        store.close()
        server.cleanup()


def test_heartbeats_keep_a_healthy_cache_serving(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Reads spread over many heartbeats are all answered from memory (the PONGs come)."""
    store = RedisStore(_timed_client(redis_server.port), cache=True, cache_heartbeat=HEARTBEAT)
    b = SessionManager(store)
    session_id = _new_session(SessionManager(RedisStore(redis_client)), user="ann")
    _until_cached(lambda: b.load(session_id), redis_server)
    before = _gets(redis_server)
    started = time.monotonic()
    while time.monotonic() - started < 5 * HEARTBEAT:
        assert b.load(session_id)["user"] == "ann"
        time.sleep(HEARTBEAT / 4)
    assert _gets(redis_server) == before
    assert store.invalidations is not None
    assert store.invalidations.cache.heard_at > started  # PONGs to PINGs sent since
    store.close()


def test_a_reconnect_does_not_hold_up_other_threads(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """While one thread waits on the handshake, the others' reads go to Redis meanwhile."""
    proxy = Proxy(redis_server.port).start()
    proxy.stall()
    store = RedisStore(_timed_client(redis_server.port), cache=True, cache_heartbeat=HEARTBEAT)
    invalidations = store.invalidations
    assert invalidations is not None
    invalidations.close()
    # The invalidation connection alone goes through the stalled proxy.
    invalidations._pool = _timed_client(proxy.port).connection_pool
    invalidations._retry_at = 0.0
    opening = threading.Thread(target=invalidations.drain)
    opening.start()
    b = SessionManager(store)
    session_id = _new_session(SessionManager(RedisStore(redis_client)), user="ann")
    try:
        time.sleep(TIMEOUT / 4)
        assert opening.is_alive()  # in the handshake, which gets no answer
        started = time.monotonic()
        assert b.load(session_id)["user"] == "ann"  # from Redis, not waiting for it
        assert opening.is_alive()
        assert time.monotonic() - started < TIMEOUT / 2
    finally:
        opening.join()
        store.close()
        proxy.close()
    assert not invalidations.cache.listening


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
    store = AsyncRedisStore(async_counting_client(port), cache=True, cache_heartbeat=QUIET)
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
    store = AsyncRedisStore(async_counting_client(port), cache=True, cache_heartbeat=QUIET)
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


def _async_timed_client(port: int) -> redis.asyncio.Redis:
    client = connect.async_redis_client(_timed(port))
    assert isinstance(client, redis.asyncio.Redis)
    return client


async def _async_until_cached(read: Callable[[], Any], server: RedisServer) -> None:
    async def cached() -> bool:
        before = _gets(server)
        await read()
        return _gets(server) == before

    await _async_within(BOUND, cached)


async def _async_last_served(read: Callable[[], Any], since: float) -> float:
    last = since
    refused = 0
    deadline = time.monotonic() + 4 * HEARTBEAT + 10 * TIMEOUT
    while refused < 3:
        assert time.monotonic() < deadline, "still served from memory"
        began = time.monotonic()
        try:
            session = await read()
        except StoreUnavailable:
            refused += 1
            continue
        assert refused == 0, "served from memory again"
        assert session["user"] == "ann"
        last = began
        await asyncio.sleep(0.01)
    return last - since


async def test_async_a_stopped_redis_stops_the_cache_within_the_bound() -> None:
    server = RedisServer().start()
    store = AsyncRedisStore(_async_timed_client(server.port), cache=True, cache_heartbeat=HEARTBEAT)
    try:
        a = AsyncSessionManager(AsyncRedisStore(_async_timed_client(server.port)))
        b = AsyncSessionManager(store)
        assert await store.start_cache()
        session_id = await _async_new_session(a, user="ann")
        await _async_until_cached(lambda: b.load(session_id), server)
        await asyncio.sleep(3 * HEARTBEAT)  # idle: the listener's PINGs keep it fresh
        before = _gets(server)
        assert (await b.load(session_id))["user"] == "ann"
        assert _gets(server) == before
        with _stopped(server) as stopped:
            served = await _async_last_served(lambda: b.load(session_id), stopped)
            assert served < 2 * HEARTBEAT
        assert store.invalidations is not None
        cache = store.invalidations.cache
        assert not cache.listening

        async def cached_again() -> bool:
            return bool((await b.load(session_id))["user"] == "ann" and cache.listening)

        await _async_within(2 * RETRY_SECONDS + BOUND, cached_again)
        await _async_until_cached(lambda: b.load(session_id), server)
    finally:
        await store.aclose()
        server.cleanup()


def test_async_listener_left_by_a_closed_loop(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop closed without cancelling the listener: the next loop starts its own, quietly."""
    store = AsyncRedisStore(async_counting_client(redis_server.port), cache=True)
    b = AsyncSessionManager(store)
    first = asyncio.new_event_loop()
    assert first.run_until_complete(store.start_cache())
    first.close()  # the listener task is left pending

    async def second() -> None:
        a = AsyncSessionManager(AsyncRedisStore(async_counting_client(redis_server.port)))
        session_id = await _async_new_session(a, n=1)
        assert store.invalidations is not None
        assert store.invalidations.cache.listening  # as the old loop left it
        before = _gets(redis_server)
        await b.load(session_id)  # not from the old listener's cache
        assert _gets(redis_server) - before == 1
        gc.collect()  # the old listener, if anything still held it
        assert await store.start_cache()
        await _async_until_cached(lambda: b.load(session_id), redis_server)
        await store.aclose()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(second())
        gc.collect()
    assert "Task was destroyed" not in caplog.text

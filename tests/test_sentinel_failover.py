"""A graceful Sentinel failover at library level: nothing acknowledged is undone (issue 18).

After ``SENTINEL FAILOVER`` the old primary stays a writable primary for about
ten seconds, then is made a replica and throws away every write it took since
the promotion. The reproduction of the issue: once every sentinel names the
new primary, a write and a logout through sessionhub are answered OK; once the
old primary is a replica, both must still be there. Sync and asyncio stores,
the asyncio one used from two event loops (one before the failover, one
after), as test clients do.

Two replicas: with one, the new primary has no replica until the old one is
made its replica, and a logout (a durable end) is refused meanwhile
(tests/test_durable_ends.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sessionhub import (
    AsyncRedisStore,
    AsyncSessionManager,
    RedisStore,
    SessionManager,
    StoreUnavailable,
)
from sessionhub.connect import RedisSettings, async_redis_client, redis_client
from sessionhub.stores.redis.failover import acheck_primary, check_primary
from tests.servers import RedisSentinelSet
from tests.waiting import eventually


@pytest.fixture
def sentinel_set() -> Iterator[RedisSentinelSet]:
    servers = RedisSentinelSet(replicas=2).start()
    yield servers
    servers.cleanup()


def _sync_manager(settings: RedisSettings) -> SessionManager:
    return SessionManager(RedisStore(redis_client(settings), **settings.store_options()))


def _async_manager(settings: RedisSettings) -> AsyncSessionManager:
    store = AsyncRedisStore(async_redis_client(settings), **settings.store_options())
    return AsyncSessionManager(store)


async def _release(manager: AsyncSessionManager) -> None:
    """Close the client's connections, the sentinels' too: redis-py's asyncio
    connections belong to the event loop that opened them."""
    client = manager.store.client  # type: ignore[attr-defined]
    await client.aclose()
    for sentinel in client.connection_pool.sentinel_manager.sentinels:
        await sentinel.aclose()


def test_after_the_switch_a_write_and_a_logout_stay(sentinel_set: RedisSentinelSet) -> None:
    settings = RedisSettings(url=sentinel_set.url)
    manager = _sync_manager(settings)
    amanager = _async_manager(settings)

    def stored(**values: int) -> str:
        session = manager.load(None)
        session.update(values)
        return manager.commit(session).id or ""

    def logged_in(user: str) -> str:
        session = manager.load(None)
        manager.login(session, user)
        return manager.commit(session).id or ""

    cart, sync_user, async_user = stored(cart=1), logged_in("bob"), logged_in("carol")
    async_cart, cached_user = stored(cart=1), logged_in("dan")
    # Another instance that answers repeat reads from memory (client-side caching).
    caching = RedisStore(redis_client(settings), cache=True, **settings.store_options())
    cached = SessionManager(caching)
    assert cached.load(cached_user).principal == "dan"
    assert len(caching.invalidations.cache) == 1  # type: ignore[union-attr]
    reading = threading.Event()
    reading.set()

    def read_on() -> None:  # reads keep the cache answering (a PING each second)
        while reading.is_set():
            cached.load(cached_user)
            time.sleep(0.02)

    reader = threading.Thread(target=read_on, daemon=True)
    reader.start()

    async def first_loop() -> None:  # the asyncio client's connections are pooled by now
        session = await amanager.load(async_cart)
        session["cart"] = 2
        await amanager.commit(session)
        await _release(amanager)  # as a test client's shutdown does (redis-py's rule)

    asyncio.run(first_loop())

    old = sentinel_set.primary
    sentinel_set.failover()
    # A write sent as the failover starts waits for it to end, then lands.
    session = manager.load(cart)
    session["during"] = "the failover"
    started = time.monotonic()
    manager.commit(session)
    held = time.monotonic() - started

    new = eventually(
        lambda: (port := sentinel_set.agreed_primary()) != old.port and port,
        15,
        "every sentinel to name the new primary",
    )
    # The reproduction: a write and a logout, both answered OK...
    session = manager.load(cart)
    session["after"] = "the switch"
    manager.commit(session)
    session = manager.load(sync_user)
    session.invalidate()
    manager.commit(session)

    async def second_loop() -> None:  # another event loop, as a test client's
        session = await amanager.load(async_cart)
        session["after"] = "the switch"
        await amanager.commit(session)
        session = await amanager.load(async_user)
        session.invalidate()
        await amanager.commit(session)
        await _release(amanager)

    asyncio.run(second_loop())

    # The caching instance, reading all along, hears the switch; another instance logs
    # its user out on the new primary: its cache, which listened to the old primary,
    # must not answer any more.
    assert caching.failover is not None
    heard = caching.failover.state
    eventually(
        lambda: not heard.holding(time.monotonic()) and heard.primary == ("127.0.0.1", new),
        5,
        "the caching instance to hear the switch",
    )
    session = manager.load(cached_user)
    session.invalidate()
    manager.commit(session)
    assert cached.load(cached_user).is_new, "a cached read served a logged-out session"
    reading.clear()
    reader.join(5)

    # ...and still there once the old primary has been made a replica and resynced.
    eventually(
        lambda: sentinel_set.is_replica_of(old, new),
        30,
        "the old primary to be made a replica of the new one",
    )
    final = SessionManager(RedisStore(sentinel_set.server(new).client()))
    kept = final.load(cart)
    assert (kept["during"], kept["after"]) == ("the failover", "the switch")
    kept = final.load(async_cart)
    assert (kept["cart"], kept["after"]) == (2, "the switch")
    for ended in (sync_user, async_user, cached_user):
        assert final.load(ended).is_new, "a logout was undone"
    caching.close()
    print(f"\ngraceful failover, two replicas: a write was held {held:.2f} s")


def test_a_store_on_a_client_it_did_not_build_is_protected_too(
    sentinel_set: RedisSentinelSet,
) -> None:
    """The watch finds the deployment from redis-py's own `Sentinel(...).master_for(...)`."""
    import redis.sentinel

    sentinels = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        sentinel_set.sentinel_addresses, socket_timeout=1
    )
    client = sentinels.master_for(sentinel_set.service, socket_timeout=1)  # type: ignore[no-untyped-call]
    store = RedisStore(client)
    assert store.durable_ends == 1
    manager = SessionManager(store)
    session = manager.load(None)
    session["n"] = 0
    session_id = manager.commit(session).id
    old = sentinel_set.primary
    sentinel_set.failover()
    new = eventually(
        lambda: (port := sentinel_set.agreed_primary()) != old.port and port,
        15,
        "every sentinel to name the new primary",
    )
    session = manager.load(session_id)
    session["n"] = 1
    manager.commit(session)
    eventually(lambda: sentinel_set.is_replica_of(old, new), 30, "the old primary to be demoted")
    assert SessionManager(RedisStore(sentinel_set.server(new).client())).load(session_id)["n"] == 1
    store.close()
    client.close()
    sentinels.close()


def test_a_new_connection_to_a_replica_is_refused_not_written_to(
    sentinel_set: RedisSentinelSet,
) -> None:
    """`check_primary`: a connection that reaches a replica fails as a connection error."""
    import redis

    replica = sentinel_set.replicas[0]
    client = redis.Redis(
        port=replica.port,
        redis_connect_func=check_primary,  # type: ignore[arg-type]
        socket_timeout=1,
    )
    with pytest.raises(redis.ConnectionError, match="answers as replica, not as the primary"):
        client.set("k", "v")
    primary = redis.Redis(
        port=sentinel_set.primary.port,
        redis_connect_func=check_primary,  # type: ignore[arg-type]
        socket_timeout=1,
    )
    assert primary.set("k", "v")
    # Through sessionhub.connect, a connection the sentinels send to a replica is refused
    # the same way, and redis-py asks the sentinels again within the retry budget.
    settings = RedisSettings(url=sentinel_set.url)
    sync: Any = redis_client(settings)
    assert sync.connection_pool.connection_kwargs["redis_connect_func"] is check_primary
    broken = SessionManager(RedisStore(redis.Redis(port=replica.port, socket_timeout=1)))
    session = broken.load(None)
    session["n"] = 1
    with pytest.raises(StoreUnavailable):
        broken.commit(session)  # READONLY: a 503, never a success
    client.close()
    primary.close()
    sync.close()


async def test_an_asyncio_connection_to_a_replica_is_refused(
    sentinel_set: RedisSentinelSet,
) -> None:
    import redis.asyncio

    replica = redis.asyncio.Redis(
        port=sentinel_set.replicas[0].port, redis_connect_func=acheck_primary, socket_timeout=1
    )
    with pytest.raises(redis.ConnectionError, match="answers as replica, not as the primary"):
        await replica.set("k", "v")
    primary = redis.asyncio.Redis(
        port=sentinel_set.primary.port, redis_connect_func=acheck_primary, socket_timeout=1
    )
    assert await primary.set("k", "v")
    client: Any = async_redis_client(RedisSettings(url=sentinel_set.url))
    assert client.connection_pool.connection_kwargs["redis_connect_func"] is acheck_primary
    assert await client.set("k", "w")  # through the sentinels, to the primary
    for each in (replica, primary, client):
        await each.aclose()

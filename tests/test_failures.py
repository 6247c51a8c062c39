"""Failure behaviour on one Redis: slow, silent, cut, stopped, restarted, restarted empty.

Every request either succeeds or fails with StoreUnavailable within the
configured bound; when Redis is back, the same clients carry on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from sessionhub import (
    AsyncRedisStore,
    AsyncSessionManager,
    RedisStore,
    Session,
    SessionManager,
    StoreUnavailable,
)
from sessionhub.config import Settings
from sessionhub.connect import RedisSettings, async_redis_client, redis_client
from sessionhub.ids import IdScheme
from tests.proxy import Proxy
from tests.servers import RedisServer
from tests.traffic import LOST, OK, UNAVAILABLE, Traffic, counter

SLACK = 0.75  # two shared cores: a generous margin on every time bound


@pytest.fixture
def server() -> Iterator[RedisServer]:
    # Append-only file, so that a stop and start keeps the data (but not the scripts).
    server = RedisServer("--appendonly", "yes")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def proxy(server: RedisServer) -> Iterator[Proxy]:
    proxy = Proxy(server.port).start()
    yield proxy
    proxy.close()


class Client:
    """A manager of one flavor, with sync methods either way."""

    def __init__(self, flavor: str, settings: RedisSettings) -> None:
        self.loop = asyncio.new_event_loop() if flavor == "async" else None
        self.manager: SessionManager | AsyncSessionManager
        if self.loop is None:
            self.manager = SessionManager(RedisStore(redis_client(settings)))
        else:
            self.manager = AsyncSessionManager(AsyncRedisStore(async_redis_client(settings)))

    def run(self, value: Any) -> Any:
        return value if self.loop is None else self.loop.run_until_complete(value)

    def load(self, session_id: str | None) -> Session:
        session: Session = self.run(self.manager.load(session_id))
        return session

    def commit(self, session: Session) -> str | None:
        return self.run(self.manager.commit(session)).id  # type: ignore[no-any-return]

    def store(self, **values: Any) -> str:
        session = self.load(None)
        session.update(values)
        session_id = self.commit(session)
        assert session_id is not None
        return session_id

    def close(self) -> None:
        if self.loop is not None:
            self.run(self.manager.store.client.aclose())  # type: ignore[union-attr]
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _timed_failure(call: Any, settings: RedisSettings, match: str) -> float:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=match):
        call()
    elapsed = time.monotonic() - started
    assert elapsed < settings.timeout + SLACK, f"took {elapsed:.2f}s"
    return elapsed


def test_slow_replies_time_out_within_the_bound_then_recover(flavor: str, proxy: Proxy) -> None:
    settings = RedisSettings(port=proxy.port)
    client = Client(flavor, settings)
    session_id = client.store(n=1)
    session = client.load(session_id)
    session["n"] = 2

    proxy.delay = settings.socket_timeout + 0.3
    _timed_failure(lambda: client.load(session_id), settings, "timed out")
    _timed_failure(lambda: client.commit(session), settings, "timed out")

    proxy.delay = 0
    # The timed-out commit reached Redis and may have run: either value, nothing else.
    again = client.load(session_id)
    assert again["n"] in (1, 2)
    again["n"] = 3
    assert client.commit(again) == session_id
    assert client.load(session_id)["n"] == 3
    client.close()


def test_a_silent_server_times_out_within_the_bound_then_recovers(
    flavor: str, proxy: Proxy
) -> None:
    settings = RedisSettings(port=proxy.port)
    client = Client(flavor, settings)
    session_id = client.store(n=1)
    proxy.stall()  # connections open, nothing comes back
    _timed_failure(lambda: client.load(session_id), settings, "timed out")
    _timed_failure(lambda: client.load(session_id), settings, "timed out")
    proxy.resume()
    assert client.load(session_id)["n"] == 1
    client.close()


def test_cut_connections_are_reopened_and_nothing_is_lost(proxy: Proxy) -> None:
    settings = RedisSettings(port=proxy.port)
    setup = Client("sync", settings)
    ids = [setup.store(n=0) for _ in range(20)]
    traffic = Traffic(pause=0.005)
    traffic.sync_worker(SessionManager(RedisStore(redis_client(settings))), ids[:10])
    traffic.async_worker(
        lambda: AsyncSessionManager(AsyncRedisStore(async_redis_client(settings))), ids[10:]
    )
    cuts = 0
    for _ in range(15):
        time.sleep(0.15)
        cuts += proxy.cut()
    time.sleep(0.3)
    traffic.stop()

    outcomes = traffic.outcomes()
    print(f"\ncut {cuts} connections in 15 cuts; requests: {outcomes}")
    assert set(outcomes) <= {OK, UNAVAILABLE}, outcomes
    assert cuts >= 15  # both workers were connected at each cut
    # A cut connection is reopened (and a command cut in flight retried) within the bound:
    # at most a rare request fails, and none takes longer than the bound.
    assert outcomes.get(UNAVAILABLE, 0) <= 3, outcomes
    assert max(r.slowest_call for r in traffic.requests) < settings.timeout + SLACK
    for session_id in ids:
        stored = counter(setup.load(session_id))
        assert traffic.counters.accepts(session_id, stored), (session_id, stored)
    setup.close()


def _start_traffic(settings: RedisSettings, ids: list[str]) -> Traffic:
    """Requests through a sync manager, an asyncio one and the ASGI middleware."""
    traffic = Traffic()
    third = len(ids) // 3
    traffic.sync_worker(SessionManager(RedisStore(redis_client(settings))), ids[:third])
    traffic.async_worker(
        lambda: AsyncSessionManager(AsyncRedisStore(async_redis_client(settings))),
        ids[third : 2 * third],
    )
    traffic.asgi_worker(Settings(store="redis", redis=settings), ids[2 * third :])
    return traffic


def _check_bounded(traffic: Traffic, settings: RedisSettings, *allowed: str) -> None:
    outcomes = traffic.outcomes()
    assert set(outcomes) <= set(allowed), outcomes  # never an error, never a hang
    slowest = max(r.slowest_call for r in traffic.requests)
    assert slowest < settings.timeout + SLACK, f"a store call took {slowest:.2f}s"


def test_stopped_under_load_then_restarted(server: RedisServer) -> None:
    settings = RedisSettings(port=server.port)
    setup = Client("sync", settings)
    ids = [setup.store(n=0, name=f"user-{i}") for i in range(30)]
    traffic = _start_traffic(settings, ids)
    assert traffic.wait_for(OK, 30, after=0, timeout=10)

    stopped = time.monotonic()
    server.stop()  # a clean shutdown: the append-only file keeps the data
    assert traffic.wait_for(UNAVAILABLE, 30, after=stopped, timeout=10)
    restarted = time.monotonic()
    server.start()  # same port, data reloaded, script cache empty
    assert traffic.wait_for(OK, 30, after=restarted, timeout=10)
    traffic.stop()

    down = [r for r in traffic.since(stopped) if r.started < restarted]
    print(
        f"\nstopped for {restarted - stopped:.2f}s: {traffic.outcomes(down)} "
        f"(slowest failure {max(r.duration for r in down if r.outcome != OK):.3f}s); "
        f"after restart: {traffic.outcomes(traffic.since(restarted))}"
    )
    _check_bounded(traffic, settings, OK, UNAVAILABLE)
    # Recovery without restarting the app: the same clients, the same sessions.
    for session_id in ids:
        session = setup.load(session_id)
        assert str(session["name"]).startswith("user-")
        assert traffic.counters.accepts(session_id, counter(session))
    setup.close()


def test_restarted_empty_gives_clean_new_sessions(server: RedisServer) -> None:
    settings = RedisSettings(port=server.port)
    setup = Client("sync", settings)
    ids = [setup.store(n=0) for _ in range(12)]
    traffic = _start_traffic(settings, ids)
    assert traffic.wait_for(OK, 12, after=0, timeout=10)

    server.kill()  # a crash: no save
    for leftover in server.dir.iterdir():  # and the disk is gone too
        if leftover.name != "redis.log":
            for path in [leftover, *leftover.rglob("*")] if leftover.is_dir() else [leftover]:
                if path.is_file():
                    path.unlink()
    restarted = time.monotonic()
    server.start()
    assert traffic.wait_for(LOST, 12, after=restarted, timeout=10)
    traffic.stop()
    _check_bounded(traffic, settings, OK, UNAVAILABLE, LOST)
    assert redis.Redis(port=server.port).dbsize() == 0  # the old ids were not adopted

    for flavor in ("sync", "async"):
        client = Client(flavor, settings)
        assert client.load(ids[0]).is_new  # old ids: new, empty sessions
        session_id = client.store(cart=["a"])  # scripts reloaded as needed
        session = client.load(session_id)
        session["cart"] = [*session.get("cart", []), "b"]  # type: ignore[misc]
        session.rotate()
        new_id = client.commit(session)
        assert new_id not in (None, session_id)
        assert client.load(new_id)["cart"] == ["a", "b"]
        assert client.load(session_id).is_new
        client.close()
    setup.close()


def test_degrade_mode_serves_unstored_sessions_while_redis_is_down(server: RedisServer) -> None:
    settings = RedisSettings(port=server.port)
    manager = SessionManager(RedisStore(redis_client(settings)), degrade_when_unavailable=True)
    stored = manager.load(None)
    stored["n"] = 1
    session_id = manager.commit(stored).id
    server.stop()
    started = time.monotonic()
    session = manager.load(session_id)
    assert session.is_new  # empty, not stored, and no exception
    session["n"] = 2
    assert manager.commit(session).id is None
    assert time.monotonic() - started < 2 * settings.timeout + SLACK
    server.start()
    assert manager.load(session_id)["n"] == 1  # the stored one was left alone
    assert IdScheme().parse(session_id) is not None


def test_a_full_redis_refuses_writes_with_store_unavailable(flavor: str) -> None:
    """noeviction and maxmemory reached: writes get a clear 503-style error, reads go on."""
    server = RedisServer("--maxmemory-policy", "noeviction").start()
    try:
        client = Client(flavor, RedisSettings(port=server.port))
        session_id = client.store(n=1)
        with server.client() as admin:
            admin.config_set("maxmemory", 1)  # 1 byte: full, whatever else uses memory
        session = client.load(session_id)  # reading still works
        session["n"] = 2
        with pytest.raises(StoreUnavailable, match="full"):
            client.commit(session)
        with pytest.raises(StoreUnavailable, match="full"):
            client.store(n=3)
        assert counter(client.load(session_id)) == 1
        client.close()
    finally:
        server.cleanup()

"""Durable ends: an end of a session is acknowledged only once a replica has it.

The rules first (no I/O), then a primary with one replica, standalone
(durable ends work the same without Sentinel when enabled). The replica is
stopped (SIGSTOP: connected, silent), so WAIT cannot be answered in time: a
logout, "log out everywhere" and a login that pushes an older session out are
then answered `StoreUnavailable` (503) with the reason, never acknowledged;
plain writes go on. And ``min-replicas-to-write`` refusals are a 503 too,
never a 500.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from redis import exceptions as redis_errors

from sessionhub import (
    AsyncRedisStore,
    AsyncSessionManager,
    RedisStore,
    SessionManager,
    StoreUnavailable,
)
from sessionhub.config import Settings
from sessionhub.connect import RedisSettings
from sessionhub.events import Reason
from sessionhub.stores.base import Create, Delete, EndSessions, Read, Rotate
from sessionhub.stores.redis.durable import (
    NotReplicated,
    durable_replicas,
    ends_sessions,
    refusal,
    replicated,
    wait_args,
)
from sessionhub.users import LimitPolicy, SessionLimit
from tests.servers import RedisServer
from tests.waiting import eventually

LIMIT = SessionLimit(max_sessions=1)


# -- the rules -----------------------------------------------------------------------------


def test_which_operations_end_sessions() -> None:
    limit = SessionLimit(max_sessions=2, policy=LimitPolicy.END_OLDEST)
    delete = Delete("a" * 23, 0)
    assert ends_sessions(delete)
    assert ends_sessions(EndSessions(None, 0, Reason.LOGOUT))  # type: ignore[arg-type]
    assert ends_sessions(Rotate("a", "b", None, 0, limit))  # type: ignore[arg-type]
    assert ends_sessions(Create("a", None, limit))  # type: ignore[arg-type]
    assert not ends_sessions(Rotate("a", "b", None, 0))  # type: ignore[arg-type]
    assert not ends_sessions(Create("a", None))  # type: ignore[arg-type]
    assert not ends_sessions(Read("a", 0, 0.1))


def test_an_end_short_of_its_replicas_is_refused_with_the_reason() -> None:
    assert replicated(b"ok", 1, 1, 0.25) == b"ok"
    with pytest.raises(NotReplicated) as short:
        replicated([1, b"", []], 0, 1, 0.25)
    assert refusal(short.value) == short.value.reason
    assert "0 of the 1 replica(s)" in short.value.reason
    assert "durable_ends" in short.value.reason
    error = redis_errors.ResponseError("WRONGTYPE")
    with pytest.raises(redis_errors.ResponseError):
        replicated(error, 1, 1, 0.25)
    assert wait_args(1, 0.0001) == ("WAIT", 1, 1)  # never 0: WAIT 0 blocks for ever


def test_min_replicas_to_write_refusals_are_unavailability_not_bugs() -> None:
    script = (
        "NOREPLICAS Not enough good replicas to write. script: "
        "bd6f3018b28bbdb36260f19d3c44afed740db987, on @user_script:1."
    )
    for text in ("NOREPLICAS Not enough good replicas to write.", script):
        reason = refusal(redis_errors.ResponseError(text))
        assert reason is not None
        assert "min-replicas-to-write" in reason
    assert refusal(redis_errors.ResponseError("ERR unknown command")) is None
    assert refusal(redis_errors.ConnectionError("gone")) is None


def test_cluster_clients_cannot_wait_for_the_replicas_of_their_writes() -> None:
    with pytest.raises(ValueError, match="Cluster"):
        durable_replicas(1, sentinel=False, cluster=True, timeout=0.25, socket_timeout=0.5)
    assert (
        durable_replicas(None, sentinel=False, cluster=True, timeout=0.25, socket_timeout=0.5) == 0
    )


# -- on real servers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer().start()
    replica = RedisServer("--replicaof", "127.0.0.1", str(primary.port)).start()
    eventually(
        lambda: replica.client().info("replication")["master_link_status"] == "up",
        10,
        "the replica to sync",
    )
    yield primary, replica
    replica.cleanup()
    primary.cleanup()


class _Stopped:
    """The replica stays connected but answers nothing: WAIT times out."""

    def __init__(self, server: RedisServer) -> None:
        assert server.process is not None
        self.pid = server.process.pid

    def __enter__(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def __exit__(self, *_: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


def _manager(primary: RedisServer) -> SessionManager:
    client = redis.Redis(port=primary.port, socket_timeout=2)
    return SessionManager(RedisStore(client, durable_ends=1), session_limit=LIMIT)


def _logged_in(manager: SessionManager, user: str) -> str:
    session = manager.load(None)
    manager.login(session, user)
    return manager.commit(session).id or ""


def test_ends_wait_for_a_replica_and_without_one_are_refused(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = primary_and_replica
    manager = _manager(primary)
    ending, everywhere, crowded = (_logged_in(manager, user) for user in ("ann", "bea", "cid"))
    with _Stopped(replica):
        session = manager.load(ending)
        session["cart"] = 1
        manager.commit(session)  # a plain write is not waited for
        session = manager.load(ending)
        session.invalidate()
        with pytest.raises(StoreUnavailable, match="durable_ends") as refused:
            manager.commit(session)
        with pytest.raises(StoreUnavailable, match="durable_ends"):
            manager.end_sessions("bea")
        login = manager.load(None)
        manager.login(login, "cid")  # at the limit: ends cid's older session
        with pytest.raises(StoreUnavailable, match="durable_ends"):
            manager.commit(login)
    assert "reached 0 of the 1 replica(s)" in refused.value.reason
    # With the replica back, the same ends are acknowledged.
    session = manager.load(ending)
    session.invalidate()
    manager.commit(session)
    assert manager.load(ending).is_new
    assert manager.end_sessions("bea") == []  # ended above, if unconfirmed: nothing left
    assert manager.load(everywhere).is_new
    login = manager.load(None)
    manager.login(login, "cid")
    manager.commit(login)
    assert manager.load(crowded).is_new


def test_asyncio_ends_are_refused_the_same_way(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = primary_and_replica

    async def scenario() -> None:
        client = redis.asyncio.Redis(port=primary.port, socket_timeout=2)
        manager = AsyncSessionManager(AsyncRedisStore(client, durable_ends=1))
        session = await manager.load(None)
        manager.login(session, "dee")
        session_id = (await manager.commit(session)).id
        session = await manager.load(session_id)
        session.invalidate()
        with _Stopped(replica), pytest.raises(StoreUnavailable, match="durable_ends"):
            await manager.commit(session)
        session = await manager.load(session_id)
        session.invalidate()
        await manager.commit(session)
        assert (await manager.load(session_id)).is_new
        await client.aclose()

    asyncio.run(scenario())


def test_a_primary_refusing_writes_for_want_of_replicas_is_a_503() -> None:
    lonely = RedisServer("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10").start()
    try:
        manager = SessionManager(RedisStore(lonely.client()))
        session = manager.load(None)
        session["n"] = 1  # a plain SET
        with pytest.raises(StoreUnavailable, match="min-replicas-to-write"):
            manager.commit(session)
        manager.login(session, "eve")  # a script
        with pytest.raises(StoreUnavailable, match="min-replicas-to-write"):
            manager.commit(session)
    finally:
        lonely.cleanup()


def test_defaults_and_what_is_refused(redis_server: RedisServer) -> None:
    assert RedisStore(redis_server.client()).durable_ends == 0  # standalone: off unless set
    assert RedisStore(redis_server.client(), durable_ends=2).durable_ends == 2
    with pytest.raises(ValueError, match="below the client's socket_timeout"):
        RedisStore(redis.Redis(port=redis_server.port, socket_timeout=0.1), durable_ends=1)
    with pytest.raises(ValueError, match="Cluster"):
        RedisSettings(url="redis+cluster://127.0.0.1:1", durable_ends=1)
    with pytest.raises(ValueError, match="durable_ends_timeout"):
        RedisSettings(durable_ends=1, durable_ends_timeout=0.5, socket_timeout=0.5)
    with pytest.raises(ValueError, match="durable_ends_timeout"):
        RedisSettings(url="redis+sentinel://127.0.0.1:1/m", socket_timeout=0.2)  # on by default
    RedisSettings(socket_timeout=0.2)  # standalone: durable ends off unless asked for


def test_the_settings_reach_the_stores(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONHUB_STORE", "redis")
    monkeypatch.setenv("SESSIONHUB_REDIS__URL", redis_server.url)
    monkeypatch.setenv("SESSIONHUB_REDIS__DURABLE_ENDS", "2")
    monkeypatch.setenv("SESSIONHUB_REDIS__DURABLE_ENDS_TIMEOUT", "0.1")
    settings = Settings.load()
    for store in (settings.session_manager().store, settings.async_session_manager().store):
        assert isinstance(store, RedisStore | AsyncRedisStore)
        assert (store.durable_ends, store.durable_ends_timeout) == (2, 0.1)

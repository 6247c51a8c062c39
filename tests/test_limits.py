"""The per-user session limit under simultaneous logins.

20 logins of one user start at once (threads on a sync store, asyncio tasks on
an async one); with a limit of 2, exactly 2 sessions are left alive, whatever
the policy and whether the login starts a session or upgrades a stored
anonymous one (on a Cluster that is a move across slots).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from sessionhub import AsyncSessionManager, LoginRefused, SessionManager
from sessionhub.events import EventType, Reason
from sessionhub.users import LimitPolicy, SessionLimit
from tests.servers import RedisCluster, RedisServer
from tests.users_kit import Kit, flush

LOGINS = 20
LIMIT = 2


@pytest.fixture(
    params=["memory-sync", "redis-sync", "redis-async", "cluster-sync", "cluster-async"]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str, request: pytest.FixtureRequest) -> RedisServer | RedisCluster | None:
    if kind.startswith("memory"):
        return None
    found: RedisServer | RedisCluster = request.getfixturevalue(
        "redis_server" if kind.startswith("redis") else "redis_cluster"
    )
    flush(found)
    return found


@pytest.fixture(params=list(LimitPolicy))
def policy(request: pytest.FixtureRequest) -> LimitPolicy:
    return LimitPolicy(request.param)


@pytest.fixture
def kit(kind: str, server: RedisServer | RedisCluster | None, policy: LimitPolicy) -> Iterator[Kit]:
    kit = Kit(kind, server, session_limit=SessionLimit(LIMIT, policy))
    yield kit
    kit.close()


def _threads(manager: SessionManager, starts: list[str | None]) -> list[str | LoginRefused]:
    results: list[str | LoginRefused] = [LoginRefused("", 0)] * len(starts)
    barrier = threading.Barrier(len(starts))

    def login(index: int) -> None:
        session = manager.load(starts[index])
        session["device"] = index
        manager.login(session, "alice")
        barrier.wait()
        try:
            session_id = manager.commit(session).id
            assert session_id is not None
            results[index] = session_id
        except LoginRefused as refused:
            results[index] = refused

    threads = [threading.Thread(target=login, args=(i,)) for i in range(len(starts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


async def _tasks(
    manager: AsyncSessionManager, starts: list[str | None]
) -> list[str | LoginRefused]:
    sessions = [await manager.load(start) for start in starts]
    for index, session in enumerate(sessions):
        session["device"] = index
        manager.login(session, "alice")

    async def commit(index: int) -> str | LoginRefused:
        try:
            session_id = (await manager.commit(sessions[index])).id
            assert session_id is not None
            return session_id
        except LoginRefused as refused:
            return refused

    return list(await asyncio.gather(*(commit(i) for i in range(len(sessions)))))


@pytest.mark.parametrize("start", ["new", "anonymous"])
def test_simultaneous_logins_leave_exactly_the_limit(
    kit: Kit, policy: LimitPolicy, start: str
) -> None:
    starts: list[str | None] = [
        kit.anonymous() if start == "anonymous" else None for _ in range(LOGINS)
    ]
    manager = kit.manager
    if isinstance(manager, SessionManager):
        results = _threads(manager, starts)
    else:
        results = kit.run(_tasks(manager, starts))

    logged_in = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, LoginRefused)]
    alive = [session_id for session_id in logged_in if kit.alive(session_id)]
    assert len(alive) == LIMIT
    listed = kit.sessions_of("alice")
    assert sorted(each.handle for each in listed) == sorted(kit.handle(i) for i in alive)
    limited = [e for e in kit.events if e.reason is Reason.LIMIT]
    if policy is LimitPolicy.REFUSE:
        assert len(refused) == LOGINS - LIMIT
        assert limited == []
        if start == "anonymous":  # a refused login leaves the anonymous session as it was
            assert sum(kit.alive(s) for s in starts if s is not None) == LOGINS - LIMIT
    else:
        assert refused == []
        assert len(limited) == LOGINS - LIMIT
        assert len({e.handle for e in limited}) == LOGINS - LIMIT
    logins = [e for e in kit.events if e.type is EventType.AUTHENTICATED]
    assert len(logins) == len(logged_in)

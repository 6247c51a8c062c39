"""A login that moves a session to another Cluster slot, with other requests in between.

On a Cluster, a login moves the session to its user's shard, in another hash
slot, in three steps: read the old record, copy it to the new key, hand over
(end the old record and report the move). Here another request of the same
session runs between two of those steps, deterministically: the mover's store
runs it just before it sends a chosen script. Whatever runs in between, the
outcome is as if it ran before or after the whole login, never a mix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sessionhub import (
    AsyncRedisStore,
    AsyncSessionManager,
    Outcome,
    RedisStore,
    Session,
    SessionEnded,
    SessionManager,
    StoreUnavailable,
)
from sessionhub.connect import RedisSettings, redis_client
from sessionhub.events import Event, EventType
from sessionhub.ids import IdScheme
from sessionhub.stores.redis.scripts import CREATE, HAND_OVER, Script
from sessionhub.stores.redis.store import SLOT_TAGS, Call, Pause
from tests.servers import RedisCluster
from tests.test_cluster import _node_of
from tests.users_kit import async_client, flush, sync_client

Meanwhile = Callable[[Call], object]


class Interleaved(RedisStore):
    """A RedisStore that calls `meanwhile(call)` before each call of the script `before`."""

    def __init__(self, client: Any, before: Script, meanwhile: Meanwhile) -> None:
        super().__init__(client)
        self.before = before
        self.meanwhile = meanwhile

    def _send(self, call: Call | Pause) -> Any:
        if isinstance(call, Call) and call.script is self.before:
            self.meanwhile(call)
        return super()._send(call)


class AsyncInterleaved(AsyncRedisStore):
    def __init__(self, client: Any, before: Script, meanwhile: Meanwhile) -> None:
        super().__init__(client)
        self.before = before
        self.meanwhile = meanwhile

    async def _send(self, call: Call | Pause) -> Any:
        if isinstance(call, Call) and call.script is self.before:
            self.meanwhile(call)
        return await super()._send(call)


class Mover:
    """The request that logs in: a manager (sync or asyncio) on an interleaving store."""

    def __init__(
        self,
        flavor: str,
        client: Any,
        before: Script,
        meanwhile: Meanwhile,
    ) -> None:
        self.loop = asyncio.new_event_loop() if flavor == "async" else None
        self.store: Interleaved | AsyncInterleaved
        self.manager: SessionManager | AsyncSessionManager
        if self.loop is None:
            self.store = Interleaved(client, before, meanwhile)
            self.manager = SessionManager(self.store)
        else:
            self.store = AsyncInterleaved(client, before, meanwhile)
            self.manager = AsyncSessionManager(self.store)
        self.events: list[Event] = []
        self.store.listeners.add(self.events.append)

    def run(self, value: Any) -> Any:
        return value if self.loop is None else self.loop.run_until_complete(value)

    def login(self, session_id: str, principal: str) -> Outcome:
        session: Session = self.run(self.manager.load(session_id))
        self.manager.login(session, principal)
        outcome: Outcome = self.run(self.manager.commit(session))
        return outcome

    def close(self) -> None:
        client: Any = self.store.client
        if self.loop is None:
            client.close()
        else:
            self.run(client.aclose())
            self.loop.close()


class Env:
    """A clean Cluster, the other requests' manager, and the movers made on it."""

    def __init__(self, cluster: RedisCluster, flavor: str) -> None:
        flush(cluster)
        self.cluster = cluster
        self.flavor = flavor
        self.other = SessionManager(RedisStore(sync_client(cluster)))
        self.movers: list[Mover] = []

    def mover(self, before: Script, meanwhile: Meanwhile, client: Any = None) -> Mover:
        if client is None:
            client = sync_client(self.cluster) if self.flavor == "sync" else None
            client = client or async_client(self.cluster)
        self.movers.append(Mover(self.flavor, client, before, meanwhile))
        return self.movers[-1]

    def anonymous(self, principal: str, *, node_apart: bool = False, **values: Any) -> str:
        """A stored anonymous session that a login as `principal` moves to another slot
        (on another primary, with `node_apart`)."""
        target = IdScheme().shard_of(principal)
        while True:
            session = self.other.load(None)
            session.update(values)
            session_id = self.other.commit(session).id
            assert session_id is not None
            if self.owner(session_id[0]) != self.owner(target) or (
                not node_apart and SLOT_TAGS[session_id[0]] != SLOT_TAGS[target]
            ):
                return session_id
            self.end(session_id)

    def owner(self, shard: str) -> int:
        """The port of the primary holding `shard`'s slot."""
        return _node_of(self.cluster, shard)

    def logged_in(self, session_id: str, principal: str) -> str:
        session = self.other.load(session_id)
        self.other.login(session, principal)
        new_id = self.other.commit(session).id
        assert new_id is not None
        return new_id

    def change(self, session_id: str, **values: Any) -> None:
        session = self.other.load(session_id)
        assert not session.is_new
        session.update(values)
        assert self.other.commit(session).id == session_id  # told it succeeded

    def end(self, session_id: str) -> None:
        session = self.other.load(session_id)
        assert not session.is_new
        session.invalidate()
        self.other.commit(session)

    def load(self, session_id: str | None) -> Session:
        return self.other.load(session_id)

    def records(self) -> dict[bytes, bytes]:
        """Every session record in the Cluster (not the short-lived "!" markers)."""
        found = {}
        for node in self.cluster.nodes:
            if node.process is None or node.process.poll() is not None:
                continue  # killed by the test
            with node.client() as client:
                for key in client.keys("sh:s:*"):
                    blob = client.get(key)
                    if blob and blob[:1] != b"!":
                        found[key] = blob
        return found

    def close(self) -> None:
        for mover in self.movers:
            mover.close()
        self.other.store.client.close()  # type: ignore[attr-defined]


@pytest.fixture(params=["sync", "async"])
def env(request: pytest.FixtureRequest, redis_cluster: RedisCluster) -> Iterator[Env]:
    env = Env(redis_cluster, request.param)
    yield env
    env.close()


def kinds(events: list[Event]) -> list[EventType]:
    return [event.type for event in events]


@pytest.mark.parametrize("before", [CREATE, HAND_OVER], ids=["before-copy", "before-hand-over"])
def test_a_change_committed_to_the_old_id_meanwhile_is_kept(env: Env, before: Script) -> None:
    session_id = env.anonymous("alice", cart=["book"])
    mover = env.mover(before, lambda call: env.change(session_id, cart=["book", "pen"]))
    outcome = mover.login(session_id, "alice")
    assert outcome.id is not None
    moved = env.load(outcome.id)
    assert moved.principal == "alice"
    assert moved["cart"] == ["book", "pen"]  # the change that was told it succeeded
    assert env.load(session_id).is_new
    assert kinds(mover.events) == [EventType.AUTHENTICATED]  # once, however many copies
    assert [each.handle for each in env.other.sessions_of("alice")] == [moved.handle]
    assert len(env.records()) == 1


@pytest.mark.parametrize("before", [CREATE, HAND_OVER], ids=["before-copy", "before-hand-over"])
def test_a_logout_meanwhile_is_not_undone(env: Env, before: Script) -> None:
    session_id = env.anonymous("alice", cart=["book"])
    mover = env.mover(before, lambda call: env.end(session_id))
    with pytest.raises(SessionEnded):
        mover.login(session_id, "alice")  # the end wins, and the login is told
    assert env.load(session_id).is_new
    assert env.other.sessions_of("alice") == []  # no copy counts toward a limit
    assert env.records() == {}
    assert EventType.AUTHENTICATED not in kinds(mover.events)


def test_a_session_changed_at_every_attempt_is_left_as_it_is(env: Env) -> None:
    session_id = env.anonymous("alice", n=0)
    changes = 0

    def change(call: Call) -> None:
        nonlocal changes
        changes += 1
        env.change(session_id, n=changes)

    mover = env.mover(HAND_OVER, change)
    with pytest.raises(StoreUnavailable, match="kept changing"):
        mover.login(session_id, "alice")
    assert changes == 3  # bounded
    session = env.load(session_id)
    assert session["n"] == 3  # every change kept, on the old id
    assert session.principal is None
    assert env.other.sessions_of("alice") == []
    assert len(env.records()) == 1
    assert mover.events == []


def test_a_hand_over_repeated_after_its_reply_was_lost_succeeds(env: Env) -> None:
    """redis-py sends a command again when the connection broke before the reply came."""
    session_id = env.anonymous("alice", cart=["book"])
    plain = RedisStore(sync_client(env.cluster))
    mover = env.mover(HAND_OVER, plain._send)  # the first reply is dropped
    outcome = mover.login(session_id, "alice")
    plain.client.close()
    assert outcome.id is not None
    assert env.load(outcome.id)["cart"] == ["book"]
    assert env.load(session_id).is_new
    assert len(env.records()) == 1


def test_two_logins_at_once_leave_one_session(env: Env) -> None:
    session_id = env.anonymous("alice", cart=["book"])
    winner: list[Outcome] = []

    def other_login(call: Call) -> None:
        session = env.load(session_id)
        env.other.login(session, "alice")
        winner.append(env.other.commit(session))

    mover = env.mover(HAND_OVER, other_login)
    outcome = mover.login(session_id, "alice")
    [first] = winner
    assert first.id is not None
    # The other login moved the session first: this one followed it and rotated it
    # again, so its response carries an id that works, and the first one's stops.
    assert outcome.id not in (None, session_id, first.id)
    assert outcome.id is not None
    assert env.load(outcome.id)["cart"] == ["book"]
    assert env.load(first.id).is_new
    assert [each.handle for each in env.other.sessions_of("alice")] == [env.load(outcome.id).handle]
    assert len(env.records()) == 1


def test_a_failed_hand_over_leaves_no_copy() -> None:
    """The old record's primary dies between the copy and the hand-over."""
    cluster = RedisCluster(primaries=3).start()
    try:
        env = Env(cluster, "sync")
        session_id = env.anonymous("alice", node_apart=True, cart=["book"])
        [old_node] = [node for node in cluster.nodes if node.port == env.owner(session_id[0])]
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes if node is not old_node)
        client = redis_client(RedisSettings(url=f"redis+cluster://{seeds}"))
        mover = env.mover(HAND_OVER, lambda call: old_node.kill(), client=client)
        with pytest.raises(StoreUnavailable):
            mover.login(session_id, "alice")
        # Well within the Cluster's node timeout: the other primaries still answer.
        assert env.other.sessions_of("alice") == []
        assert env.records() == {}
        assert mover.events == []
        env.close()
    finally:
        cluster.cleanup()

"""Redis Cluster: sessions spread over every primary, every operation single-slot.

A Cluster of three primaries, started by the test. Sessions are created, read,
changed, rotated, logged in (which moves a session to its user's shard, often
on another node), and deleted, with the sync and the asyncio client; afterwards
no node has ever answered CROSSSLOT (Redis counts every error reply it sends).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

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
from sessionhub.connect import RedisSettings, async_redis_client, redis_client
from sessionhub.ids import IdScheme
from sessionhub.stores.redis.store import SLOT_TAGS
from tests.servers import RedisCluster

SLACK = 0.75


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster(primaries=3).start()
    yield cluster
    cluster.cleanup()


def _settings(cluster: RedisCluster) -> RedisSettings:
    seeds = ",".join(f"127.0.0.1:{port}" for port in cluster.ports[:2])  # the third is found
    return RedisSettings(url=f"redis+cluster://{seeds}")


def _node_of(cluster: RedisCluster, shard: str) -> int:
    """The port of the primary holding `shard`'s slots."""
    slot = redis.cluster.key_slot(SLOT_TAGS[shard].encode())  # type: ignore[attr-defined]
    return _slot_owners(cluster)[slot]


def _slot_owners(cluster: RedisCluster) -> dict[int, int]:
    """Slot -> port of its primary, asked once per Cluster."""
    owners: dict[int, int] = cluster.__dict__.setdefault("_owners", {})
    if not owners:
        with cluster.nodes[0].client() as client:
            for start, end, (_, port, *_), *_ in client.execute_command("CLUSTER", "SLOTS"):
                owners.update(dict.fromkeys(range(start, end + 1), int(port)))
    return owners


def _refusals(cluster: RedisCluster) -> dict[str, int]:
    """Error replies by kind (INFO errorstats), and how many commands Redis refused.

    CROSSSLOT is such a refusal, and so is a redirection (MOVED, ASK). redis-py's
    CLIENT SETINFO at each connect is refused too by Redis < 7.2: that one is left out.
    """
    counts: dict[str, int] = {"refused": 0}
    for node in cluster.nodes:
        with node.client() as client:
            for name, stats in client.info("errorstats").items():
                kind = name.removeprefix("errorstat_")
                counts[kind] = counts.get(kind, 0) + int(stats["count"])
            for name, stats in client.info("commandstats").items():
                if not name.startswith("cmdstat_client"):
                    counts["refused"] += int(stats.get("rejected_calls", 0))
    return counts


def _session_keys_per_node(cluster: RedisCluster) -> list[int]:
    sizes = []
    for node in cluster.nodes:
        with node.client() as client:
            sizes.append(int(client.dbsize()))
    return sizes


class Sessions:
    """The whole lifecycle over many sessions; `run` drives a sync or async manager."""

    def __init__(self, manager: SessionManager | AsyncSessionManager) -> None:
        self.manager = manager
        self.loop = asyncio.new_event_loop() if isinstance(manager, AsyncSessionManager) else None

    def run(self, value: object) -> object:
        return value if self.loop is None else self.loop.run_until_complete(value)  # type: ignore[arg-type]

    def load(self, session_id: str | None) -> Session:
        return self.run(self.manager.load(session_id))  # type: ignore[return-value]

    def commit(self, session: Session) -> str | None:
        return self.run(self.manager.commit(session)).id  # type: ignore[attr-defined,no-any-return]

    def exercise(self, cluster: RedisCluster, count: int) -> None:
        before = sum(_session_keys_per_node(cluster))
        ids = []
        for i in range(count):
            session = self.load(None)
            session.update(i=i, cart={"sku": i})
            session_id = self.commit(session)
            assert session_id is not None
            ids.append(session_id)
        per_node = _session_keys_per_node(cluster)
        assert sum(per_node) - before == count
        # Shards spread evenly over the slot range, so each primary holds about a third.
        assert all(keys > count / 5 for keys in per_node), per_node

        for i, session_id in enumerate(ids):  # read and commit a change
            session = self.load(session_id)
            assert session["i"] == i
            session["cart"] = {**session["cart"], "sku2": 1}  # type: ignore[dict-item]
            assert self.commit(session) == session_id

        thirds = [ids[0::3], ids[1::3], ids[2::3]]
        rotated = self._rotate(thirds[0])
        moved_across_nodes = self._login(cluster, thirds[1])
        assert moved_across_nodes > len(thirds[1]) / 3  # most users' shards are elsewhere
        for session_id in thirds[2] + rotated:  # delete (logout)
            session = self.load(session_id)
            assert not session.is_new
            session.invalidate()
            assert self.commit(session) is None
            assert self.load(session_id).is_new

    def _rotate(self, ids: list[str]) -> list[str]:
        rotated = []
        for session_id in ids:
            session = self.load(session_id)
            session.rotate()
            new_id = self.commit(session)
            assert new_id is not None
            assert new_id != session_id
            assert self.load(session_id).is_new  # the old id is dead
            assert self.load(new_id)["cart"] == {"sku": self.load(new_id)["i"], "sku2": 1}
            rotated.append(new_id)
        return rotated

    def _login(self, cluster: RedisCluster, ids: list[str]) -> int:
        """Log each session in; how many moved to another node."""
        moved = 0
        for n, session_id in enumerate(ids):
            session = self.load(session_id)
            self.manager.login(session, f"user-{n % 50}")
            new_id = self.commit(session)
            assert new_id is not None
            assert new_id[0] == IdScheme().shard_of(f"user-{n % 50}")
            moved += _node_of(cluster, session_id[0]) != _node_of(cluster, new_id[0])
            assert self.load(session_id).is_new
            again = self.load(new_id)
            assert again.principal == f"user-{n % 50}"
            assert again["cart"] == {"sku": again["i"], "sku2": 1}
        return moved

    def close(self) -> None:
        client = self.manager.store.client  # type: ignore[union-attr]
        if self.loop is None:
            client.close()
        else:
            self.run(client.aclose())
            self.loop.close()


def test_thousands_of_sessions_sync(cluster: RedisCluster) -> None:
    client = redis_client(_settings(cluster))
    assert isinstance(client, redis.cluster.RedisCluster)
    sessions = Sessions(SessionManager(RedisStore(client)))
    sessions.exercise(cluster, 2000)
    sessions.close()
    assert "CROSSSLOT" not in _refusals(cluster)


def test_thousands_of_sessions_async(cluster: RedisCluster) -> None:
    sessions = Sessions(
        AsyncSessionManager(AsyncRedisStore(async_redis_client(_settings(cluster))))
    )
    sessions.exercise(cluster, 1000)
    sessions.close()
    errors = _refusals(cluster)
    assert "CROSSSLOT" not in errors
    # Every error: a script not yet cached on a node (then sent once in full), CLIENT
    # SETINFO (Redis < 7.2), or a redirection while the client learns the slot map;
    # no command was refused for any other reason.
    assert set(errors) <= {"refused", "NOSCRIPT", "ERR", "MOVED", "ASK"}, errors
    assert errors["refused"] == errors.get("MOVED", 0) + errors.get("ASK", 0), errors


def test_a_dead_primary_fails_its_requests_within_the_bound() -> None:
    cluster = RedisCluster(primaries=3).start()
    try:
        settings = _settings(cluster)
        manager = SessionManager(RedisStore(redis_client(settings)))
        ids: list[str] = []
        while {_node_of(cluster, i[0]) for i in ids} != set(cluster.ports):
            session = manager.load(None)
            session["n"] = 1
            ids.append(manager.commit(session).id or "")
        dead = cluster.nodes[2]
        on_dead = [i for i in ids if _node_of(cluster, i[0]) == dead.port]
        dead.kill()
        # Before the Cluster notices (node timeout 2 s), and after (CLUSTERDOWN, as
        # cluster-require-full-coverage is on): StoreUnavailable, in bounded time.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                manager.load(on_dead[0])
            assert time.monotonic() - started < 2 * settings.timeout + SLACK
            time.sleep(0.2)
        # With no node left at all, still StoreUnavailable, never another error.
        for node in cluster.nodes:
            node.kill()
        for session_id in ids:
            with pytest.raises(StoreUnavailable):
                manager.load(session_id)
    finally:
        cluster.cleanup()

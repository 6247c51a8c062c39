"""A Cluster slot that holds sessions migrates key by key while requests run.

`redis-cli --cluster reshard` and managed services move a slot's keys one (or
a few) at a time; meanwhile the source answers ASK for the keys gone and
TRYAGAIN for a command whose keys are split between the two nodes. A session's
shard has four keys in that slot: the session's record, its user's index, the
shard's expiry schedule and its event stream. For every split of those four
between the two nodes (every state any order of moving them passes through),
a read, a write, a login that moves another session into the slot and a
logout are sent through a real app: none is a 500, and whatever was answered
503 left nothing behind, whatever was answered 200 is all there.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.crc import key_slot

from sessionhub import RedisStore, SessionManager
from sessionhub.connect import RedisSettings, redis_client
from sessionhub.ids import IdScheme
from sessionhub.stores.redis.store import SLOT_TAGS
from tests.servers import RedisCluster
from tests.users_kit import flush
from tests.web_apps import AppServer, Client, server_env

KEYS = ("record", "index", "schedule", "stream")
#: Each split of the shard's keys: the ones already moved to the target.
SPLITS = [moved for n in range(len(KEYS) + 1) for moved in itertools.combinations(KEYS, n)]
ALICE_SHARD = IdScheme().shard_of("alice")


class Migration:
    """One slot moving from its owner to another primary, key by key."""

    def __init__(self, cluster: RedisCluster, slot: int) -> None:
        self.slot = slot
        self.clients: dict[int, Any] = {node.port: node.client() for node in cluster.nodes}
        self.ids = cluster.node_ids()
        owner = self._owner()
        self.source = self.clients[owner]
        self.target_port = next(port for port in self.clients if port != owner)
        self.target = self.clients[self.target_port]
        self.source_id, self.target_id = self.ids[owner], self.ids[self.target_port]

    def _owner(self) -> int:
        any_node = next(iter(self.clients.values()))
        for start, end, (_, port, *_), *_ in any_node.execute_command("CLUSTER", "SLOTS"):
            if start <= self.slot <= end:
                return int(port)
        raise AssertionError(f"slot {self.slot} has no owner")

    def begin(self) -> None:
        self.target.execute_command("CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.source_id)
        self.source.execute_command("CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.target_id)

    def move(self, key: str) -> None:
        self.source.execute_command(
            "MIGRATE", "127.0.0.1", self.target_port, "", 0, 5000, "KEYS", key
        )

    def finish(self) -> None:
        while keys := self.source.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 100):
            for key in keys:
                self.move(key.decode())
        for client in (self.target, self.source, *self.clients.values()):
            client.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self.target_id)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Cluster of its own: the tests move its slots (other tests remember owners)."""
    cluster = RedisCluster(primaries=3).start()
    yield cluster
    cluster.cleanup()


@pytest.fixture(params=["starlette", "flask"])
def browsers(
    request: pytest.FixtureRequest, redis_cluster: RedisCluster
) -> Iterator[Callable[[], Client]]:
    """Opens browsers of one app (asyncio or sync shell), each with its own cookie."""
    seeds = ",".join(f"127.0.0.1:{port}" for port in redis_cluster.ports)
    # A slot on the move is waited for as long as one command may take: short here.
    redis_settings = {"url": f"redis+cluster://{seeds}", "timeout": 0.4}
    redis_settings |= {"connect_timeout": 0.1, "socket_timeout": 0.25}
    conf = {"store": "redis", "redis": redis_settings}
    opened: list[Client] = []

    def open_browser() -> Client:
        opened.append(Client(str(request.param), conf))
        return opened[-1]

    yield open_browser
    for browser in opened:
        browser.close()


def _keys(client: Any, pattern: str) -> list[bytes]:
    keys: list[bytes] = client.keys(pattern)
    return keys


def _keys_of_alice_s_shard(cluster: RedisCluster, record: str) -> dict[str, str]:
    tag = SLOT_TAGS[ALICE_SHARD]
    index = [str(k, "ascii") for n in cluster.nodes for k in _keys(n.client(), f"sh:u:{{{tag}}}*")]
    assert len(index) == 1
    return {
        "record": record,
        "index": index[0],
        "schedule": f"sh:x:{{{tag}}}",
        "stream": f"sh:e:{{{tag}}}",
    }


def _anonymous_elsewhere(browsers: Callable[[], Client]) -> Client:
    """A browser with an anonymous session outside alice's slot: its login moves it."""
    while True:
        browser = browsers()
        browser.post("/write", key="cart", value="book")
        assert browser.cookie is not None
        if SLOT_TAGS[browser.cookie[0]] != SLOT_TAGS[ALICE_SHARD]:
            return browser


@pytest.mark.parametrize("moved", SPLITS, ids=["+".join(m) or "none" for m in SPLITS])
def test_requests_while_the_slot_migrates(
    browsers: Callable[[], Client], redis_cluster: RedisCluster, moved: tuple[str, ...]
) -> None:
    flush(redis_cluster)
    alice, other_device = browsers(), browsers()
    for browser in (alice, other_device):
        browser.post("/login", user="alice")
        assert browser.cookie is not None
    mover = _anonymous_elsewhere(browsers)
    ref = IdScheme().parse(alice.cookie)
    assert ref is not None
    record = f"sh:s:{{{SLOT_TAGS[ALICE_SHARD]}}}{ref.handle[1:]}"
    keys = _keys_of_alice_s_shard(redis_cluster, record)
    migration = Migration(redis_cluster, key_slot(SLOT_TAGS[ALICE_SHARD].encode()))
    try:
        migration.begin()
        for name in moved:
            migration.move(keys[name])
        read = alice.get("/read")
        write = alice.post("/write", key="during", value="migration")
        login = mover.post("/login", user="alice")
        logout = other_device.post("/logout")
        migration.finish()
    finally:
        migration.close()
    replies = [read, write, login, logout]
    assert [reply.status for reply in replies if reply.status not in (200, 503)] == []
    assert read.status == 200
    assert read.json() == {"data": {}, "principal": "alice"}
    after = alice.get("/read").json()
    assert ("during" in after["data"]) == (write.status == 200)
    moved_session = mover.get("/read").json()
    if login.status == 200:
        assert moved_session == {"data": {"cart": "book"}, "principal": "alice"}
    else:  # nothing half-done: still the anonymous session it was
        assert moved_session == {"data": {"cart": "book"}, "principal": None}
    if logout.status == 200:
        assert other_device.cookie is None
    else:
        assert other_device.get("/read").json()["principal"] == "alice"
    logged_in = 2 + (login.status == 200) - (logout.status == 200)
    assert _sessions_of_alice(redis_cluster) == logged_in


def _sessions_of_alice(cluster: RedisCluster) -> int:
    """How many sessions alice's index lists, asked through a fresh manager."""
    seeds = ",".join(f"127.0.0.1:{port}" for port in cluster.ports)
    client = redis_client(RedisSettings(url=f"redis+cluster://{seeds}"))
    try:
        return len(SessionManager(RedisStore(client)).sessions_of("alice"))
    finally:
        client.close()


# -- a reshard under load, through a real server -------------------------------------------


class Visitor:
    """A user of the real server: logs in, writes and reads, logs out and in again;
    remembers what each write was answered."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.cookie: str | None = None
        self.kept: set[str] = set()  # written since the last login, answered 200
        self.refused: set[str] = set()  # answered 503 since the last login
        self.statuses: list[int] = []
        self.writes = 0

    def send(self, method: str, path: str, **params: str) -> httpx.Response:
        headers = {"Cookie": f"session={self.cookie}"} if self.cookie else {}
        reply = httpx.request(method, self.url + path, params=params, headers=headers, timeout=10)
        self.statuses.append(reply.status_code)
        for header in reply.headers.get_list("set-cookie"):
            self.cookie = header.split(";", 1)[0].split("=", 1)[1] or None
        return reply

    def log_in(self) -> None:
        while self.send("POST", "/login", user=self.name).status_code != 200:
            pass  # a 503 (its slot on the move) changed nothing: try again
        self.kept, self.refused = set(), set()

    def step(self) -> None:
        self.writes += 1
        key = f"w{self.writes}"
        status = self.send("POST", "/write", key=key, value="v").status_code
        (self.kept if status == 200 else self.refused).add(key)
        if self.writes % 15 == 0 and self.send("POST", "/logout").status_code == 200:
            self.log_in()

    def check(self) -> None:
        reply = self.send("GET", "/read")
        assert reply.status_code == 200
        data = reply.json()
        assert data["principal"] == self.name
        assert set(data["data"]) == self.kept  # every 200 kept, no 503 applied


def _reshard(cluster: RedisCluster, source: int, target: int, slots: int) -> None:
    ids = cluster.node_ids()
    subprocess.run(
        [shutil.which("redis-cli") or "redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}",
         "--cluster-from", ids[source], "--cluster-to", ids[target],
         "--cluster-slots", str(slots), "--cluster-yes"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip


def test_a_reshard_under_load_through_a_real_server(tmp_path: Path) -> None:
    cluster = RedisCluster(primaries=3).start()
    seeds = ",".join(f"127.0.0.1:{port}" for port in cluster.ports)
    env = server_env(store="redis", redis__url=f"redis+cluster://{seeds}")
    server = AppServer.uvicorn("tests.web_apps:starlette_from_env", env, tmp_path / "uv.log")
    stop = threading.Event()
    visitors = [Visitor(server.url, f"user-{i}") for i in range(6)]
    try:
        server.wait_ready()
        for visitor in visitors:
            visitor.log_in()

        def load(visitor: Visitor) -> None:
            while not stop.is_set():
                visitor.step()

        threads = [threading.Thread(target=load, args=(v,)) for v in visitors]
        for thread in threads:
            thread.start()
        first, second = cluster.ports[0], cluster.ports[1]
        _reshard(cluster, first, second, 1500)  # there and back: every moved slot twice
        _reshard(cluster, second, first, 1500)
        stop.set()
        for thread in threads:
            thread.join()
        for visitor in visitors:
            visitor.check()
    finally:
        stop.set()
        server.stop()
        cluster.cleanup()
    statuses = [status for visitor in visitors for status in visitor.statuses]
    assert 500 not in statuses
    assert sum(visitor.writes for visitor in visitors) > 100

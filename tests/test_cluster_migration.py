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

import asyncio
import itertools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
from redis.crc import key_slot
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sessionhub import AsyncRedisStore, AsyncSessionManager, RedisStore, SessionManager, auth
from sessionhub.config import Settings
from sessionhub.connect import RedisSettings, async_redis_client, redis_client
from sessionhub.ids import IdScheme
from sessionhub.stores.redis.store import SLOT_TAGS
from sessionhub.web import flask as flask_integration
from sessionhub.web.asgi import SessionMiddleware
from tests.servers import RedisCluster
from tests.users_kit import flush
from tests.web_apps import AppServer, server_env

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


# -- the app, on both shells ------------------------------------------------------------


def _starlette(seeds: str) -> Any:
    async def read(request: Request) -> Response:
        session = auth.sessionhub_session(request.session)
        return JSONResponse({"data": dict(session), "principal": session.principal})

    async def write(request: Request) -> Response:
        request.session[request.query_params["key"]] = request.query_params["value"]
        return PlainTextResponse("written")

    async def login(request: Request) -> Response:
        auth.login(request.session, request.query_params["user"])
        return PlainTextResponse("in")

    async def logout(request: Request) -> Response:
        auth.logout(request.session)
        return PlainTextResponse("out")

    client = async_redis_client(RedisSettings(url=f"redis+cluster://{seeds}"))
    manager = AsyncSessionManager(AsyncRedisStore(client, redirect_patience=0.2))
    routes = [
        Route("/read", read),
        Route("/write", write, methods=["POST"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
    flow = Settings.load(store="memory").flow()
    middleware = Middleware(SessionMiddleware, manager=manager, flow=flow)
    return Starlette(routes=routes, middleware=[middleware])


def _flask(seeds: str) -> Any:
    app = flask.Flask(__name__)
    flask_integration.SessionHub(app, settings=Settings.load(store="memory"))
    client = redis_client(RedisSettings(url=f"redis+cluster://{seeds}"))
    middleware = app.extensions["sessionhub"]
    middleware.manager = SessionManager(RedisStore(client, redirect_patience=0.2))

    @app.get("/read")
    def read() -> dict[str, Any]:
        session = auth.sessionhub_session(flask.session)
        return {"data": dict(session), "principal": session.principal}

    @app.post("/write")
    def write() -> str:
        flask.session[flask.request.args["key"]] = flask.request.args["value"]
        return "written"

    @app.post("/login")
    def login() -> str:
        auth.login(flask.session, flask.request.args["user"])
        return "in"

    @app.post("/logout")
    def logout() -> str:
        auth.logout(flask.session)
        return "out"

    return app


class Browser:
    """One browser of the app: its own cookie, sent as is."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.cookie: str | None = None

    def send(self, method: str, path: str, **params: str) -> httpx.Response:
        headers = {"Cookie": f"session={self.cookie}"} if self.cookie else {}
        reply = self.app.send(method, path, params, headers)
        for header in reply.headers.get_list("set-cookie"):
            value = header.split(";", 1)[0].split("=", 1)[1]
            self.cookie = value or None
        return reply


@dataclass
class App:
    kind: str
    seeds: str
    loop: asyncio.AbstractEventLoop | None = None
    asgi: httpx.AsyncClient | None = None
    wsgi: httpx.Client | None = None
    statuses: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind == "starlette":
            self.loop = asyncio.new_event_loop()
            transport = httpx.ASGITransport(app=_starlette(self.seeds))
            self.asgi = httpx.AsyncClient(transport=transport, base_url="http://t")
        else:
            transport_ = httpx.WSGITransport(app=_flask(self.seeds))
            self.wsgi = httpx.Client(transport=transport_, base_url="http://t")

    def send(
        self, method: str, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> httpx.Response:
        if self.loop is not None and self.asgi is not None:
            request = self.asgi.request(method, path, params=params, headers=headers)
            reply = self.loop.run_until_complete(request)
            self.asgi.cookies.clear()
        else:
            assert self.wsgi is not None
            reply = self.wsgi.request(method, path, params=params, headers=headers)
            self.wsgi.cookies.clear()
        self.statuses.append(reply.status_code)
        return reply

    def close(self) -> None:
        if self.loop is not None and self.asgi is not None:
            self.loop.run_until_complete(self.asgi.aclose())
            self.loop.close()
        elif self.wsgi is not None:
            self.wsgi.close()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Cluster of its own: the tests move its slots (other tests remember owners)."""
    cluster = RedisCluster(primaries=3).start()
    yield cluster
    cluster.cleanup()


@pytest.fixture(params=["starlette", "flask"])
def app(request: pytest.FixtureRequest, redis_cluster: RedisCluster) -> Iterator[App]:
    seeds = ",".join(f"127.0.0.1:{port}" for port in redis_cluster.ports)
    app = App(str(request.param), seeds)
    yield app
    app.close()


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


def _anonymous_elsewhere(app: App) -> Browser:
    """A browser with an anonymous session outside alice's slot: its login moves it."""
    while True:
        browser = Browser(app)
        browser.send("POST", "/write", key="cart", value="book")
        assert browser.cookie is not None
        if SLOT_TAGS[browser.cookie[0]] != SLOT_TAGS[ALICE_SHARD]:
            return browser


@pytest.mark.parametrize("moved", SPLITS, ids=["+".join(m) or "none" for m in SPLITS])
def test_requests_while_the_slot_migrates(
    app: App, redis_cluster: RedisCluster, moved: tuple[str, ...]
) -> None:
    flush(redis_cluster)
    alice, other_device = Browser(app), Browser(app)
    for browser in (alice, other_device):
        browser.send("POST", "/login", user="alice")
        assert browser.cookie is not None
    mover = _anonymous_elsewhere(app)
    handle = IdScheme().parse(alice.cookie)
    assert handle is not None
    record = f"sh:s:{{{SLOT_TAGS[ALICE_SHARD]}}}{handle.handle[1:]}"
    keys = _keys_of_alice_s_shard(redis_cluster, record)
    migration = Migration(redis_cluster, key_slot(SLOT_TAGS[ALICE_SHARD].encode()))
    try:
        migration.begin()
        for name in moved:
            migration.move(keys[name])
        read = alice.send("GET", "/read")
        write = alice.send("POST", "/write", key="during", value="migration")
        login = mover.send("POST", "/login", user="alice")
        logout = other_device.send("POST", "/logout")
        migration.finish()
    finally:
        migration.close()
    assert 500 not in app.statuses
    assert read.status_code == 200
    assert read.json() == {"data": {}, "principal": "alice"}
    after = alice.send("GET", "/read").json()
    assert write.status_code in (200, 503)
    assert ("during" in after["data"]) == (write.status_code == 200)
    assert login.status_code in (200, 503)
    moved_session = mover.send("GET", "/read").json()
    if login.status_code == 200:
        assert moved_session == {"data": {"cart": "book"}, "principal": "alice"}
    else:  # nothing half-done: still the anonymous session it was
        assert moved_session == {"data": {"cart": "book"}, "principal": None}
    assert logout.status_code in (200, 503)
    if logout.status_code == 200:
        assert other_device.cookie is None
    else:
        assert other_device.send("GET", "/read").json()["principal"] == "alice"
    logged_in = 2 + (login.status_code == 200) - (logout.status_code == 200)
    assert _sessions_of_alice(app) == logged_in


def _sessions_of_alice(app: App) -> int:
    """How many sessions alice's index lists, asked through a fresh manager."""
    client = redis_client(RedisSettings(url=f"redis+cluster://{app.seeds}"))
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

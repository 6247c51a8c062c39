"""A page's requests racing its login, through real servers, an HTTP client and Chromium.

One browser sends 49 writes (a different attribute each) and a login on one
session. The writes that loaded the session before the login committed keep
their change in the logged-in session; no response but the login's touches
the cookie; a write that cannot be kept is answered 409, never a silent 200.
FastAPI under uvicorn and Flask under gunicorn (threads), on one Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from tests.browser import chromium
from tests.race_apps import GATE, LOADED
from tests.servers import RedisServer
from tests.web_apps import AppServer, server_env

WRITERS = 49


@pytest.fixture(params=["fastapi", "flask"])
def server(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> Iterator[str]:
    redis_server.client().flushall()
    env = server_env(store="redis", redis__url=redis_server.url, cookie__secure="false")
    env["RACE_GATE_URL"] = redis_server.url
    log = tmp_path / "server.log"
    if request.param == "fastapi":
        app = AppServer.uvicorn("tests.race_apps:fastapi_from_env", env, log)
    else:
        app = AppServer.gunicorn("tests.race_apps:flask_from_env()", env, log, threads=64)
    try:
        app.wait_ready()
        yield app.url
    finally:
        app.stop()


@pytest.fixture
def gate(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def _cookie(reply: httpx.Response) -> str:
    [header] = reply.headers.get_list("set-cookie")
    name, _, rest = header.partition("=")
    assert name == "session"
    return rest.split(";", 1)[0]


def _sends(url: str, path: str, session_id: str, **params: str) -> httpx.Response:
    """One request of the browser: its cookie, sent as is (no client-side jar)."""
    headers = {"Cookie": f"session={session_id}"}
    return httpx.post(url + path, params=params, headers=headers, timeout=60)


def _read(url: str, session_id: str) -> dict[str, object]:
    reply = httpx.get(url + "/read", headers={"Cookie": f"session={session_id}"}, timeout=10)
    data: dict[str, object] = reply.json()
    return data


def _anonymous(url: str) -> str:
    return _cookie(httpx.post(url + "/write", params={"key": "base", "value": "0"}, timeout=10))


def test_49_writes_that_loaded_before_the_login_are_all_kept(
    server: str, gate: redis.Redis
) -> None:
    old_id = _anonymous(server)
    with ThreadPoolExecutor(WRITERS) as pool:
        writes = [
            pool.submit(_sends, server, "/write", old_id, key=f"k{i}", value="v", hold="1")
            for i in range(WRITERS)
        ]
        for _ in range(WRITERS):  # every write's view has its session loaded, and waits
            assert gate.blpop([LOADED], timeout=30) is not None
        login = _sends(server, "/login", old_id, user="alice")
        gate.rpush(GATE, *["go"] * WRITERS)
        replies = [write.result() for write in writes]
    assert login.status_code == 200
    new_id = _cookie(login)
    assert [reply.status_code for reply in replies] == [200] * WRITERS
    assert [reply.headers.get_list("set-cookie") for reply in replies] == [[]] * WRITERS
    final = _read(server, new_id)
    assert final["principal"] == "alice"
    assert final["data"] == {"base": "0", **{f"k{i}": "v" for i in range(WRITERS)}}
    assert _read(server, old_id) == {"data": {}, "principal": None}


def test_50_requests_racing_a_login_lose_nothing_silently(server: str) -> None:
    for _ in range(3):
        old_id = _anonymous(server)
        with ThreadPoolExecutor(WRITERS + 1) as pool:
            writes = [
                pool.submit(_sends, server, "/write", old_id, key=f"k{i}", value="v")
                for i in range(WRITERS // 2)
            ]
            login = pool.submit(_sends, server, "/login", old_id, user="alice")
            writes += [
                pool.submit(_sends, server, "/write", old_id, key=f"k{i}", value="v")
                for i in range(WRITERS // 2, WRITERS)
            ]
            replies = [write.result() for write in writes]
        new_id = _cookie(login.result())
        assert {reply.status_code for reply in replies} <= {200, 409}
        assert [reply.headers.get_list("set-cookie") for reply in replies] == [[]] * WRITERS
        final = _read(server, new_id)
        assert final["principal"] == "alice"
        kept = {f"k{i}" for i, reply in enumerate(replies) if reply.status_code == 200}
        data = final["data"]
        assert isinstance(data, dict)
        assert set(data) == {"base", *kept}  # every 200 kept, every 409 told


def test_chromium_stays_signed_in_when_its_requests_overlap_the_login(
    redis_server: RedisServer, gate: redis.Redis, tmp_path: Path
) -> None:
    redis_server.client().flushall()
    env = server_env(store="redis", redis__url=redis_server.url, cookie__secure="false")
    env["RACE_GATE_URL"] = redis_server.url
    app = AppServer.uvicorn("tests.race_apps:fastapi_from_env", env, tmp_path / "uvicorn.log")
    held = 5  # with the login, the 6 connections Chromium opens to one host
    try:
        app.wait_ready()
        with chromium() as browser:
            page = browser.new_context().new_page()
            page.goto(app.url + "/anon")
            page.evaluate("fetch('/write?key=base&value=0', {method: 'POST'})")
            page.evaluate(
                """held => { window.held = [...Array(held).keys()].map(i =>
                    fetch(`/write?key=k${i}&value=v&hold=1`, {method: 'POST'})
                      .then(r => r.status)) }""",
                held,
            )
            for _ in range(held):
                assert gate.blpop([LOADED], timeout=30) is not None
            login = "fetch('/login?user=alice', {method: 'POST'}).then(r => r.status)"
            assert page.evaluate(login) == 200
            gate.rpush(GATE, *["go"] * held)
            assert page.evaluate("Promise.all(window.held)") == [200] * held
            page.goto(app.url + "/read")
            final = json.loads(page.inner_text("body"))
    finally:
        app.stop()
    assert final["principal"] == "alice"
    assert final["data"] == {"base": "0", **{f"k{i}": "v" for i in range(held)}}

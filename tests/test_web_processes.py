"""Two real app servers, two frameworks, one Redis: a login on one holds on the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import RedisServer
from tests.web_apps import AppServer, server_env


@pytest.fixture
def servers(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    redis_server.client().flushall()
    env = server_env(store="redis", redis__url=redis_server.url, cookie__name="shared_sid")
    starlette = AppServer.uvicorn("tests.web_apps:starlette_from_env", env, tmp_path / "uv.log")
    flask = AppServer.gunicorn("tests.web_apps:flask_from_env()", env, tmp_path / "gunicorn.log")
    try:
        starlette.wait_ready()
        flask.wait_ready()
        yield starlette.url, flask.url
    finally:
        starlette.stop()
        flask.stop()


def test_log_in_on_one_server_be_logged_in_on_the_other(
    servers: tuple[str, str], redis_server: RedisServer
) -> None:
    starlette, flask = servers
    with httpx.Client(timeout=10) as browser:
        login = browser.post(starlette + "/login", params={"user": "alice"})
        assert login.status_code == 200
        cookie = {"Cookie": f"shared_sid={login.cookies['shared_sid']}"}
        assert browser.get(flask + "/read", headers=cookie).json() == {
            "data": {},
            "principal": "alice",
        }
        for url in (starlette, flask):  # who is logged in is a look at the session: Vary
            who = browser.get(url + "/identity", params={"name": "principal"}, headers=cookie)
            assert (who.json(), who.headers["vary"]) == ("alice", "Cookie")
        browser.post(flask + "/write", params={"key": "cart", "value": "2 pears"}, headers=cookie)
        for _ in range(4):  # both gunicorn workers and uvicorn see the same session
            for url in (starlette, flask):
                reply = browser.get(url + "/read", headers=cookie).json()
                assert reply == {"data": {"cart": "2 pears"}, "principal": "alice"}
        logout = browser.post(flask + "/logout", headers=cookie)
        assert "Max-Age=0" in logout.headers["set-cookie"]
        assert browser.get(starlette + "/read", headers=cookie).json() == {
            "data": {},
            "principal": None,
        }
    assert redis_server.client().keys("sh:s:*") == []


def test_a_junk_cookie_of_the_same_name_signs_nobody_out_on_real_servers(
    servers: tuple[str, str],
) -> None:
    starlette, flask = servers
    with httpx.Client(timeout=10) as browser:
        login = browser.post(starlette + "/login", params={"user": "alice"})
        valid = login.cookies["shared_sid"]
    # A parent domain's junk cookie of the same name comes first.
    junk_first = {"Cookie": f"shared_sid=junk; shared_sid={valid}"}
    for url in (starlette, flask):
        with httpx.Client(timeout=10) as browser:
            reply = browser.get(url + "/read", headers=junk_first)
        assert reply.json() == {"data": {}, "principal": "alice"}
        assert "set-cookie" not in reply.headers

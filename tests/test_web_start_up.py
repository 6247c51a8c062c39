"""What every integration says at start-up: a memory store nobody chose is one warning, and
settings that cannot work stop it (a Redis that is merely down does not)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flask
import httpx
import litestar
import pytest
import quart
from starlette.applications import Starlette
from starlette.middleware import Middleware

from sessionhub.config import ConfigError
from sessionhub.web import flask as flask_integration
from sessionhub.web import quart as quart_integration
from sessionhub.web.asgi import SessionMiddleware
from sessionhub.web.wsgi import SessionMiddleware as WSGISessionMiddleware
from tests.log_records import Records, recording
from tests.servers import RedisServer
from tests.web_apps import KINDS, ROOT, AppServer, Client, server_env

MEMORY_WARNING = "no store is set, so sessions are kept in this process's memory"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SESSIONHUB_* variables and no .env from outside: only what a test sets."""
    for name in list(os.environ):
        if name.startswith("SESSIONHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def serve_a_while(kind: str, conf: dict[str, Any]) -> None:
    """Build `kind`'s app and serve a few requests (Starlette and FastAPI build their
    middleware at the first call, as a server's lifespan start-up would)."""
    client = Client(kind, conf)
    try:
        for _ in range(2):
            assert client.get("/anon").status == 200
        assert client.post("/write", key="cart", value="1 pear").status == 200
        assert client.get("/read").json()["data"] == {"cart": "1 pear"}
    finally:
        client.close()


def memory_warnings(records: Records) -> list[str]:
    return [message for message in records.messages() if MEMORY_WARNING in message]


@pytest.mark.parametrize("kind", KINDS)
def test_a_memory_store_nobody_chose_is_one_warning(kind: str, redis_server: RedisServer) -> None:
    # The test project's own Django settings (no store set) may be made, and warned
    # about, as the engine is imported: before the recording.
    import sessionhub.web.django  # noqa: F401
    import tests.web_django  # noqa: F401

    with recording("sessionhub") as records:
        for chosen in ("memory", "redis"):  # chosen: nothing to warn about
            serve_a_while(kind, {"store": chosen, "redis": {"url": redis_server.url}})
        assert memory_warnings(records) == []
        serve_a_while(kind, {})
    [warning] = memory_warnings(records)
    assert "SESSIONHUB_STORE=redis and SESSIONHUB_REDIS__URL=" in warning
    assert "gunicorn" in warning


def wait_for(found: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not found():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("server", "processes"),
    [
        (lambda env, log: AppServer.uvicorn("tests.web_apps:starlette_from_env", env, log), 1),
        (lambda env, log: AppServer.gunicorn("tests.web_apps:flask_from_env()", env, log), 2),
    ],
    ids=["uvicorn", "gunicorn -w 2"],
)
def test_each_server_process_says_it_once(
    server: Callable[[dict[str, str], Path], AppServer], processes: int, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"

    def said() -> int:
        return log.read_text().count(MEMORY_WARNING)

    app_server = server(server_env(), log)
    try:
        app_server.wait_ready()
        wait_for(lambda: said() == processes, f"{processes} warning(s) in {log.read_text()}")
        for _ in range(10):
            assert httpx.get(app_server.url + "/anon").text == "anon"
    finally:
        app_server.stop()
    assert said() == processes  # one per process, at its start-up: none per request
    assert "SESSIONHUB_STORE=redis" in log.read_text()


# -- settings that cannot work stop the start-up ---------------------------------------------

BAD_URLS = {
    "unknown scheme": ("redsi://localhost:6379/0", "unsupported Redis URL scheme 'redsi'"),
    "malformed": ("redis://localhost:port/0", "address 'localhost:port' has no valid port"),
    "no such database anywhere": (
        "redis://localhost:6379/99999999999",
        "the Redis database must be a number from 0",
    ),
}


def readme_app(env: dict[str, str], log: Path) -> AppServer:
    return AppServer.uvicorn("tests.web_apps:fastapi_as_in_the_readme", env, log)


@pytest.mark.parametrize("case", BAD_URLS)
def test_uvicorn_refuses_to_start_with_a_bad_redis_url(case: str, tmp_path: Path) -> None:
    url, problem = BAD_URLS[case]
    log = tmp_path / "uvicorn.log"
    server = readme_app(server_env(store="redis", redis__url=url), log)
    try:
        code = server.process.wait(30)
    finally:
        server.stop()
    said = log.read_text()
    assert code != 0, said
    assert f"redis.url: {problem}" in said
    assert "startup complete" not in said
    assert "Traceback" not in said  # the message, not a stack


def answer_to_a_write(url: str, log: Path) -> httpx.Response:
    """What the README's app, started on the Redis at `url`, answers a write."""
    server = readme_app(server_env(store="redis", redis__url=url), log)
    try:
        server.wait_ready()  # it starts: what Redis says is known only when asked
        return httpx.post(server.url + "/write", params={"key": "k", "value": "v"}, timeout=10)
    finally:
        server.stop()


def test_a_redis_down_or_refusing_the_database_is_a_503_that_says_so(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    down = RedisServer().start()
    down.cleanup()  # nothing listens there now; it may come up later
    unreachable = answer_to_a_write(down.url, tmp_path / "down.log")
    assert unreachable.status_code == 503
    assert unreachable.text == (
        "503 Service Unavailable: session store unavailable (ConnectionError)\n"
    )
    no_such_db = redis_server.url.rsplit("/", 1)[0] + "/99"  # the server has 16 databases
    refused = answer_to_a_write(no_such_db, tmp_path / "db.log")
    assert refused.status_code == 503
    assert refused.text == (
        "503 Service Unavailable: session store unavailable "
        "(Redis has no database of the number configured)\n"
    )
    assert refused.headers["retry-after"] == "1"
    assert "Traceback" not in (tmp_path / "db.log").read_text()
    for kind in ("flask", "wsgi", "django"):  # the synchronous store says the same
        client = Client(kind, {"store": "redis", "redis": {"url": no_such_db}})
        try:
            reply = client.post("/write", key="k", value="v")
        finally:
            client.close()
        assert (reply.status, reply.text) == (refused.status_code, refused.text), kind


def starlette_without_settings() -> Starlette:
    return Starlette(middleware=[Middleware(SessionMiddleware)])


async def lifespan_start(app: Any) -> dict[str, Any]:
    """What `app` answers a server's lifespan start-up."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "lifespan.startup"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with contextlib.suppress(Exception):  # what a server does with an error is its own
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent[0] if sent else {}


def build(kind: str) -> Any:
    """`kind`'s app with sessionhub added as its users add it, settings from the environment."""
    if kind == "starlette":
        return starlette_without_settings()
    if kind == "litestar":
        return litestar.Litestar([], middleware=[SessionMiddleware.shared()])
    if kind == "quart":
        return quart_integration.SessionHub(quart.Quart(__name__))
    if kind == "flask":
        return flask_integration.SessionHub(flask.Flask(__name__))
    if kind == "wsgi":
        return WSGISessionMiddleware(lambda environ, start_response: [])
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    import tests.web_django  # noqa: F401  (configures Django, with sessionhub's middleware)

    with override_settings(SESSIONHUB={}):  # the settings change: the engine makes them anew
        return WSGIHandler()


@pytest.mark.parametrize("kind", ["starlette", "litestar", "quart", "flask", "wsgi", "django"])
def test_a_bad_redis_url_stops_the_app_being_made(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, problem = BAD_URLS["no such database anywhere"]
    monkeypatch.setenv("SESSIONHUB_STORE", "redis")
    monkeypatch.setenv("SESSIONHUB_REDIS__URL", url)
    if kind == "starlette":  # made lazily: the lifespan's start-up fails instead
        answer = asyncio.run(lifespan_start(starlette_without_settings()))
        assert answer["type"] == "lifespan.startup.failed"
        assert f"redis.url: {problem}" in answer["message"]
        return
    with pytest.raises(ConfigError, match=f"redis.url: {problem}"):
        build(kind)


def test_django_s_own_session_middleware_stops_the_start_up_too() -> None:
    url, problem = BAD_URLS["unknown scheme"]
    start_up = (
        "import tests.web_django\n"
        "from django.conf import settings\n"
        "from django.core.handlers.wsgi import WSGIHandler\n"
        "settings.MIDDLEWARE = ['django.contrib.sessions.middleware.SessionMiddleware']\n"
        "WSGIHandler()\n"
    )
    env = server_env(store="redis", redis__url=url)
    done = subprocess.run(
        [sys.executable, "-c", start_up], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert f"redis.url: {problem}" in done.stderr

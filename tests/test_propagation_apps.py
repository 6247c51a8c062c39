"""Propagation through real apps: the middleware sets the id, each request sends its own.

An ASGI app under uvicorn and a Flask app under a threaded WSGI server each
call a downstream echo server for every request; 100 concurrent requests,
each with its own session, must each reach downstream with their own id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import flask
import httpx
import pytest
import requests
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.serving import make_server

from sessionhub.config import Settings
from sessionhub.demo.processes import free_port
from sessionhub.demo.serving import serving
from sessionhub.propagation import Propagation, current_session_id
from sessionhub.web.asgi import SessionMiddleware
from sessionhub.web.flask import SessionHub
from tests.servers import RedisServer
from tests.test_propagation import other_port, trusted_port

__all__ = ["other_port", "trusted_port"]  # fixtures shared with test_propagation

REQUESTS = 100


def _asgi_app(echo: str, untrusted: str) -> Starlette:
    downstream = Propagation([echo.split("/")[2]]).install(httpx.AsyncClient(timeout=30))

    async def start(request: Request) -> JSONResponse:
        request.session["started"] = True
        return JSONResponse({})

    async def call(request: Request) -> JSONResponse:
        mine = current_session_id()
        seen = (await downstream.get(echo)).json()["id"]
        third_party = (await downstream.get(untrusted)).json()["id"]
        return JSONResponse(
            {"session": request.scope["session"].id, "current": mine, "downstream": seen,
             "third party": third_party}
        )  # fmt: skip

    return Starlette(
        routes=[Route("/start", start, methods=["POST"]), Route("/call", call)],
        middleware=[Middleware(SessionMiddleware, settings=Settings.load(store="memory"))],
    )


def _new_session(response: httpx.Response) -> str:
    """The id a response gave a new session (the client keeps no cookie)."""
    return response.cookies["session"]


async def test_100_concurrent_asgi_requests_each_propagate_their_own_id(
    trusted_port: int, other_port: int
) -> None:
    echo = f"http://127.0.0.1:{trusted_port}/echo"
    untrusted = f"http://127.0.0.1:{other_port}/echo"
    port = free_port()
    async with (
        serving(_asgi_app(echo, untrusted), "127.0.0.1", port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        ids = []
        for _ in range(REQUESTS):
            ids.append(_new_session(await client.post("/start")))
            client.cookies.clear()
        assert len(set(ids)) == REQUESTS
        answers = await asyncio.gather(
            *(client.get("/call", headers={"Cookie": f"session={id}"}) for id in ids)
        )
        anonymous = (await client.get("/call")).json()
    seen = [answer.json() for answer in answers]
    assert [view["session"] for view in seen] == ids
    assert [view["current"] for view in seen] == ids
    assert [view["downstream"] for view in seen] == ids
    assert {view["third party"] for view in seen} == {None}
    assert anonymous == {"session": None, "current": None, "downstream": None, "third party": None}


@pytest.fixture
def flask_server(trusted_port: int, other_port: int) -> Iterator[str]:
    echo = f"http://127.0.0.1:{trusted_port}/echo"
    untrusted = f"http://127.0.0.1:{other_port}/echo"
    propagation = Propagation([f"127.0.0.1:{trusted_port}"])
    local = threading.local()  # requests sessions are not thread-safe: one per server thread

    def downstream() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = propagation.install(requests.Session())
        session: requests.Session = local.session
        return session

    app = flask.Flask(__name__)
    SessionHub(app, settings=Settings.load(store="memory"))

    @app.post("/start")
    def start() -> dict[str, object]:
        flask.session["started"] = True
        return {}

    @app.get("/call")
    def call() -> dict[str, object]:
        return {
            "current": current_session_id(),
            "downstream": downstream().get(echo, timeout=30).json()["id"],
            "third party": downstream().get(untrusted, timeout=30).json()["id"],
        }

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_100_concurrent_wsgi_requests_each_propagate_their_own_id(flask_server: str) -> None:
    ids = [_new_session(httpx.post(f"{flask_server}/start")) for _ in range(REQUESTS)]
    assert len(set(ids)) == REQUESTS

    def call(session_id: str | None) -> dict[str, object]:
        cookie = {"Cookie": f"session={session_id}"} if session_id else {}
        answer: dict[str, object] = httpx.get(f"{flask_server}/call", headers=cookie).json()
        return answer

    # The anonymous requests are mixed in: a thread that served a session must not leak it.
    calls: list[str | None] = [*ids, *([None] * 20)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        seen = list(pool.map(call, calls))
    assert [view["current"] for view in seen] == calls
    assert [view["downstream"] for view in seen] == calls
    assert {view["third party"] for view in seen} == {None}


# -- a client shared by every request keeps no downstream cookie ----------------------


@contextmanager
def _wsgi_served(app: flask.Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    """What the gateways and the downstream service share: one Redis, one namespace."""
    return Settings.load(store="redis", redis={"url": redis_server.url}, namespace="shared")


@pytest.fixture
def visit(settings: Settings) -> Iterator[str]:
    """A downstream sessionhub service that browsers call too: the id by cookie or header.

    A call without an id gets a new session, answered with Set-Cookie.
    """
    app = flask.Flask(__name__)
    SessionHub(app, settings=settings.model_copy(update={"resolvers": ("cookie", "header")}))

    @app.get("/visit")
    def visit() -> dict[str, object]:
        flask.session["visits"] = int(flask.session.get("visits", 0)) + 1
        return {"id": current_session_id()}  # the session the call came with, if any

    with _wsgi_served(app) as url:
        yield f"{url}/visit"


def _flask_gateway(
    settings: Settings, visit: str, client: httpx.Client | requests.Session
) -> flask.Flask:
    """A gateway calling `visit` through one `client`, shared by every request."""
    app = flask.Flask(__name__)
    SessionHub(app, settings=settings)

    @app.post("/start")
    def start() -> dict[str, object]:
        flask.session["started"] = True
        return {}

    @app.get("/call")
    def call() -> dict[str, object]:
        return {"mine": current_session_id(), "downstream": client.get(visit).json()["id"]}

    return app


def _asgi_gateway(settings: Settings, visit: str, client: httpx.AsyncClient) -> Starlette:
    """A gateway calling `visit` through one `client`, shared by every request."""

    async def start(request: Request) -> JSONResponse:
        request.session["started"] = True
        return JSONResponse({})

    async def call(request: Request) -> JSONResponse:
        seen = (await client.get(visit)).json()["id"]
        return JSONResponse({"mine": current_session_id(), "downstream": seen})

    return Starlette(
        routes=[Route("/start", start, methods=["POST"]), Route("/call", call)],
        middleware=[Middleware(SessionMiddleware, settings=settings)],
    )


async def _visit(url: str, method: str = "GET", session_id: str | None = None) -> httpx.Response:
    """A call by a visitor of its own: a new client each time, the cookie only if given."""
    cookie = {"Cookie": f"session={session_id}"} if session_id else {}
    async with httpx.AsyncClient(timeout=30) as visitor:
        return await visitor.request(method, url, headers=cookie)


async def _each_call_reaches_downstream_as_itself(gateway: str) -> None:
    users = [_new_session(await _visit(f"{gateway}/start", "POST")) for _ in range(3)]
    for _ in range(3):
        # Anonymous: the downstream service starts a session and sets its cookie.
        assert (await _visit(f"{gateway}/call")).json() == {"mine": None, "downstream": None}
        for user in users:
            seen = (await _visit(f"{gateway}/call", session_id=user)).json()
            assert seen == {"mine": user, "downstream": user}


@pytest.mark.parametrize("kind", ["httpx", "requests"])
async def test_a_shared_sync_client_never_sends_one_users_cookie_for_another(
    settings: Settings, visit: str, kind: str
) -> None:
    propagation = Propagation([urlsplit(visit).netloc])
    client: httpx.Client | requests.Session = (
        propagation.install(httpx.Client(timeout=30))
        if kind == "httpx"
        else propagation.install(requests.Session())
    )
    with client, _wsgi_served(_flask_gateway(settings, visit, client)) as gateway:
        await _each_call_reaches_downstream_as_itself(gateway)


async def test_a_shared_async_client_never_sends_one_users_cookie_for_another(
    settings: Settings, visit: str
) -> None:
    port = free_port()
    propagation = Propagation([urlsplit(visit).netloc])
    async with (
        propagation.install(httpx.AsyncClient(timeout=30)) as client,
        serving(_asgi_gateway(settings, visit, client), "127.0.0.1", port),
    ):
        await _each_call_reaches_downstream_as_itself(f"http://127.0.0.1:{port}")

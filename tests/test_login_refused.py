"""A login refused by a session limit ("refuse") is a 409, never a 500, in every
integration; `login_now` / `alogin_now` let a view find out first, and Django's
``request.session.save()`` does the same for contrib.auth's login()."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import flask
import httpx
import pytest
import quart
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test.utils import override_settings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import tests.web_django as project
from sessionhub import LoginRefused, Session, auth
from sessionhub.config import Settings
from sessionhub.manager import SessionManager
from sessionhub.stores.memory import MemoryStore
from sessionhub.web.asgi import SessionMiddleware
from sessionhub.web.flask import SessionHub
from sessionhub.web.flow import RequestCommits, SessionFlow
from sessionhub.web.quart import SessionHub as QuartHub
from tests.servers import RedisServer
from tests.web_apps import KINDS, Client

assert project.urlpatterns  # configures Django before anything below runs

REFUSED = "409 Conflict: login refused: this account already has 1 sessions, the most allowed"


@pytest.fixture
def conf(redis_server: RedisServer) -> dict[str, Any]:
    redis_server.client().flushall()
    return {
        "store": "redis",
        "redis": {"url": redis_server.url},
        "session_limit": {"max_sessions": 1, "policy": "refuse"},
    }


# -- at the response's commit: every integration ----------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_login_refused_at_commit_is_a_409(kind: str, conf: dict[str, Any]) -> None:
    client = Client(kind, conf)
    try:
        assert client.post("/login", user="alice").status == 200
        phone = client.cookie
        client.cookie = None
        assert client.post("/write", key="cart", value="pen").status == 200
        laptop = client.cookie
        refused = client.post("/login", user="alice")
        assert refused.status == 409
        assert refused.text.startswith(REFUSED)
        assert "alice" not in refused.text  # the principal is not shown
        assert refused.headers["content-type"].startswith("text/plain")
        assert refused.headers["cache-control"] == "no-store"
        assert refused.set_cookies() == []
        assert client.cookie == laptop  # the laptop's session stays as it was
        assert client.get("/read").json() == {"data": {"cart": "pen"}, "principal": None}
        client.cookie = phone
        assert client.get("/read").json()["principal"] == "alice"
    finally:
        client.close()


# -- login_now: the view finds out ------------------------------------------------------


class Browser:
    """One browser (its own cookie jar) on an app in this process: WSGI, or ASGI
    run in `loop` (the browsers of one app share it, as they share its clients)."""

    def __init__(
        self,
        app: Any,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        login: str = "/login-now",
    ) -> None:
        base = "http://testserver"
        self.login = login  # the path of the view that logs in with login_now
        self.loop = loop
        if loop is not None:
            self.aclient = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base)
        else:
            self.client = httpx.Client(transport=httpx.WSGITransport(app), base_url=base)

    def request(self, method: str, path: str, **params: str) -> httpx.Response:
        if self.loop is not None:
            call = self.aclient.request(method, path, params=params)
            return self.loop.run_until_complete(call)
        return self.client.request(method, path, params=params)

    def cookie(self) -> str | None:
        jar = self.aclient.cookies if self.loop is not None else self.client.cookies
        return jar.get("session")

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.aclient.aclose())
        else:
            self.client.close()


def starlette_app(settings: Settings) -> Starlette:
    async def read(request: Request) -> Response:
        session = auth.sessionhub_session(request.session)
        return JSONResponse({"data": dict(session), "principal": session.principal})

    async def write(request: Request) -> Response:
        request.session[request.query_params["key"]] = request.query_params["value"]
        return PlainTextResponse("written")

    async def login_now(request: Request) -> Response:
        try:
            await auth.alogin_now(request.session, request.query_params["user"])
        except LoginRefused:
            return PlainTextResponse("too many devices", status_code=403)
        return PlainTextResponse("in")

    async def login_uncaught(request: Request) -> Response:
        await auth.alogin_now(request.session, request.query_params["user"])
        return PlainTextResponse("in")

    routes = [
        Route("/read", read),
        Route("/write", write, methods=["POST"]),
        Route("/login-now", login_now, methods=["POST"]),
        Route("/login-uncaught", login_uncaught, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, settings=settings)])


def flask_app(settings: Settings) -> flask.Flask:
    app = flask.Flask(__name__)
    SessionHub(app, settings=settings)

    @app.get("/read")
    def read() -> dict[str, Any]:
        session = auth.sessionhub_session(flask.session)
        return {"data": dict(session), "principal": session.principal}

    @app.post("/write")
    def write() -> str:
        flask.session[flask.request.args["key"]] = flask.request.args["value"]
        return "written"

    @app.post("/login-now")
    def login_now() -> tuple[str, int]:
        try:
            auth.login_now(flask.session, flask.request.args["user"])
        except LoginRefused:
            return "too many devices", 403
        return "in", 200

    @app.post("/login-uncaught")
    def login_uncaught() -> str:
        auth.login_now(flask.session, flask.request.args["user"])
        return "in"

    return app


def quart_app(settings: Settings) -> quart.Quart:
    app = quart.Quart(__name__)
    QuartHub(app, settings=settings)

    @app.get("/read")
    async def read() -> dict[str, Any]:
        session = auth.sessionhub_session(quart.session)
        return {"data": dict(session), "principal": session.principal}

    @app.post("/write")
    async def write() -> str:
        quart.session[quart.request.args["key"]] = quart.request.args["value"]
        return "written"

    @app.post("/login-now")
    async def login_now() -> tuple[str, int]:
        try:
            await auth.alogin_now(quart.session, quart.request.args["user"])
        except LoginRefused:
            return "too many devices", 403
        return "in", 200

    @app.post("/login-uncaught")
    async def login_uncaught() -> str:
        await auth.alogin_now(quart.session, quart.request.args["user"])
        return "in"

    return app


@pytest.fixture(params=["starlette", "quart", "flask", "django-wsgi", "django-asgi"])
def browsers(request: pytest.FixtureRequest, conf: dict[str, Any]) -> Iterator[list[Browser]]:
    """Two browsers on one app of the kind, with a limit of one session per user."""
    kind: str = request.param
    overrides = override_settings(SESSIONHUB=conf, ROOT_URLCONF="tests.web_django_flows")
    overrides.enable()
    app: Any
    if kind == "starlette":
        app = starlette_app(Settings.load(**conf))
    elif kind == "quart":
        app = quart_app(Settings.load(**conf))
    elif kind == "flask":
        app = flask_app(Settings.load(**conf))
    elif kind == "django-wsgi":
        app = WSGIHandler()
    else:
        app = cast(Any, ASGIHandler())
    loop = asyncio.new_event_loop() if kind in ("starlette", "quart", "django-asgi") else None
    login = "/async/login-now" if kind == "django-asgi" else "/login-now"  # an async view
    opened = [Browser(app, loop=loop, login=login) for _ in range(2)]
    try:
        yield opened
    finally:
        for browser in opened:
            browser.close()
        if loop is not None:
            loop.close()
        overrides.disable()


def test_login_now_tells_the_view(browsers: list[Browser]) -> None:
    phone, laptop = browsers
    phone.request("POST", "/write", key="cart", value="book")
    anonymous = phone.cookie()
    assert anonymous is not None
    signed_in = phone.request("POST", phone.login, user="alice")
    assert (signed_in.status_code, signed_in.text) == (200, "in")
    # Committed in the view, yet the response carries the new id.
    assert "session=" in signed_in.headers.get("set-cookie", "")
    assert phone.cookie() not in (None, anonymous)
    assert phone.request("GET", "/read").json() == {"data": {"cart": "book"}, "principal": "alice"}

    laptop.request("POST", "/write", key="cart", value="pen")
    before = laptop.cookie()
    refused = laptop.request("POST", laptop.login, user="alice")
    assert (refused.status_code, refused.text) == (403, "too many devices")  # the view's own
    assert "set-cookie" not in refused.headers
    assert laptop.cookie() == before
    assert laptop.request("GET", "/read").json() == {"data": {"cart": "pen"}, "principal": None}

    uncaught = laptop.request("POST", "/login-uncaught", user="alice")
    assert uncaught.status_code == 409
    assert uncaught.text.startswith(REFUSED)
    assert laptop.request("GET", "/read").json() == {"data": {"cart": "pen"}, "principal": None}
    assert phone.request("GET", "/read").json()["principal"] == "alice"


# -- Django's contrib.auth: login(), then save() ----------------------------------------


@pytest.mark.parametrize("middleware", ["sessionhub", "django"])
def test_django_login_then_save_raises_and_forgets_the_user(
    middleware: str, conf: dict[str, Any]
) -> None:
    project.create_users("alice")
    chain = [
        "sessionhub.web.django.SessionMiddleware"
        if middleware == "sessionhub"
        else "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    with override_settings(
        SESSIONHUB=conf,
        ROOT_URLCONF="tests.web_django_flows",
        MIDDLEWARE=chain,
        SESSION_COOKIE_NAME="session",
    ):
        phone, laptop = Browser(WSGIHandler()), Browser(WSGIHandler())
        try:
            assert phone.request("GET", "/django/login-and-save", user="alice").text == "in"
            assert phone.request("GET", "/django/whoami").json() == {"user": "alice"}
            laptop.request("GET", "/write", key="cart", value="pen")
            refused = laptop.request("GET", "/django/login-and-save", user="alice")
            assert (refused.status_code, refused.text) == (403, "too many devices")
            assert laptop.request("GET", "/django/whoami").json() == {"user": None}
            read = laptop.request("GET", "/read").json()
            assert read == {"data": {"cart": "pen"}, "principal": None}  # no _auth_user_id
            assert phone.request("GET", "/django/whoami").json() == {"user": "alice"}
        finally:
            phone.close()
            laptop.close()


# -- the pieces ---------------------------------------------------------------------------


def test_the_409_is_short_plain_text() -> None:
    response = SessionFlow().refused(LoginRefused("alice", 3))
    assert response.status_line == "409 Conflict"
    assert response.body == (
        b"409 Conflict: login refused: this account already has 3 sessions, the most allowed; "
        b"sign out of one of them first\n"
    )
    assert dict(response.headers) == {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(response.body)),
        "Cache-Control": "no-store",
    }


def test_login_now_outside_a_request_is_an_error_and_changes_nothing() -> None:
    session = SessionManager(MemoryStore()).new_session()
    with pytest.raises(RuntimeError, match="no sessionhub request flow is running here"):
        auth.login_now(session, "alice")
    with pytest.raises(RuntimeError, match="no sessionhub request flow is running here"):
        asyncio.run(auth.alogin_now(session, "alice"))
    assert session.principal is None
    assert not session.modified


def test_commits_refuse_another_session_and_the_wrong_kind_of_app() -> None:
    manager = SessionManager(MemoryStore())
    session: Session = manager.new_session()
    commits = RequestCommits(session, manager)
    with pytest.raises(ValueError, match="only the session of the request"):
        commits.commit(manager.new_session())
    with pytest.raises(RuntimeError, match="use login_now"):
        asyncio.run(commits.acommit(session))

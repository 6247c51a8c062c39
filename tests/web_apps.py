"""The same small application written for every integration, and a client to drive it.

Every app answers:

=================  =========================================================
GET  /anon         "anon", without touching the session
GET  /read         {"data": <the session>, "principal": <its principal>}
POST /write        session[key] = value   (query: key, value)
POST /login        sessionhub.auth.login(session, user)   (query: user)
POST /logout       sessionhub.auth.logout(session)
POST /fail         session[key] = "lost", then answers 500
GET  /identity     one accessor of the session (query: name), JSON, marked
                   cacheable by shared caches (Cache-Control: public)
=================  =========================================================

`make_app(kind, conf)` builds it with `Settings.load(**conf)` the way a user of
that framework would configure sessionhub; `Client` sends requests to it in
process (httpx's ASGI and WSGI transports) and keeps the session cookie by hand,
so tests see exactly what was sent.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import flask
import httpx
import litestar
import pytest
import quart
import redis
import redis.asyncio.connection
import redis.connection
from fastapi import FastAPI
from litestar import MediaType, get, post
from litestar.params import FromQuery
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sessionhub import Session, auth
from sessionhub.config import Settings
from sessionhub.web import flask as flask_integration
from sessionhub.web import quart as quart_integration
from sessionhub.web.asgi import SessionMiddleware
from sessionhub.web.fastapi import CurrentSession
from sessionhub.web.wsgi import SessionMiddleware as WSGISessionMiddleware
from sessionhub.web.wsgi import session_of
from tests.servers import free_port

#: Request headers; bytes values go on the wire as they are (any byte a client may send).
Headers = dict[str, str | bytes]

KINDS = ["starlette", "fastapi", "litestar", "quart", "flask", "wsgi", "django"]
ASGI_KINDS = {"starlette", "fastapi", "litestar", "quart"}


class RoundTrips:
    """Counts the round trips every redis-py connection of this process makes.

    One packed send is one round trip (a command, a script call, a pipeline).
    Redis itself is real; only the counting is added, around the send.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        sync_send: Any = redis.connection.AbstractConnection.send_packed_command
        async_send = redis.asyncio.connection.AbstractConnection.send_packed_command

        def counted(connection: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return sync_send(connection, *args, **kwargs)

        async def acounted(connection: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await async_send(connection, *args, **kwargs)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
        monkeypatch.setattr(
            redis.asyncio.connection.AbstractConnection, "send_packed_command", acounted
        )


def flatten(conf: dict[str, Any], prefix: str = "SESSIONHUB_") -> dict[str, Any]:
    """Nested settings as flat config keys (``SESSIONHUB_COOKIE__NAME``), as Flask takes them."""
    flat: dict[str, Any] = {}
    for key, value in conf.items():
        name = prefix + key.upper()
        if isinstance(value, dict):
            flat.update(flatten(value, name + "__"))
        else:
            flat[name] = value
    return flat


def _value_of(data: Mapping[str, Any]) -> dict[str, Any]:
    return {key: data[key] for key in data}


#: Every accessor of a session's state besides its keys: each is a look at the session.
ACCESSORS = (
    "id",
    "handle",
    "is_new",
    "principal",
    "authenticated_at",
    "created_at",
    "accessed_at",
    "idle_timeout",
    "deadline",
    "expires_at",
    "version",
    "client_info",
    "binding",
    "persistent",
)
PUBLIC = {"Cache-Control": "public, max-age=60"}


def identity(session: Session, name: str) -> str:
    """The JSON of one accessor of `session` (only those of ACCESSORS)."""
    if name not in ACCESSORS:
        raise ValueError(f"not an accessor: {name}")
    return json.dumps(getattr(session, name))


# -- one builder per integration ---------------------------------------------------


def _starlette(conf: dict[str, Any]) -> Any:
    async def anon(request: Request) -> Response:
        return PlainTextResponse("anon")

    async def read(request: Request) -> Response:
        session: Session = request.session  # type: ignore[assignment]
        return JSONResponse({"data": _value_of(session), "principal": session.principal})

    async def write(request: Request) -> Response:
        request.session[request.query_params["key"]] = request.query_params["value"]
        return PlainTextResponse("written")

    async def login(request: Request) -> Response:
        auth.login(request.session, request.query_params["user"])
        return PlainTextResponse("in")

    async def logout(request: Request) -> Response:
        auth.logout(request.session)
        return PlainTextResponse("out")

    async def fail(request: Request) -> Response:
        request.session[request.query_params["key"]] = "lost"
        return PlainTextResponse("failed", status_code=500)

    async def look(request: Request) -> Response:
        value = identity(auth.sessionhub_session(request.session), request.query_params["name"])
        return Response(value, media_type="application/json", headers=PUBLIC)

    routes = [
        Route("/anon", anon),
        Route("/read", read),
        Route("/write", write, methods=["POST"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/fail", fail, methods=["POST"]),
        Route("/identity", look),
    ]
    settings = Settings.load(**conf)
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, settings=settings)])


def _fastapi(conf: dict[str, Any]) -> Any:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, settings=Settings.load(**conf))

    @app.get("/anon", response_class=PlainTextResponse)
    async def anon() -> str:
        return "anon"

    @app.get("/read")
    async def read(session: CurrentSession) -> dict[str, Any]:
        return {"data": _value_of(session), "principal": session.principal}

    @app.post("/write", response_class=PlainTextResponse)
    async def write(session: CurrentSession, key: str, value: str) -> str:
        session[key] = value
        return "written"

    @app.post("/login", response_class=PlainTextResponse)
    async def login(session: CurrentSession, user: str) -> str:
        auth.login(session, user)
        return "in"

    @app.post("/logout", response_class=PlainTextResponse)
    async def logout(session: CurrentSession) -> str:
        auth.logout(session)
        return "out"

    @app.post("/fail", response_class=PlainTextResponse, status_code=500)
    async def fail(session: CurrentSession, key: str) -> str:
        session[key] = "lost"
        return "failed"

    @app.get("/identity")
    async def look(session: CurrentSession, name: str) -> Response:
        return Response(identity(session, name), media_type="application/json", headers=PUBLIC)

    return app


def _litestar(conf: dict[str, Any]) -> Any:
    @get("/anon", media_type=MediaType.TEXT)
    async def anon() -> str:
        return "anon"

    @get("/read")
    async def read(request: litestar.Request[Any, Any, Any]) -> dict[str, Any]:
        session: Session = request.session  # type: ignore[assignment]
        return {"data": _value_of(session), "principal": session.principal}

    @post("/write", media_type=MediaType.TEXT, status_code=200)
    async def write(
        request: litestar.Request[Any, Any, Any], key: FromQuery[str], value: FromQuery[str]
    ) -> str:
        request.session[key] = value
        return "written"

    @post("/login", media_type=MediaType.TEXT, status_code=200)
    async def login(request: litestar.Request[Any, Any, Any], user: FromQuery[str]) -> str:
        auth.login(request.session, user)
        return "in"

    @post("/logout", media_type=MediaType.TEXT, status_code=200)
    async def logout(request: litestar.Request[Any, Any, Any]) -> str:
        request.clear_session()  # Litestar's own way works too
        return "out"

    @post("/fail", media_type=MediaType.TEXT)
    async def fail(
        request: litestar.Request[Any, Any, Any], key: FromQuery[str]
    ) -> litestar.Response[str]:
        request.session[key] = "lost"
        return litestar.Response("failed", status_code=500, media_type=MediaType.TEXT)

    @get("/identity")
    async def look(
        request: litestar.Request[Any, Any, Any], name: FromQuery[str]
    ) -> litestar.Response[str]:
        value = identity(auth.sessionhub_session(request.session), name)
        return litestar.Response(value, media_type=MediaType.JSON, headers=PUBLIC)

    middleware = SessionMiddleware.shared(Settings.load(**conf))
    handlers = [anon, read, write, login, logout, fail, look]
    return litestar.Litestar(handlers, middleware=[middleware])


def _quart(conf: dict[str, Any]) -> Any:
    app = quart.Quart(__name__)
    app.config.update(flatten(conf))
    quart_integration.SessionHub(app)

    @app.get("/anon")
    async def anon() -> str:
        return "anon"

    @app.get("/read")
    async def read() -> dict[str, Any]:
        return {
            "data": dict(quart.session),
            "principal": auth.sessionhub_session(quart.session).principal,
        }

    @app.post("/write")
    async def write() -> str:
        quart.session[quart.request.args["key"]] = quart.request.args["value"]
        return "written"

    @app.post("/login")
    async def login() -> str:
        auth.login(quart.session, quart.request.args["user"])
        return "in"

    @app.post("/logout")
    async def logout() -> str:
        auth.logout(quart.session)
        return "out"

    @app.post("/fail")
    async def fail() -> tuple[str, int]:
        quart.session[quart.request.args["key"]] = "lost"
        return "failed", 500

    @app.get("/identity")
    async def look() -> tuple[str, int, dict[str, str]]:
        value = identity(auth.sessionhub_session(quart.session), quart.request.args["name"])
        return value, 200, {**PUBLIC, "Content-Type": "application/json"}

    return app


def _flask(conf: dict[str, Any]) -> Any:
    app = flask.Flask(__name__)
    app.config.update(flatten(conf))
    flask_integration.SessionHub(app)

    @app.get("/anon")
    def anon() -> str:
        return "anon"

    @app.get("/read")
    def read() -> dict[str, Any]:
        return {
            "data": dict(flask.session),
            "principal": auth.sessionhub_session(flask.session).principal,
        }

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

    @app.post("/fail")
    def fail() -> tuple[str, int]:
        flask.session[flask.request.args["key"]] = "lost"
        return "failed", 500

    @app.get("/identity")
    def look() -> tuple[str, int, dict[str, str]]:
        value = identity(auth.sessionhub_session(flask.session), flask.request.args["name"])
        return value, 200, {**PUBLIC, "Content-Type": "application/json"}

    return app


def _wsgi(conf: dict[str, Any]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        session = session_of(environ)
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        route = environ["PATH_INFO"]
        status, body = "200 OK", route.strip("/")
        if route == "/anon":
            body = "anon"
        elif route == "/read":
            body = json.dumps({"data": _value_of(session), "principal": session.principal})
        elif route == "/write":
            session[query["key"]] = query["value"]
        elif route == "/login":
            auth.login(session, query["user"])
        elif route == "/logout":
            auth.logout(session)
        elif route == "/fail":
            session[query["key"]] = "lost"
            status = "500 Internal Server Error"
        elif route == "/identity":
            body = identity(session, query["name"])
            start_response(status, [("Content-Type", "application/json"), *PUBLIC.items()])
            return [body.encode()]
        else:
            status, body = "404 Not Found", "not found"
        start_response(status, [("Content-Type", "text/plain")])
        return [body.encode()]

    return WSGISessionMiddleware(app, settings=Settings.load(**conf))


def _django(conf: dict[str, Any]) -> Any:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    import tests.web_django  # noqa: F401  (configures Django)

    overrides = override_settings(SESSIONHUB=conf)
    overrides.enable()
    handler = WSGIHandler()
    handler.disable_overrides = overrides.disable  # type: ignore[attr-defined]
    return handler


_BUILDERS = {
    "starlette": _starlette,
    "fastapi": _fastapi,
    "litestar": _litestar,
    "quart": _quart,
    "flask": _flask,
    "wsgi": _wsgi,
    "django": _django,
}


def make_app(kind: str, conf: dict[str, Any]) -> Any:
    return _BUILDERS[kind](conf)


# -- the client --------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    text: str

    def set_cookies(self) -> list[str]:
        # Django writes its Set-Cookie values with a leading space (Morsel.output).
        return [value.strip() for value in self.headers.get_list("set-cookie")]

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    """Requests to an app in this process; keeps one cookie (`cookie_name`) by hand."""

    def __init__(self, kind: str, conf: dict[str, Any], cookie_name: str = "session") -> None:
        self.kind = kind
        self.cookie_name = cookie_name
        self.cookie: str | None = None
        self.app = make_app(kind, conf)
        self._loop: asyncio.AbstractEventLoop | None = None
        if kind in ASGI_KINDS:
            self._loop = asyncio.new_event_loop()
            transport = httpx.ASGITransport(app=self.app)
            self._async = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def request(
        self, method: str, url: str, headers: Headers | None = None, **params: str
    ) -> Reply:
        sent = dict(headers or {})
        if self.cookie is not None and "cookie" not in {k.lower() for k in sent}:
            sent["Cookie"] = f"{self.cookie_name}={self.cookie}"
        if self._loop is not None:
            raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in sent.items()}
            response = self._loop.run_until_complete(
                self._async.request(method, url, headers=raw, params=params)
            )
            self._async.cookies.clear()  # cookies are kept by hand, above
            reply = Reply(response.status_code, response.headers, response.text)
        else:
            path, _, query = url.partition("?")
            query = "&".join(part for part in (query, urlencode(params)) if part)
            reply = _call_wsgi(self.app, method, path, query, sent)
        self._keep_cookie(reply)
        return reply

    def get(self, url: str, headers: Headers | None = None, **params: str) -> Reply:
        return self.request("GET", url, headers, **params)

    def post(self, url: str, headers: Headers | None = None, **params: str) -> Reply:
        return self.request("POST", url, headers, **params)

    def _keep_cookie(self, reply: Reply) -> None:
        for header in reply.set_cookies():
            name, _, rest = header.partition("=")
            if name != self.cookie_name:
                continue
            value = rest.split(";", 1)[0]
            self.cookie = None if "Max-Age=0" in header else value

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self._async.aclose())
            self._loop.close()
        disable = getattr(self.app, "disable_overrides", None)
        if disable is not None:
            disable()


def _call_wsgi(app: Any, method: str, path: str, query: str, headers: Headers) -> Reply:
    """One request to a WSGI app, with headers decoded as latin-1 as servers do (PEP 3333)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": "0",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        environ["HTTP_" + name.upper().replace("-", "_")] = raw.decode("latin-1")
    started: list[Any] = []

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        started[:] = [status, response_headers]
        return lambda data: None

    body = app(environ, start_response)
    try:
        content = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    status, response_headers = started
    return Reply(int(status[:3]), httpx.Headers(response_headers), content.decode())


# -- app servers: real processes serving the apps, configured from the environment alone ---

ROOT = Path(__file__).resolve().parent.parent


def server_env(**settings: str) -> dict[str, str]:
    """This process's environment for an app server, with `settings` as SESSIONHUB_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONHUB_")}
    # The checkout's own source first: a server of another worktree's tree runs its code.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env.update({f"SESSIONHUB_{name.upper()}": value for name, value in settings.items()})
    return env


class AppServer:
    """A uvicorn or gunicorn process on a free loopback port, configured by environment."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    @classmethod
    def uvicorn(cls, factory: str, env: dict[str, str], log: Path) -> AppServer:
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", "--factory", factory,
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
        return cls(argv, port, env, log)

    @classmethod
    def gunicorn(
        cls, app: str, env: dict[str, str], log: Path, workers: int = 2, threads: int = 1
    ) -> AppServer:
        port = free_port()
        argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--threads", str(threads),
                "--log-level", "warning", app]  # fmt: skip
        return cls(argv, port, env, log)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/anon", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"app server did not answer: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def starlette_from_env() -> Any:
    """``uvicorn --factory tests.web_apps:starlette_from_env`` (settings: SESSIONHUB_*)."""
    return _starlette({})


def flask_from_env() -> Any:
    """``gunicorn 'tests.web_apps:flask_from_env()'`` (settings: SESSIONHUB_*)."""
    return _flask({})


def fastapi_as_in_the_readme() -> Any:
    """``uvicorn --factory tests.web_apps:fastapi_as_in_the_readme``: the middleware added
    without settings, as the README does, so FastAPI builds it (and the settings) when the
    server starts it, not when the app is made."""
    app = FastAPI()
    app.add_middleware(SessionMiddleware)

    @app.get("/anon", response_class=PlainTextResponse)
    async def anon() -> str:
        return "anon"

    @app.post("/write", response_class=PlainTextResponse)
    async def write(session: CurrentSession, key: str, value: str) -> str:
        session[key] = value
        return "written"

    return app

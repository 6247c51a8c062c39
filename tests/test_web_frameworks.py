"""What each integration adds of its own: framework idioms, streaming, WebSockets, edge cases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import flask
import httpx
import litestar
import pytest
import quart
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionhub import Session
from sessionhub.auth import alogin_now, login_now, sessionhub_session
from sessionhub.config import Settings
from sessionhub.ids import IdScheme
from sessionhub.propagation import current_session_id
from sessionhub.web import flask as flask_integration
from sessionhub.web import quart as quart_integration
from sessionhub.web.asgi import SessionMiddleware
from sessionhub.web.fastapi import CurrentSession
from sessionhub.web.flow import merge_headers
from sessionhub.web.wsgi import SessionMiddleware as WSGISessionMiddleware
from sessionhub.web.wsgi import session_of
from tests.servers import free_port
from tests.web_apps import Headers, Reply, _call_wsgi

MEMORY = Settings.load(store="memory")


def asgi_call(app: Any, method: str, url: str, headers: dict[str, str] | None = None) -> Reply:
    async def call() -> Reply:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.request(method, url, headers=headers)
        return Reply(response.status_code, response.headers, response.text)

    return asyncio.run(call())


def cookie_value(reply: Reply, name: str = "session") -> str:
    [header] = [c for c in reply.set_cookies() if c.startswith(name + "=")]
    return header.split(";")[0].split("=", 1)[1]


# -- ASGI -----------------------------------------------------------------------------


def starlette_app(settings: Settings, *routes: Route | WebSocketRoute) -> Starlette:
    return Starlette(
        routes=list(routes), middleware=[Middleware(SessionMiddleware, settings=settings)]
    )


def test_in_place_changes_and_the_current_id_in_a_view() -> None:
    seen: list[str | None] = []

    async def cart(request: Request) -> Response:
        session: Session = request.session  # type: ignore[assignment]
        seen.append(current_session_id())
        if "cart" not in session:
            session["cart"] = {"pear": 1}
        else:
            cart: dict[str, int] = session["cart"]  # type: ignore[assignment]
            cart["pear"] += 1  # no re-assignment: saved all the same
        return JSONResponse(dict(session))

    app = starlette_app(Settings.load(), Route("/cart", cart))
    first = asgi_call(app, "GET", "/cart")
    session_id = cookie_value(first)
    second = asgi_call(app, "GET", "/cart", {"Cookie": f"session={session_id}"})
    third = asgi_call(app, "GET", "/cart", {"Cookie": f"session={session_id}"})
    assert [first.json(), second.json(), third.json()] == [
        {"cart": {"pear": 1}},
        {"cart": {"pear": 2}},
        {"cart": {"pear": 3}},
    ]
    assert seen == [None, session_id, session_id]  # what propagation sends downstream
    assert current_session_id() is None


def test_remember_me_gives_a_lasting_cookie() -> None:
    async def remember(request: Request) -> Response:
        session: Session = request.session  # type: ignore[assignment]
        session["user"] = "u1"
        session.remember(idle=14 * 86400, absolute=30 * 86400)
        return PlainTextResponse("ok")

    reply = asgi_call(starlette_app(Settings.load(), Route("/r", remember)), "GET", "/r")
    [header] = reply.set_cookies()
    assert "Max-Age=1209600" in header
    assert "Expires=" in header


def test_a_remembered_session_s_cookie_follows_its_sliding_expiry() -> None:
    async def write(request: Request) -> Response:
        session: Session = request.session  # type: ignore[assignment]
        session["user"] = "u1"
        if "remember" in request.query_params:
            session.remember(idle=3600)
        return PlainTextResponse("ok")

    async def read(request: Request) -> Response:
        return JSONResponse(dict(request.session))

    settings = Settings.load(timeouts={"idle": 60, "refresh_share": 0})  # every read slides
    app = starlette_app(settings, Route("/write", write), Route("/read", read))
    remembered = cookie_value(asgi_call(app, "GET", "/write?remember=1"))
    ordinary = cookie_value(asgi_call(app, "GET", "/write"))
    time.sleep(0.01)
    slid = asgi_call(app, "GET", "/read", {"Cookie": f"session={remembered}"})
    [header] = slid.set_cookies()
    assert header.startswith(f"session={remembered}; Path=/; Max-Age=3600; Expires=")
    # An ordinary session's browser-session cookie has nothing to update.
    assert asgi_call(app, "GET", "/read", {"Cookie": f"session={ordinary}"}).set_cookies() == []


def test_the_app_s_own_headers_are_merged() -> None:
    async def page(request: Request) -> Response:
        request.session["seen"] = True
        return PlainTextResponse(
            "hi", headers={"Cache-Control": "public, max-age=60", "Vary": "Accept-Language"}
        )

    reply = asgi_call(starlette_app(Settings.load(), Route("/", page)), "GET", "/")
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["vary"] == "Accept-Language, Cookie"


def test_a_streaming_response_gets_its_cookie_at_the_start() -> None:
    async def stream(request: Request) -> Response:
        request.session["streamed"] = True

        async def body() -> Any:
            for part in ("a", "b", "c"):
                yield part

        return StreamingResponse(body(), media_type="text/plain")

    reply = asgi_call(starlette_app(Settings.load(), Route("/s", stream)), "GET", "/s")
    assert reply.text == "abc"
    assert len(reply.set_cookies()) == 1


def test_replacing_the_session_with_something_else_is_refused() -> None:
    async def swap(request: Request) -> Response:
        request.scope["session"] = ["not", "a", "mapping"]
        return PlainTextResponse("ok")

    with pytest.raises(TypeError, match=r'scope\["session"\] was replaced by a list'):
        asgi_call(starlette_app(Settings.load(), Route("/", swap)), "GET", "/")


def asgi_exchange(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[Any]:
    """Run one ASGI connection: feed `incoming`, then wait; what the app sent."""
    sent: list[Any] = []

    async def run() -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in incoming:
            queue.put_nowait(message)

        async def receive() -> dict[str, Any]:
            return await queue.get()

        async def send(message: Any) -> None:
            sent.append(message)

        await asyncio.wait_for(app(scope, receive, send), timeout=10)

    asyncio.run(run())
    return sent


def websocket_scope(cookie: str) -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(b"cookie", cookie.encode())],
        "subprotocols": [],
    }


def http_scope(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": headers or [],
    }


@pytest.mark.parametrize(
    ("looks", "headers", "expected"),
    [
        # As ASGI asks (lower-case names, no Vary of its own): Vary is added, the rest kept.
        (
            True,
            [(b"content-type", b"text/plain"), (b"x-trace", b"t1")],
            [(b"content-type", b"text/plain"), (b"x-trace", b"t1"), (b"vary", b"Cookie")],
        ),
        # The application's own Vary: merged with ours.
        (
            True,
            [(b"vary", b"Accept-Encoding"), (b"content-type", b"text/plain")],
            [(b"content-type", b"text/plain"), (b"vary", b"Accept-Encoding, Cookie")],
        ),
        # Names not in lower case are lower-cased, as by every merge.
        (
            True,
            [(b"Content-Type", b"text/plain")],
            [(b"content-type", b"text/plain"), (b"vary", b"Cookie")],
        ),
        # A session nobody looked at: the headers pass as they were sent.
        (False, [(b"Content-Type", b"text/plain")], [(b"Content-Type", b"text/plain")]),
    ],
)
def test_asgi_vary_joins_the_app_s_headers(
    looks: bool, headers: list[tuple[bytes, bytes]], expected: list[tuple[bytes, bytes]]
) -> None:
    sent_headers = list(headers)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if looks:
            scope["session"].get("user")
        await send({"type": "http.response.start", "status": 200, "headers": sent_headers})
        await send({"type": "http.response.body", "body": b"ok"})

    start, body = asgi_exchange(SessionMiddleware(app, settings=MEMORY), http_scope(), [])
    assert start["headers"] == expected
    assert sent_headers == headers  # the application's list is left as it was
    assert body == {"type": "http.response.body", "body": b"ok"}


_APP_HEADER_NAMES = [b"content-type", b"set-cookie", b"cache-control", b"vary", b"Vary", b"x-a"]


@settings(max_examples=150, deadline=None)
@given(
    headers=st.lists(
        st.tuples(st.sampled_from(_APP_HEADER_NAMES), st.sampled_from([b"a", b"b, c", b"Cookie"])),
        max_size=4,
    ),
    new_session=st.booleans(),
)
def test_asgi_headers_are_what_merge_headers_makes(
    headers: list[tuple[bytes, bytes]], new_session: bool
) -> None:
    """Appending without a merge (when nothing clashes) gives what the merge gives."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if new_session:
            scope["session"]["cart"] = 1  # Set-Cookie, Cache-Control and Vary
        else:
            scope["session"].get("user")  # Vary alone
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"ok"})

    start, _ = asgi_exchange(SessionMiddleware(app, settings=MEMORY), http_scope(), [])
    ours = [("Vary", "Cookie")]
    if new_session:
        [cookie] = [v.decode() for k, v in start["headers"] if v.startswith(b"session=")]
        ours += [("Set-Cookie", cookie), ("Cache-Control", "no-store")]
    existing = [(k.decode(), v.decode()) for k, v in headers]
    expected = [(k.lower().encode(), v.encode()) for k, v in merge_headers(existing, ours)]
    assert start["headers"] == expected


def test_a_login_in_the_view_of_a_session_ended_elsewhere_is_a_409_asgi() -> None:
    """The view's login_now finds the session ended by another request: the view
    is told (SessionEnded), and, let through, it is a 409 that leaves the
    cookie alone (only the ending request clears it)."""
    settings = Settings.load(store="memory")
    elsewhere = settings.async_session_manager()  # the same memory store

    async def write(request: Request) -> Response:
        request.session["cart"] = "1 pear"
        return PlainTextResponse("ok")

    async def login(request: Request) -> Response:
        session = sessionhub_session(request.session)
        assert session.handle is not None
        await elsewhere.end_session(session.handle)
        await alogin_now(session, "alice")
        return PlainTextResponse("in")

    app = starlette_app(settings, Route("/write", write), Route("/login", login))
    session_id = cookie_value(asgi_call(app, "GET", "/write"))
    reply = asgi_call(app, "GET", "/login", {"Cookie": f"session={session_id}"})
    assert reply.status == 409
    assert "ended while this request ran" in reply.text
    assert reply.set_cookies() == []
    assert reply.headers["cache-control"] == "no-store"


def test_websockets_read_the_session() -> None:
    async def write(request: Request) -> Response:
        request.session["name"] = "ws-user"
        return PlainTextResponse("ok")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(dict(websocket.session))
        await websocket.close()

    app = starlette_app(Settings.load(), Route("/write", write), WebSocketRoute("/ws", echo))
    session_id = cookie_value(asgi_call(app, "GET", "/write"))
    sent = asgi_exchange(
        app, websocket_scope(f"session={session_id}"), [{"type": "websocket.connect"}]
    )
    assert [message["type"] for message in sent] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert json.loads(sent[1]["text"]) == {"name": "ws-user"}


def test_websockets_are_closed_when_the_store_is_down() -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()

    settings = Settings.load(
        store="redis",
        redis={"url": f"redis://127.0.0.1:{free_port()}/0", "connect_timeout": 0.2},
    )
    app = starlette_app(settings, WebSocketRoute("/ws", echo))
    scope = websocket_scope(f"session={IdScheme().new().id}")
    [closed] = asgi_exchange(app, scope, [{"type": "websocket.connect"}])
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 1013
    assert "session store unavailable" in closed["reason"]


def test_lifespan_passes_through() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(lifespan=lifespan, middleware=[Middleware(SessionMiddleware, settings=MEMORY)])
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = asgi_exchange(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, incoming)
    assert events == ["startup", "shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_fastapi_dependency_needs_the_middleware() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(session: CurrentSession) -> dict[str, Any]:
        return dict(session)

    with pytest.raises(RuntimeError, match=r"add sessionhub\.web\.asgi\.SessionMiddleware"):
        asgi_call(app, "GET", "/")


def test_litestar_set_session_replaces_the_contents() -> None:
    @litestar.post("/set", status_code=200)
    async def set_session(request: litestar.Request[Any, Any, Any]) -> str:
        request.set_session({"replaced": True})
        return "ok"

    @litestar.get("/read")
    async def read(request: litestar.Request[Any, Any, Any]) -> dict[str, Any]:
        return dict(request.session)

    middleware = SessionMiddleware.shared(MEMORY)
    app = litestar.Litestar([set_session, read], middleware=[middleware])
    first = asgi_call(app, "POST", "/set")
    session_id = cookie_value(first)
    again = asgi_call(app, "GET", "/read", {"Cookie": f"session={session_id}"})
    assert again.json() == {"replaced": True}


def test_quart_permanent_sessions() -> None:
    app = quart.Quart(__name__)
    app.config["PERMANENT_SESSION_LIFETIME"] = 3600
    quart_integration.SessionHub(app, settings=Settings.load())

    @app.get("/")
    async def index() -> str:
        quart.session["user"] = "q"
        quart.session.permanent = True
        return "ok"

    [header] = asgi_call(app, "GET", "/").set_cookies()
    assert "Max-Age=3600" in header


# -- WSGI and Flask -------------------------------------------------------------------


def test_wsgi_app_that_starts_its_response_lazily() -> None:
    def lazy(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        session_of(environ)["lazy"] = True
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"one"
        yield b"two"

    reply = _call_wsgi(WSGISessionMiddleware(lazy, settings=MEMORY), "GET", "/", "", {})
    assert reply.text == "onetwo"
    assert len(reply.set_cookies()) == 1


def test_wsgi_store_down_with_a_lazy_app_answers_503() -> None:
    closed: list[bool] = []

    class Body:
        def __init__(self, start_response: Any) -> None:
            self.start_response = start_response

        def __iter__(self) -> Iterator[bytes]:
            self.start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"never sent"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        session_of(environ)["x"] = 1
        return Body(start_response)

    settings = Settings.load(
        store="redis", redis={"url": f"redis://127.0.0.1:{free_port()}/0", "connect_timeout": 0.2}
    )
    reply = _call_wsgi(WSGISessionMiddleware(app, settings=settings), "GET", "/", "", {})
    assert reply.status == 503
    assert reply.text.startswith("503 Service Unavailable: session store unavailable")
    assert closed == [True]


def test_session_of_without_the_middleware() -> None:
    with pytest.raises(
        RuntimeError, match=r"wrap the app in sessionhub\.web\.wsgi\.SessionMiddleware"
    ):
        session_of({})


def wsgi_start(app: Any) -> list[tuple[str, str]]:
    """The headers `app` starts its response with."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": None}
    assert b"".join(app(environ, start_response)) == b"ok"
    headers: list[tuple[str, str]] = started[1]
    return headers


@pytest.mark.parametrize(
    ("looks", "headers", "expected"),
    [
        (
            True,
            [("Content-Type", "text/plain"), ("X-Trace", "t1")],
            [("Content-Type", "text/plain"), ("X-Trace", "t1"), ("Vary", "Cookie")],
        ),
        (
            True,
            [("vary", "Accept-Encoding"), ("Content-Type", "text/plain")],
            [("Content-Type", "text/plain"), ("Vary", "Accept-Encoding, Cookie")],
        ),
        (False, [("Content-Type", "text/plain")], [("Content-Type", "text/plain")]),
    ],
)
def test_wsgi_vary_joins_the_app_s_headers(
    looks: bool, headers: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    sent_headers = list(headers)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if looks:
            session_of(environ).get("user")
        start_response("200 OK", sent_headers)
        return [b"ok"]

    assert wsgi_start(WSGISessionMiddleware(app, settings=MEMORY)) == expected
    assert sent_headers == headers


def test_a_login_in_the_view_of_a_session_ended_elsewhere_is_a_409_wsgi() -> None:
    settings = Settings.load(store="memory")
    elsewhere = settings.session_manager()  # the same memory store

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        session = session_of(environ)
        if environ["PATH_INFO"] == "/write":
            session["cart"] = "1 pear"
        else:
            assert session.handle is not None
            elsewhere.end_session(session.handle)
            login_now(session, "alice")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = WSGISessionMiddleware(app, settings=settings)
    written = _call_wsgi(middleware, "GET", "/write", "", {})
    session_id = written.set_cookies()[0].split(";")[0].split("=", 1)[1]
    reply = _call_wsgi(middleware, "GET", "/login", "", {"Cookie": f"session={session_id}"})
    assert reply.status == 409
    assert reply.set_cookies() == []
    assert reply.headers["cache-control"] == "no-store"


def flask_app(**config: Any) -> flask.Flask:
    app = flask.Flask(__name__)
    app.testing = True  # the test client raises what the view raised
    app.config.update(config)
    flask_integration.SessionHub(app)
    return app


def test_flask_permanent_new_and_modified() -> None:
    app = flask_app(PERMANENT_SESSION_LIFETIME=7200)
    seen: dict[str, Any] = {}

    @app.get("/")
    def index() -> str:
        seen["new"] = flask.session.new
        flask.session["user"] = "f"
        flask.session.permanent = True
        seen["permanent"] = flask.session.permanent
        seen["modified"] = flask.session.modified
        return "ok"

    @app.get("/forget")
    def forget() -> str:
        flask.session.permanent = False
        return "unreachable"

    reply = _call_wsgi(app, "GET", "/", "", {})
    assert "Max-Age=7200" in reply.set_cookies()[0]
    assert seen == {"new": True, "permanent": True, "modified": True}
    cookie: Headers = {"Cookie": f"session={cookie_value(reply)}"}
    with pytest.raises(ValueError, match="cannot be made temporary again"):
        _call_wsgi(app, "GET", "/forget", "", cookie)


def test_flask_config_keys_configure_the_extension() -> None:
    app = flask_app(SESSIONHUB_COOKIE__NAME="flask_sid", SESSIONHUB_COOKIE__SAME_SITE="Strict")

    @app.get("/")
    def index() -> str:
        flask.session["a"] = 1
        return "ok"

    [header] = _call_wsgi(app, "GET", "/", "", {}).set_cookies()
    assert header.startswith("flask_sid=")
    assert "SameSite=Strict" in header
    assert isinstance(app.extensions["sessionhub"], WSGISessionMiddleware)


def test_flask_without_the_middleware_says_why() -> None:
    app = flask_app()
    with app.test_request_context("/"):
        assert dict(flask.session) == {}
        with pytest.raises(RuntimeError, match="no sessionhub session for this request"):
            flask.session["x"] = 1


def test_flask_session_values_must_be_json() -> None:
    app = flask_app()

    @app.get("/")
    def index() -> str:
        flask.session["when"] = object()
        return "unreachable"

    with pytest.raises(TypeError, match="session attribute 'when'"):
        _call_wsgi(app, "GET", "/", "", {})


def test_flask_json_round_trip() -> None:
    app = flask_app()

    @app.post("/")
    def store() -> str:
        flask.session.update({"n": 1, "items": ["a"]})
        return "ok"

    @app.get("/")
    def read() -> str:
        return json.dumps(dict(flask.session))

    session_id = cookie_value(_call_wsgi(app, "POST", "/", "", {}))
    reply = _call_wsgi(app, "GET", "/", "", {"Cookie": f"session={session_id}"})
    assert json.loads(reply.text) == {"n": 1, "items": ["a"]}

"""Property tests over everything a client or a corrupted store can feed sessionhub.

* cookie and id-header parsing: any header value is either an id candidate or
  nothing, never an exception;
* the id shape check: only exactly what the scheme issues is accepted;
* stored-data decoding: any bytes under a session's key give a session (a new
  one when they cannot be read), never an exception;
* the integrations: any Cookie, X-Session-Id, User-Agent or X-Forwarded-For
  value through a real ASGI app (Starlette) and real WSGI apps (Flask, a plain
  WSGI app) gives no 500, and a value that cannot be an id costs no store call.

Examples per test are bounded (`examples`); ``SESSIONHUB_FUZZ_SCALE=20`` runs
twenty times as many. Under ``CI=true`` the examples are derandomized
(tests/conftest.py). tests/atheris_fuzz.py fuzzes the pure parsers with
coverage guidance; `test_atheris_run` runs it for a bounded number of inputs.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import flask
import pytest
import redis
import redis.asyncio
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionhub import (
    AsyncRedisStore,
    AsyncSessionManager,
    Lifecycle,
    RedisStore,
    Session,
    SessionEnded,
    SessionManager,
    auth,
)
from sessionhub.config import Settings
from sessionhub.crypto import EncryptedCodec, new_key
from sessionhub.ids import MAX_ID_LENGTH, IdScheme, is_handle
from sessionhub.web import flask as flask_integration
from sessionhub.web.asgi import SessionMiddleware
from sessionhub.web.binding import ClientBinding, forwarded_for
from sessionhub.web.flow import SessionFlow
from sessionhub.web.resolvers import CookiePolicy, CookieResolver, HeaderResolver
from sessionhub.web.wsgi import SessionMiddleware as WSGISessionMiddleware
from sessionhub.web.wsgi import session_of
from tests.conftest import (
    AsyncCountingConnection,
    CountingConnection,
    async_counting_client,
    counting_client,
)
from tests.harness import session_records
from tests.servers import RedisServer
from tests.web_apps import _call_wsgi

SCALE = int(os.environ.get("SESSIONHUB_FUZZ_SCALE", "1"))


def examples(count: int) -> settings:
    """Hypothesis settings for `count` examples (times SESSIONHUB_FUZZ_SCALE)."""
    return settings(max_examples=count * SCALE)


# The shape of an id, written out here independently of sessionhub.ids.
ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{44}")
SCHEME = IdScheme()

# -- strategies ----------------------------------------------------------------------

URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Anything a header value may hold once a server decoded it (latin-1).
header_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=400)


@st.composite
def near_ids(draw: st.DrawFn) -> str:
    """Ids of the right shape, and ids one edit away from it."""
    valid = draw(st.text(st.sampled_from(URLSAFE), min_size=44, max_size=44))
    edit = draw(st.sampled_from(["none", "replace", "insert", "delete", "case", "pad"]))
    at = draw(st.integers(0, 43))
    other = draw(st.characters(min_codepoint=0, max_codepoint=0x2FFF))
    if edit == "replace":
        return valid[:at] + other + valid[at + 1 :]
    if edit == "insert":
        return valid[:at] + other + valid[at:]
    if edit == "delete":
        return valid[:at] + valid[at + 1 :]
    if edit == "case":
        return valid.swapcase()
    if edit == "pad":
        return draw(st.sampled_from([" ", "\t", "=", '"', "%20"])) + valid
    return valid


any_id = st.one_of(near_ids(), st.text(max_size=300), header_text)

#: Cookie names and values that cannot change how the header splits.
cookie_name = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=";="), min_size=1
).filter(lambda name: name.strip() != "session")
cookie_value = st.text(st.characters(min_codepoint=0, max_codepoint=0xFF, exclude_characters=";"))
junk_pairs = st.lists(st.tuples(cookie_name, cookie_value).map("=".join), max_size=6)


class CookieCase(NamedTuple):
    header: str
    value: str | None  # the session cookie taken, unquoted (None: no session cookie)
    calls: int  # the store calls it may cost: 1 if it holds an id


def _unquoted(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


@st.composite
def cookie_headers(draw: st.DrawFn) -> CookieCase:
    """A Cookie header among others, with or without the session cookie."""
    before, after = draw(junk_pairs), draw(junk_pairs)
    kind = draw(st.sampled_from(["none", "id", "quoted id", "not an id"]))
    if kind == "none":
        return CookieCase("; ".join(before + after), None, 0)
    if kind == "not an id":
        value = draw(cookie_value.filter(lambda v: not ID_SHAPE.fullmatch(_unquoted(v))))
    else:
        value = SCHEME.new().id
        value = f'"{value}"' if kind == "quoted id" else value
    # A later "session" cookie (another path's, a parent domain's) is a candidate too:
    # the first well-formed one is the id, so it counts when the first is no id.
    later = draw(st.sampled_from([None, SCHEME.new().id]))
    header = "; ".join([*before, f"session={value}", *after])
    header += "" if later is None else f"; session={later}"
    if kind == "not an id":
        return CookieCase(header, later or _unquoted(value), 0 if later is None else 1)
    return CookieCase(header, _unquoted(value), 1)


# -- parsing, without a store --------------------------------------------------------


@examples(1000)
@given(header_text)
def test_any_cookie_header_parses_to_values_or_nothing(header: str) -> None:
    values = CookiePolicy().values(header)
    assert all(value in header for value in values)
    candidates = CookieResolver().candidates({"cookie": header})
    assert len(candidates) == len(values)
    for presented, value in zip(candidates, values, strict=True):
        assert (presented.value is None) == (len(value) > MAX_ID_LENGTH)


@examples(500)
@given(cookie_headers())
def test_our_cookie_is_found_among_any_others(case: CookieCase) -> None:
    presented = SessionFlow().read_id({"cookie": case.header})
    if case.value is None:
        assert presented is None
        return
    assert presented is not None
    assert presented.value == (case.value if len(case.value) <= MAX_ID_LENGTH else None)
    taken = presented.value is not None and SCHEME.parse(presented.value) is not None
    assert taken == (case.calls == 1)


@examples(500)
@given(header_text)
def test_any_id_header_value_is_a_candidate(value: str) -> None:
    [presented] = HeaderResolver().candidates({"x-session-id": value})
    expected = value.strip() if len(value.strip()) <= MAX_ID_LENGTH else None
    assert presented.value == expected


@examples(2000)
@given(any_id)
def test_only_the_issued_shape_is_accepted(raw: str) -> None:
    ref = SCHEME.parse(raw)
    assert (ref is not None) == bool(ID_SHAPE.fullmatch(raw))
    if ref is not None:
        assert ref.id == raw
        assert is_handle(ref.handle)
        assert ref.handle == SCHEME.parse(raw).handle  # type: ignore[union-attr]


@examples(200)
@given(st.integers(0, 63))
def test_issued_ids_parse_back(shard: int) -> None:
    ref = SCHEME.new(URLSAFE[shard])
    assert ID_SHAPE.fullmatch(ref.id)
    assert SCHEME.parse(ref.id) == ref


# -- stored-data decoding, on a real Redis --------------------------------------------

META_NAMES = [b"!p", b"!a", b"!c", b"!b", b"!u", b"!r", b"!", b'"cart"', b'"x"', b"cart", b""]
number = st.one_of(
    st.integers(0, 2**53).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "1e3", "0x10", "1_000", " 7", "9" * 400, "nan", "-0"]),
)
line_bytes = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b""))


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """Stored blobs: random bytes, and records damaged in every part."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    head = " ".join(draw(st.lists(number, min_size=4, max_size=6)))
    fields = draw(
        st.lists(
            st.tuples(st.one_of(st.sampled_from(META_NAMES), line_bytes), line_bytes),
            max_size=6,
        )
    )
    separator = draw(st.sampled_from([b"\t", b"", b" "]))
    lines = [name + separator + value for name, value in fields]
    return b"\n".join([head.encode(), *lines])


@pytest.fixture(scope="module")
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture(scope="module", params=["json", "encrypted"])
def manager(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[SessionManager]:
    codec = EncryptedCodec({"k1": new_key()}) if request.param == "encrypted" else None
    client = counting_client(redis_server.port)
    yield SessionManager(RedisStore(client), lifecycle=Lifecycle(codec=codec))
    client.close()


HEADER = b"1764063375000 1764063375000 1800000 1764106575000 3"


@examples(300)
@given(blob=records())
# What this test found (each failed a property read or the commit, not the load):
@example(blob=b"1_000 1_000 1800000 9999999999999 1")  # Python read it, Lua did not
@example(blob=b" ".join([b"9" * 400] * 5))  # too large for a float
@example(blob=HEADER + b"\n!a\tyesterday")
@example(blob=HEADER + b"\n!c\t[1, 2]")
@example(blob=HEADER + b'\n!b\t\xff\xfe\n"x"\t1')
def test_any_stored_bytes_give_a_session(
    blob: bytes, manager: SessionManager, raw_redis: redis.Redis
) -> None:
    ref = SCHEME.new()
    key = manager.store.commands.key(ref.handle)  # type: ignore[attr-defined]
    raw_redis.set(key, blob, px=60_000)
    session = manager.load(ref.id)
    assert isinstance(session, Session)
    # Whatever was loaded can be read and used like any session.
    dict(session)
    _ = (session.principal, session.expires_at, session.persistent, session.client_info)
    _ = session.authenticated_at
    session["visited"] = True
    try:
        outcome = manager.commit(session)
    except SessionEnded:
        return  # its header left it no time to live: the commit found it ended
    assert outcome.id is not None
    assert manager.load(outcome.id)["visited"] is True


# -- the integrations: real apps, any header ------------------------------------------


def _starlette(port: int, conf: dict[str, Any]) -> Any:
    async def read(request: Request) -> Response:
        return JSONResponse(dict(request.session))

    async def write(request: Request) -> Response:
        request.session["n"] = request.session.get("n", 0) + 1
        auth.login(request.session, "fuzz")
        return JSONResponse(dict(request.session))

    settings = Settings.load(**conf)
    client = async_counting_client(port)
    manager = AsyncSessionManager(AsyncRedisStore(client), lifecycle=settings.lifecycle())
    return SessionMiddleware(
        Starlette(routes=[Route("/read", read), Route("/write", write, methods=["POST"])]),
        manager=manager,
        flow=settings.flow(),
    )


def _flask(port: int, conf: dict[str, Any]) -> Any:
    app = flask.Flask(__name__)
    flask_integration.SessionHub(app, settings=Settings.load(**conf))

    @app.get("/read")
    def read() -> dict[str, Any]:
        return dict(flask.session)

    @app.post("/write")
    def write() -> dict[str, Any]:
        flask.session["n"] = flask.session.get("n", 0) + 1
        auth.login(flask.session, "fuzz")
        return dict(flask.session)

    # The counting client in place of the one the settings made.
    middleware: WSGISessionMiddleware = app.extensions["sessionhub"]
    middleware.manager = SessionManager(RedisStore(counting_client(port)))
    return app


def _plain_wsgi(port: int, conf: dict[str, Any]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = session_of(environ)
        if environ["REQUEST_METHOD"] == "POST":
            count = session.get("n")
            session["n"] = count + 1 if isinstance(count, int) else 1
            auth.login(session, "fuzz")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(dict(session)).encode()]

    settings = Settings.load(**conf)
    manager = SessionManager(RedisStore(counting_client(port)), lifecycle=settings.lifecycle())
    return WSGISessionMiddleware(app, manager=manager, flow=settings.flow())


class Apps:
    """One app per integration, all on the test Redis, with counted round trips."""

    KINDS = ("starlette", "flask", "wsgi")

    def __init__(self, port: int, conf: dict[str, Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self.apps = {
            "starlette": _starlette(port, conf),
            "flask": _flask(port, conf),
            "wsgi": _plain_wsgi(port, conf),
        }

    def request(
        self, kind: str, method: str, path: str, headers: dict[str, bytes]
    ) -> tuple[int, list[tuple[str, str]]]:
        """(status, response headers) of one request."""
        if kind == "starlette":
            return self.loop.run_until_complete(self._asgi(method, path, headers))
        reply = _call_wsgi(self.apps[kind], method, path, "", dict(headers))
        return reply.status, list(reply.headers.multi_items())

    async def _asgi(
        self, method: str, path: str, headers: dict[str, bytes]
    ) -> tuple[int, list[tuple[str, str]]]:
        # Straight to the app, as a server would call it: any bytes get through.
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(name.lower().encode(), value) for name, value in headers.items()],
            "client": ("203.0.113.7", 50000),
            "server": ("testserver", 80),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.apps["starlette"](scope, receive, send)
        start = sent[0]
        raw = start.get("headers", [])
        return start["status"], [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]

    @staticmethod
    def round_trips() -> int:
        return CountingConnection.sent + AsyncCountingConnection.sent

    def close(self) -> None:
        self.loop.close()


@pytest.fixture(scope="module")
def apps(redis_server: RedisServer) -> Iterator[Apps]:
    conf = {"resolvers": ["cookie", "header"]}
    apps = Apps(redis_server.port, conf)
    for kind in Apps.KINDS:  # connections opened, scripts loaded
        apps.request(kind, "GET", "/read", {"x-session-id": SCHEME.new().id.encode()})
    yield apps
    apps.close()


@pytest.fixture(scope="module")
def bound_apps(redis_server: RedisServer) -> Iterator[Apps]:
    binding = ClientBinding(action="end", client_ip=forwarded_for(1))
    apps = Apps(redis_server.port, {"client_binding": binding})
    yield apps
    apps.close()


def _latin1(text: str) -> bytes:
    return text.encode("latin-1")


def session_keys(raw_redis: redis.Redis) -> int:
    """Session records in the run's Redis (other tests' short-lived ones may expire meanwhile)."""
    return len(session_records(raw_redis))


@examples(150)
@given(kind=st.sampled_from(Apps.KINDS), case=cookie_headers())
def test_any_cookie_header_through_the_apps(
    apps: Apps, raw_redis: redis.Redis, kind: str, case: CookieCase
) -> None:
    header, _, calls = case
    keys = session_keys(raw_redis)
    before = apps.round_trips()
    status, headers = apps.request(kind, "GET", "/read", {"cookie": _latin1(header)})
    assert status == 200
    assert apps.round_trips() - before == calls  # a value that is no id: no store call
    assert "set-cookie" not in {name.lower() for name, _ in headers}
    assert session_keys(raw_redis) <= keys  # none created


@examples(150)
@given(kind=st.sampled_from(Apps.KINDS), header=st.binary(max_size=300))
def test_any_bytes_as_headers_through_the_apps(
    apps: Apps, raw_redis: redis.Redis, kind: str, header: bytes
) -> None:
    keys = session_keys(raw_redis)
    before = apps.round_trips()
    headers = {"cookie": header, "x-session-id": header}
    status, _ = apps.request(kind, "GET", "/read", headers)
    assert status == 200
    # The apps accept both: any well-formed cookie, or the header, is looked up.
    text = header.decode("latin-1")
    candidates = [*CookiePolicy().values(text), text.strip()]
    looked_up = any(ID_SHAPE.fullmatch(candidate) for candidate in candidates)
    assert apps.round_trips() - before == (1 if looked_up else 0)
    assert session_keys(raw_redis) <= keys  # none created


@examples(100)
@given(
    kind=st.sampled_from(Apps.KINDS),
    user_agent=st.binary(max_size=600),
    forwarded=st.one_of(st.binary(max_size=100), st.ip_addresses().map(str).map(_latin1)),
)
def test_any_client_signals_through_the_apps(
    bound_apps: Apps, kind: str, user_agent: bytes, forwarded: bytes
) -> None:
    headers = {"user-agent": user_agent, "x-forwarded-for": forwarded}
    status, replied = bound_apps.request(kind, "POST", "/write", headers)
    assert status == 200
    [cookie] = [value for name, value in replied if name.lower() == "set-cookie"]
    headers["cookie"] = cookie.split(";")[0].encode()
    assert bound_apps.request(kind, "GET", "/read", headers)[0] == 200


# -- atheris: coverage-guided, over the pure parsers ------------------------------------

ATHERIS = Path(__file__).with_name("atheris_fuzz.py")


@pytest.mark.parametrize("target", ["ids", "cookies", "records"])
def test_atheris_run(target: str, tmp_path: Path) -> None:
    runs = 100_000 * SCALE
    seed = "-seed=1" if os.environ.get("CI", "").lower() == "true" else "-seed=0"  # 0: random
    result = subprocess.run(
        [sys.executable, str(ATHERIS), target, f"-runs={runs}", seed],
        cwd=tmp_path,  # where a crashing input would be written
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {runs} runs" in result.stderr
    assert list(tmp_path.iterdir()) == []

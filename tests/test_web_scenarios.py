"""One scenario suite, run against every integration with a real Redis.

Starlette, FastAPI, Litestar, Quart, Flask, a plain WSGI app and Django each
serve the same small app (tests/web_apps.py), configured as their users would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from sessionhub import AsyncSessionManager, Outcome, Session, SessionManager
from sessionhub.hooks import add_manager_hook
from sessionhub.ids import IdScheme
from tests.harness import session_records
from tests.servers import RedisServer, free_port
from tests.web_apps import ACCESSORS, KINDS, Client, RoundTrips

SID = re.compile(r"[A-Za-z0-9_-]{44}")

OpenClient = Callable[..., Client]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    return RoundTrips(monkeypatch)


@pytest.fixture
def open_client(kind: str, redis_server: RedisServer) -> Iterator[OpenClient]:
    """Opens a client of this integration's app; settings over a Redis store on the test server."""
    clients: list[Client] = []

    def open_client(**settings: Any) -> Client:
        conf: dict[str, Any] = {"store": "redis", "redis": {"url": redis_server.url}, **settings}
        name = conf.get("cookie", {}).get("name", "session")
        client = Client(kind, conf, cookie_name=name)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Session]]:
    """The sessions committed, by every manager the settings build meanwhile."""
    committed: list[Session] = []

    def count(manager: SessionManager | AsyncSessionManager) -> None:
        if isinstance(manager, AsyncSessionManager):
            acommit = manager.commit

            async def acounted(session: Session) -> Outcome:
                committed.append(session)
                return await acommit(session)

            monkeypatch.setattr(manager, "commit", acounted)
        else:
            commit = manager.commit

            def counted(session: Session) -> Outcome:
                committed.append(session)
                return commit(session)

            monkeypatch.setattr(manager, "commit", counted)

    remove = add_manager_hook(count)
    yield committed
    remove()


def session_keys(store: redis.Redis) -> list[bytes]:
    return session_records(store)


def warm_up(client: Client) -> None:
    """Every kind of store call once: connections open, scripts cached."""
    client.post("/write", key="warm", value="up")
    client.get("/read")
    client.post("/login", user="warm")
    client.post("/logout")
    assert client.cookie is None


def cookie_of(reply_cookies: list[str], name: str = "session") -> str:
    [header] = [c.strip() for c in reply_cookies if c.strip().startswith(name + "=")]
    return header


# -- the scenarios ------------------------------------------------------------------


def test_anonymous_requests_cost_no_store_call(
    open_client: OpenClient, trips: RoundTrips, store: redis.Redis
) -> None:
    client = open_client()
    warm_up(client)
    before = trips.count
    untouched = client.get("/anon")
    looked = client.get("/read")
    assert trips.count == before
    assert untouched.status == looked.status == 200
    assert looked.json() == {"data": {}, "principal": None}
    assert untouched.set_cookies() == looked.set_cookies() == []
    assert "vary" not in untouched.headers
    assert looked.headers["vary"] == "Cookie"  # the body depended on the (absent) session
    assert session_keys(store) == []


def test_a_new_session_nobody_changed_is_not_committed(
    open_client: OpenClient, commits: list[Session]
) -> None:
    client = open_client()
    warm_up(client)
    before = len(commits)
    client.get("/anon")
    client.get("/read")
    assert len(commits) == before  # not a commit that stores nothing: no commit at all
    client.post("/write", key="a", value="1")
    assert len(commits) == before + 1


def test_first_write_sets_the_configured_cookie(
    open_client: OpenClient, trips: RoundTrips, store: redis.Redis
) -> None:
    cookie = {"name": "__Host-sid", "same_site": "Strict", "max_age": 3600}
    client = open_client(cookie=cookie)
    warm_up(client)
    before = trips.count
    reply = client.post("/write", key="cart", value="3 apples")
    assert trips.count - before == 1  # create
    header = cookie_of(reply.set_cookies(), "__Host-sid")
    value = header.split(";")[0].removeprefix("__Host-sid=")
    assert SID.fullmatch(value)
    attributes = header.split("; ")[1:]
    assert attributes[:2] == ["Path=/", "Max-Age=3600"]
    assert attributes[2].startswith("Expires=")
    assert attributes[2].endswith(" GMT")
    assert attributes[3:] == ["Secure", "HttpOnly", "SameSite=Strict"]
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["vary"] == "Cookie"
    assert len(session_keys(store)) == 1
    assert client.get("/read").json()["data"] == {"cart": "3 apples"}


def test_read_is_one_round_trip_and_sets_no_cookie(
    open_client: OpenClient, trips: RoundTrips, kind: str
) -> None:
    client = open_client()
    warm_up(client)
    client.post("/write", key="user", value="42")
    before = trips.count
    reply = client.get("/read")
    assert trips.count - before == 1
    assert reply.json()["data"] == {"user": "42"}
    assert reply.set_cookies() == []
    assert "cache-control" not in reply.headers
    assert reply.headers["vary"] == "Cookie"
    before = trips.count
    assert client.get("/anon").text == "anon"
    # An id costs its one load, even when the view does not use the session;
    # Django's request.session loads on first use instead.
    assert trips.count - before == (0 if kind == "django" else 1)


def test_login_changes_the_id_and_the_old_one_stops_working(
    open_client: OpenClient, trips: RoundTrips, store: redis.Redis
) -> None:
    client = open_client()
    warm_up(client)
    client.post("/write", key="cart", value="1 pear")
    anonymous_id = client.cookie
    before = trips.count
    reply = client.post("/login", user="alice")
    assert trips.count - before == 2  # load + rotate
    assert client.cookie is not None
    assert client.cookie != anonymous_id
    assert reply.headers["cache-control"] == "no-store"
    assert client.get("/read").json() == {"data": {"cart": "1 pear"}, "principal": "alice"}
    stale = client.get("/read", headers={"Cookie": f"session={anonymous_id}"})
    assert stale.json() == {"data": {}, "principal": None}
    assert len(session_keys(store)) == 1


def test_logout_deletes_the_session_and_expires_the_cookie(
    open_client: OpenClient, store: redis.Redis
) -> None:
    client = open_client(clear_site_data=["cache", "storage"])
    client.post("/login", user="bob")
    logged_in_id = client.cookie
    assert len(session_keys(store)) == 1
    reply = client.post("/logout")
    header = cookie_of(reply.set_cookies())
    assert header.startswith("session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    assert reply.headers["clear-site-data"] == '"cache", "storage"'
    assert reply.headers["cache-control"] == "no-store"
    assert client.cookie is None
    assert session_keys(store) == []
    replay = client.get("/read", headers={"Cookie": f"session={logged_in_id}"})
    assert replay.json() == {"data": {}, "principal": None}


def test_a_junk_cookie_of_the_same_name_signs_nobody_out(
    open_client: OpenClient, store: redis.Redis
) -> None:
    client = open_client()
    client.post("/login", user="alice")
    valid = client.cookie
    assert valid is not None
    # Junk set on a parent domain (or another path) comes first in the Cookie header.
    for junk in ("junk", '""', valid[:-1], valid + "x", "A" * 300):
        reply = client.get("/read", {"Cookie": f"other=1; session={junk}; session={valid}"})
        assert reply.json() == {"data": {}, "principal": "alice"}, junk
        assert reply.set_cookies() == []  # nothing cleared, nothing replaced
    written = client.post(
        "/write", {"Cookie": f"session=junk; session={valid}"}, key="k", value="v"
    )
    assert written.status == 200
    assert written.set_cookies() == []
    assert client.get("/read").json() == {"data": {"k": "v"}, "principal": "alice"}
    assert len(session_keys(store)) == 1


def test_an_idle_session_expires(open_client: OpenClient, store: redis.Redis) -> None:
    client = open_client(timeouts={"idle": 1, "absolute": 60})
    client.post("/write", key="a", value="1")
    [key] = session_keys(store)
    assert 0 < store.pttl(key) <= 1000
    time.sleep(1.3)
    reply = client.get("/read")
    assert reply.json() == {"data": {}, "principal": None}
    assert session_keys(store) == []


def test_ids_by_header(open_client: OpenClient, trips: RoundTrips) -> None:
    client = open_client(resolvers=["header"])
    warm_up_header = client.post("/write", {"X-Session-Id": ""}, key="a", value="1")
    first = warm_up_header.headers["x-session-id"]
    assert SID.fullmatch(first)
    assert warm_up_header.set_cookies() == []
    assert warm_up_header.headers["vary"] == "X-Session-Id"
    before = trips.count
    reply = client.get("/read", {"X-Session-Id": first})
    assert trips.count - before == 1
    assert reply.json()["data"] == {"a": "1"}
    assert "x-session-id" not in reply.headers
    rotated = client.post("/login", {"X-Session-Id": first}, user="carol").headers["x-session-id"]
    assert SID.fullmatch(rotated)
    assert rotated != first
    assert client.get("/read", {"X-Session-Id": first}).json()["principal"] is None
    assert client.get("/read", {"X-Session-Id": rotated}).json()["principal"] == "carol"
    ended = client.post("/logout", {"X-Session-Id": rotated})
    assert ended.headers["x-session-id"] == ""
    assert client.get("/read", {"X-Session-Id": rotated}).json()["data"] == {}


def test_cookie_and_header_each_answered_in_kind(open_client: OpenClient) -> None:
    client = open_client(resolvers=["cookie", "header"])
    browser = client.post("/write", key="who", value="browser")
    assert "x-session-id" not in browser.headers
    assert client.cookie is not None
    api = client.post("/write", {"X-Session-Id": "", "Cookie": ""}, key="who", value="api")
    assert api.set_cookies() == []
    api_id = api.headers["x-session-id"]
    assert api.headers["vary"] == "Cookie, X-Session-Id"
    assert client.get("/read").json()["data"] == {"who": "browser"}
    assert client.get("/read", {"X-Session-Id": api_id, "Cookie": ""}).json()["data"] == {
        "who": "api"
    }


def test_a_failed_request_saves_nothing(open_client: OpenClient, store: redis.Redis) -> None:
    client = open_client()
    reply = client.post("/fail", key="half")
    assert reply.status == 500
    assert reply.set_cookies() == []
    assert session_keys(store) == []
    client.post("/write", key="kept", value="yes")
    assert client.post("/fail", key="half").status == 500
    assert client.get("/read").json()["data"] == {"kept": "yes"}


# -- security ---------------------------------------------------------------------


def test_an_attacker_chosen_id_is_not_adopted(open_client: OpenClient, store: redis.Redis) -> None:
    client = open_client()
    planted = IdScheme().new().id  # well-formed, never issued
    client.cookie = planted
    reply = client.post("/write", key="secret", value="mine")
    issued = cookie_of(reply.set_cookies()).split(";")[0].removeprefix("session=")
    assert issued != planted
    assert SID.fullmatch(issued)
    assert len(session_keys(store)) == 1
    planted_again = client.get("/read", headers={"Cookie": f"session={planted}"})
    assert planted_again.json()["data"] == {}


def test_ids_in_the_url_are_ignored(open_client: OpenClient) -> None:
    client = open_client(resolvers=["cookie", "header"])
    client.post("/write", key="private", value="yes")
    stored = client.cookie
    assert stored is not None
    client.cookie = None
    for name in ("session", "sessionid", "X-Session-Id", "sid"):
        reply = client.get("/read?" + urlencode({name: stored}))
        assert reply.json()["data"] == {}


def garbage_ids(count: int) -> list[str]:
    """Unique ids of every bad kind: unknown but well-formed, wrong length, alphabet, size."""
    scheme = IdScheme()
    shapes: list[Callable[[int], str]] = [
        lambda i: scheme.new().id,
        lambda i: f"short{i}",
        lambda i: f"{i:044d}".replace("0", "!"),
        lambda i: "A" * 43 + f"{i}",
        lambda i: f"{i}" + "é" * 50,
        lambda i: f"{i}-" + "x" * 300,
        lambda i: f"../../{i};%00",
    ]
    return [shapes[i % len(shapes)](i) for i in range(count)]


def test_a_thousand_garbage_ids_create_nothing(
    open_client: OpenClient, trips: RoundTrips, store: redis.Redis
) -> None:
    client = open_client()
    warm_up(client)
    ids = garbage_ids(1000)
    well_formed = sum(1 for each in ids if IdScheme().parse(each) is not None)
    before = trips.count
    statuses = set()
    for each in ids:
        reply = client.get("/read", headers={"Cookie": f"session={each}".encode()})
        statuses.add(reply.status)
        assert reply.set_cookies() == []
    assert trips.count - before == well_formed  # only well-formed ids are looked up
    assert statuses == {200}
    assert session_keys(store) == []


def test_oversized_ids_are_rejected_before_any_store_call(
    open_client: OpenClient, trips: RoundTrips
) -> None:
    client = open_client(resolvers=["cookie", "header"])
    warm_up(client)
    huge = "A" * 10_000
    before = trips.count
    by_cookie = client.get("/read", headers={"Cookie": f"session={huge}"})
    by_header = client.get("/read", headers={"X-Session-Id": huge, "Cookie": ""})
    assert trips.count == before
    assert by_cookie.status == by_header.status == 200
    assert by_cookie.json()["data"] == by_header.json()["data"] == {}


def test_a_store_that_is_down_gets_a_quick_503(open_client: OpenClient) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    client = open_client(
        redis={"url": closed, "connect_timeout": 0.2, "socket_timeout": 0.2},
        retry_after=7,
    )
    assert client.get("/anon").status == 200  # no id: the store is not needed
    started = time.monotonic()
    write = client.post("/write", key="a", value="1")  # the commit needs it
    read = client.get("/read", headers={"Cookie": f"session={IdScheme().new().id}"})
    assert time.monotonic() - started < 5
    for reply in (write, read):
        assert reply.status == 503
        assert reply.text.startswith("503 Service Unavailable: session store unavailable")
        assert reply.headers["retry-after"] == "7"
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
        assert reply.set_cookies() == []


def test_degraded_mode_serves_an_unsaved_session(open_client: OpenClient) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    client = open_client(
        redis={"url": closed, "connect_timeout": 0.2, "socket_timeout": 0.2},
        degrade_when_unavailable=True,
    )
    write = client.post("/write", key="a", value="1")
    read = client.get("/read", headers={"Cookie": f"session={IdScheme().new().id}"})
    assert write.status == read.status == 200
    assert write.set_cookies() == []
    assert read.json()["data"] == {}


@pytest.mark.parametrize("name", ACCESSORS)
def test_every_look_at_the_session_varies_on_its_cookie(open_client: OpenClient, name: str) -> None:
    """Who is logged in (and every other accessor) is a look at the session, as a
    key is: a response that shows it must not be served to others by a shared
    cache, whatever its Cache-Control says (Flask's CVE-2023-30861 class)."""
    signed_in = open_client()
    signed_in.post("/login", user="alice")
    looks = [signed_in.get("/identity", name=name), open_client().get("/identity", name=name)]
    for reply in looks:
        assert reply.status == 200
        assert "Cookie" in [token.strip() for token in reply.headers["vary"].split(",")]


def test_a_login_as_another_user_starts_a_clean_session(open_client: OpenClient) -> None:
    browser = open_client()
    browser.post("/write", key="cart", value="1 pear")
    browser.post("/login", user="alice")
    assert browser.get("/read").json() == {"data": {"cart": "1 pear"}, "principal": "alice"}
    browser.post("/write", key="secret", value="alice's")
    alice = browser.cookie
    browser.post("/login", user="mallory")
    assert browser.cookie not in (None, alice)
    assert browser.get("/read").json() == {"data": {}, "principal": "mallory"}
    stale = browser.get("/read", headers={"Cookie": f"session={alice}"})
    assert stale.json() == {"data": {}, "principal": None}  # alice's session ended with her

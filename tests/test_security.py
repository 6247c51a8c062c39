"""The security properties docs/security.md lists that no other test file proves.

Each test names the requirement it stands for; docs/security.md maps every
requirement to its tests (these and the ones elsewhere).
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from sessionhub import MemoryStore, SessionManager, Timeouts
from sessionhub.config import ConfigError, Settings
from sessionhub.ids import MAX_ID_LENGTH, IdScheme
from sessionhub.web.binding import ClientBinding
from sessionhub.web.resolvers import CookiePolicy
from tests.harness import FakeClock, session_records
from tests.log_records import recording
from tests.servers import free_port
from tests.web_apps import Client, Reply
from tests.web_clients import Clients, fixtures

kind, open_client = fixtures()


class Issued:
    """Every id a client was given, taken from the responses as they come."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ids: set[str] = set()

    def __call__(self, method: str, url: str, **params: str) -> Reply:
        reply = self.client.request(method, url, None, **params)
        if self.client.cookie:
            self.ids.add(self.client.cookie)
        return reply


# -- V7.2.2, V7.2.3: ids are generated, random, 256 bits ---------------------------------


def test_ids_carry_256_random_bits() -> None:
    scheme = IdScheme()
    tokens = [scheme.new().id[1:] for _ in range(4096)]
    raw = [base64.urlsafe_b64decode(token + "=") for token in tokens]
    assert {len(each) for each in raw} == {32}  # 43 characters carry 32 bytes
    assert len(set(raw)) == len(raw)
    assert [base64.urlsafe_b64encode(each).rstrip(b"=").decode() for each in raw] == tokens
    # Every one of the 256 bit positions is set in about half the ids (a fixed or
    # counter-like part would be 0 or 1 everywhere); the bound is over 6 sigma.
    for position in range(256):
        ones = sum(each[position // 8] >> (position % 8) & 1 for each in raw)
        assert 0.44 < ones / len(raw) < 0.56, position


def test_a_scheme_below_128_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 128 bits"):
        IdScheme(token_factory=lambda: "a" * 21, token_pattern="a{21}")
    IdScheme(token_factory=lambda: "a" * 22, token_pattern="a{22}")  # 22 characters: 132 bits


def test_the_id_holds_nothing_but_randomness_and_its_shard() -> None:
    """The first character puts a user's sessions into one of 64 shards; the rest is random."""
    manager = SessionManager(MemoryStore())
    ids = []
    for _ in range(50):
        session = manager.load(None)
        manager.login(session, "alice")
        ids.append(manager.commit(session).id)
    assert {each[0] for each in ids if each} == {IdScheme().shard_of("alice")}
    assert len({each[1:] for each in ids if each}) == 50


# -- V7.2.4: a new id at every authentication, the old one ended --------------------------


def test_reauthentication_rotates_the_id(open_client: Clients) -> None:
    client = open_client()
    client.post("/login", user="alice")
    first = client.cookie
    client.post("/login", user="alice")  # the same user signs in again
    second = client.cookie
    assert first is not None
    assert second is not None
    assert second != first
    assert client.get("/read").json()["principal"] == "alice"
    stale = client.get("/read", headers={"Cookie": f"session={first}"})
    assert stale.json()["principal"] is None


# -- V7.1.1, V7.3: documented timeouts ------------------------------------------------------


def test_default_timeouts_are_the_documented_ones() -> None:
    """docs/security.md: 30 minutes idle, 12 hours absolute (NIST SP 800-63B AAL2)."""
    assert Timeouts() == Timeouts(idle=1800, absolute=43200, refresh_share=0.1)
    assert Settings.load().timeouts == Timeouts()


def test_authentication_time_is_kept_for_reauthentication_checks() -> None:
    """V7.5.1/V7.5.3 are the application's: `authenticated_at` tells it how recent the login is."""
    clock = FakeClock()
    manager = SessionManager(MemoryStore(), clock=clock)
    session = manager.load(None)
    manager.login(session, "alice")
    session_id = manager.commit(session).id
    clock.advance(600)
    session = manager.load(session_id)
    assert session.authenticated_at == clock.now - 600
    manager.login(session, "alice")  # re-authentication
    session = manager.load(manager.commit(session).id)
    assert session.authenticated_at == clock.now


# -- V7.4.5: an administrator can end every session at once -------------------------------


def test_a_new_digest_key_ends_every_session(open_client: Clients) -> None:
    before = open_client(digest_key="first key")
    before.post("/login", user="alice")
    assert before.get("/read").json()["principal"] == "alice"
    after = open_client(digest_key="second key")  # the deployment with the new key
    after.cookie = before.cookie
    assert after.get("/read").json() == {"data": {}, "principal": None}


# -- V3.3.4: the id goes to the client in Set-Cookie only ------------------------------------


def test_the_id_travels_only_in_set_cookie(open_client: Clients) -> None:
    client = open_client()
    reply = client.post("/login", user="alice")
    session_id = client.cookie
    assert session_id is not None
    assert [c for c in reply.set_cookies() if session_id in c] != []
    others = [f"{k}: {v}" for k, v in reply.headers.multi_items() if k.lower() != "set-cookie"]
    assert not any(session_id in header for header in others)
    assert session_id not in reply.text
    read = client.get("/read")
    assert session_id not in read.text
    assert not any(session_id in value for _, value in read.headers.multi_items())


# -- V3.3.5: the cookie fits in what browsers keep ------------------------------------------


@given(length=st.integers(1, 5000))
def test_cookie_name_and_value_stay_within_4096_bytes(length: int) -> None:
    if length + 1 + MAX_ID_LENGTH > 4096:
        with pytest.raises(ValueError, match="4096 bytes"):
            CookiePolicy(name="s" * length)
        return
    policy = CookiePolicy(name="s" * length)
    longest = "A" * MAX_ID_LENGTH  # the longest value the resolvers ever read back
    name_and_value = policy.set_cookie(longest, None, 0).split(";")[0]
    assert len(name_and_value.encode()) <= 4096


@pytest.mark.parametrize(
    ("cookie", "message"),
    [
        ({"name": "s" * 4000}, "would pass the 4096 bytes browsers keep"),
        ({"path": "/" + "p" * 1024}, "at most 1024 characters"),
        ({"domain": "d" * 1025}, "at most 1024 characters"),
    ],
)
def test_oversized_cookie_settings_are_refused(cookie: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(cookie=cookie)


# -- V16.2.5: ids never in the logs --------------------------------------------------------


def test_ids_never_reach_the_logs(open_client: Clients, redis_client: redis.Redis) -> None:
    planted = IdScheme().new().id
    # Records of the root logger: every library's. Hooked once each app is made
    # (Litestar configures logging then); one app at a time (Django's settings are global).
    client = open_client(client_binding=ClientBinding(action="alert"))
    request = Issued(client)
    with recording() as logs:
        request("POST", "/write", key="cart", value="1 pear")
        request("GET", "/read")
        request("POST", "/login", user="alice")
        client.request("GET", "/read", headers={"User-Agent": "another browser"})  # mismatch
        [key] = session_records(redis_client)
        redis_client.set(key, b"not a record", keepttl=True)
        request("GET", "/read")  # unreadable: a warning, a new session
        request("POST", "/login", user="bob")
        request("POST", "/logout")
        client.get("/read", headers={"Cookie": f"session={planted}"})
        session = SessionManager(MemoryStore()).load(None)
        session["a"] = 1
        session._state.committed(IdScheme().new(), session._state.meta, None, session)
        logging.getLogger("app").info("the session: %r %s", session, session)
        request.ids.add(str(session.id))
    open_client.close(client)
    down = open_client(
        redis={"url": f"redis://127.0.0.1:{free_port()}/0", "connect_timeout": 0.2},
        degrade_when_unavailable=True,
    )
    with recording() as down_logs:
        down.get("/read", headers={"Cookie": f"session={planted}"})
    messages = logs.messages() + down_logs.messages()
    assert "session created" in messages
    assert "session used from another client" in messages
    assert "session data cannot be read; starting a new session" in messages
    assert "session store unavailable; going on with a session that is not stored" in messages
    everything = logs.everything() + down_logs.everything()
    assert len(request.ids) >= 4
    for session_id in [*request.ids, planted]:
        assert session_id not in everything
        assert session_id[1:] not in everything


# -- hashed ids at rest: nothing in Redis is an id -------------------------------------------


def _contents(store: redis.Redis, key: bytes) -> bytes:
    kind = store.type(key)
    if kind == b"string":
        return store.get(key) or b""  # type: ignore[return-value]
    if kind == b"zset":
        return repr(store.zrange(key, 0, -1, withscores=True)).encode()
    if kind == b"stream":
        return repr(store.xrange(key)).encode()
    if kind == b"hash":
        return repr(store.hgetall(key)).encode()
    if kind == b"set":
        return repr(store.smembers(key)).encode()
    if kind == b"list":
        return repr(store.lrange(key, 0, -1)).encode()
    raise AssertionError(f"unexpected {kind!r} at {key!r}")


@pytest.mark.parametrize("kind", ["starlette", "flask"])
def test_no_id_anywhere_in_redis(open_client: Clients, redis_client: redis.Redis) -> None:
    client = open_client(client_binding=ClientBinding(action="alert"))
    request = Issued(client)
    request("POST", "/write", key="cart", value="1 pear")
    request("POST", "/login", user="alice")
    request("POST", "/write", key="cart", value="2 pears")
    request("POST", "/login", user="alice")
    request("POST", "/logout")
    request("POST", "/login", user="bob")  # alive at the end
    other = Issued(open_client())
    other("POST", "/write", key="anonymous", value="yes")  # alive, anonymous
    keys: list[bytes] = redis_client.keys("*")  # type: ignore[assignment]
    dump = b"\n".join([*keys, *(_contents(redis_client, key) for key in keys)])
    assert len(keys) >= 3  # two sessions and at least the index of bob
    ids = request.ids | other.ids
    assert len(ids) >= 5
    for session_id in ids:
        assert session_id.encode() not in dump
        assert session_id[1:].encode() not in dump


# -- docs/security.md names only tests that exist --------------------------------------------


def test_every_test_the_checklist_names_exists() -> None:
    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "security.md").read_text()
    named = set(re.findall(r"`(tests/\w+\.py)::(test_\w+)`", text))
    assert len(named) > 40
    for path, name in sorted(named):
        source = (root / path).read_text()
        assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name}"

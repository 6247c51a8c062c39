"""Django: the engine keeps the promises of Django's own session backends.

The first part follows the expectations Django's test suite places on every
backend (its SessionTestsMixin): the same behaviours, written here against
`sessionhub.web.django.SessionStore` and a real Redis. Where sessionhub
differs on purpose (an empty session is never stored), the test says so.
The second part drives Django itself: contrib.auth's login() and logout()
through both middlewares, and the async API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import httpx
import pytest
import redis
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.test.utils import override_settings
from django.utils import timezone

import tests.web_django as project
from sessionhub.ids import IdScheme
from sessionhub.web.django import SessionStore
from tests.harness import session_records
from tests.servers import RedisServer
from tests.web_apps import Client

assert project.urlpatterns  # configures Django before anything below runs


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    with override_settings(SESSIONHUB={"store": "redis", "redis": {"url": redis_server.url}}):
        yield client
    client.close()


@pytest.fixture
def session(store: redis.Redis) -> SessionStore:
    return SessionStore()


def keys(store: redis.Redis) -> list[bytes]:
    return session_records(store)


# -- SessionTestsMixin's expectations -------------------------------------------------


def test_new_session(session: SessionStore) -> None:
    assert session.modified is False
    assert session.accessed is False


def test_get_empty(session: SessionStore) -> None:
    assert session.get("cat") is None


def test_store(session: SessionStore) -> None:
    session["cat"] = "dog"
    assert session.modified is True
    assert session.pop("cat") == "dog"


def test_pop(session: SessionStore) -> None:
    session["some key"] = "exists"
    session.accessed = session.modified = False
    assert session.pop("some key") == "exists"
    assert session.accessed is True
    assert session.modified is True
    assert session.get("some key") is None


def test_pop_default(session: SessionStore) -> None:
    assert session.pop("some key", "does not exist") == "does not exist"
    assert session.accessed is True
    assert session.modified is False


def test_pop_no_default_keyerror_raised(session: SessionStore) -> None:
    with pytest.raises(KeyError):
        session.pop("some key")


def test_setdefault(session: SessionStore) -> None:
    assert session.setdefault("foo", "bar") == "bar"
    assert session.setdefault("foo", "baz") == "bar"
    assert session.accessed is True
    assert session.modified is True


def test_update(session: SessionStore) -> None:
    session.update({"update key": 1})
    assert session.accessed is True
    assert session.modified is True
    assert session.get("update key") == 1


def test_has_key_keys_values_items(session: SessionStore) -> None:
    session["x"] = 1
    session.accessed = session.modified = False
    assert "x" in session
    assert list(session.keys()) == ["x"]
    assert list(session.values()) == [1]
    assert list(session.items()) == [("x", 1)]
    assert session.accessed is True
    assert session.modified is False


def test_clear(session: SessionStore) -> None:
    session["x"] = 1
    session.accessed = session.modified = False
    assert list(session.items()) == [("x", 1)]
    session.clear()
    assert list(session.items()) == []
    assert session.accessed is True
    assert session.modified is True


def test_save_and_exists(session: SessionStore, store: redis.Redis) -> None:
    session.save()
    # Where sessionhub differs on purpose: an empty session is never stored.
    assert session.session_key is None
    assert session.exists(session.session_key) is False
    assert keys(store) == []
    session["a"] = 1
    session.save()
    assert session.session_key is not None
    assert session.exists(session.session_key) is True


def test_save_doesnt_clear_data(session: SessionStore) -> None:
    session["a"] = "b"
    session.save()
    assert session["a"] == "b"


def test_delete(session: SessionStore) -> None:
    session["a"] = 1
    session.save()
    key = session.session_key
    session.delete(key)
    assert session.exists(key) is False


def test_delete_another_session(session: SessionStore, store: redis.Redis) -> None:
    other = SessionStore()
    other["b"] = 2
    other.save()
    session.delete(other.session_key)
    assert session.exists(other.session_key) is False
    assert keys(store) == []


def test_flush(session: SessionStore, store: redis.Redis) -> None:
    session["foo"] = "bar"
    session.save()
    previous = session.session_key
    session.flush()
    assert session.exists(previous) is False
    assert session.session_key != previous
    assert session.session_key is None
    assert session.modified is True
    assert session.accessed is True
    assert keys(store) == []


def test_cycle(session: SessionStore) -> None:
    session["a"], session["b"] = "c", "d"
    session.save()
    previous = session.session_key
    data = list(session.items())
    session.cycle_key()
    assert session.exists(previous) is False
    assert session.session_key != previous
    assert list(session.items()) == data


def test_cycle_with_no_session_cache(session: SessionStore) -> None:
    session["a"], session["b"] = "c", "d"
    session.save()
    data = list(session.items())
    fresh = SessionStore(session.session_key)
    assert "_session_cache" not in fresh.__dict__
    fresh.cycle_key()
    assert sorted(fresh.items()) == sorted(data)


@pytest.mark.parametrize("key", ["1", "somewhatlongerkey", IdScheme().new().id])
def test_invalid_key(key: str, store: redis.Redis) -> None:
    session = SessionStore(key)
    session["cat"] = "dog"
    session.save()
    assert session.session_key != key
    assert SessionStore(key).get("cat") is None
    assert len(keys(store)) == 1


def test_session_key_empty_string_or_short_is_invalid(session: SessionStore) -> None:
    assert SessionStore("").session_key is None
    assert SessionStore("1234567").session_key is None


def test_session_key_is_read_only(session: SessionStore) -> None:
    with pytest.raises(AttributeError):
        session.session_key = "x" * 44  # type: ignore[misc]


def test_session_load_does_not_create_record(store: redis.Redis) -> None:
    session = SessionStore("someunknownkey")
    session.load()
    assert session.session_key is None
    assert session.exists(session.session_key) is False
    assert keys(store) == []


def test_save_does_not_resurrect_a_session_logged_out_elsewhere(store: redis.Redis) -> None:
    first = SessionStore()
    first["test data"] = "value1"
    first.save(must_create=True)
    SessionStore(first.session_key).delete()
    first["test data"] = "value2"
    with pytest.raises(UpdateError):
        first.save()
    assert dict(first.load()) == {}
    assert keys(store) == []


def test_default_expiry(session: SessionStore) -> None:
    from django.conf import settings

    # No SESSIONHUB["timeouts"]: the server keeps sessions SESSION_COOKIE_AGE.
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE
    session.set_expiry(0)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


def test_custom_expiry_seconds(session: SessionStore) -> None:
    modification = timezone.now()
    session.set_expiry(10)
    assert session.get_expiry_date(modification=modification) == modification + timedelta(
        seconds=10
    )
    assert session.get_expiry_age(modification=modification) == 10


def test_custom_expiry_timedelta_and_datetime(session: SessionStore) -> None:
    modification = timezone.now()
    session.set_expiry(modification + timedelta(seconds=10))
    assert session.get_expiry_date(modification=modification) == modification + timedelta(
        seconds=10
    )
    assert session.get_expiry_age(modification=modification) == 10
    session.set_expiry(timedelta(seconds=20))
    assert 19 <= session.get_expiry_age() <= 20


def test_custom_expiry_reset(session: SessionStore) -> None:
    from django.conf import settings

    session.set_expiry(None)
    session.set_expiry(10)
    session.set_expiry(None)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


def test_get_expire_at_browser_close(session: SessionStore) -> None:
    for at_close in (False, True):
        with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=at_close):
            session.set_expiry(10)
            assert session.get_expire_at_browser_close() is False
            session.set_expiry(0)
            assert session.get_expire_at_browser_close() is True
            session.set_expiry(None)
            assert session.get_expire_at_browser_close() is at_close


def test_decode(session: SessionStore) -> None:
    data = {"a test key": "a test value"}
    assert session.decode(session.encode(data)) == data


def test_decode_failure_logged_to_security(
    session: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        assert session.decode("bad:encoded:value") == {}
    assert [record.getMessage() for record in caplog.records] == ["Session data corrupted"]


def test_corrupt_stored_data_gives_an_empty_session(
    session: SessionStore, store: redis.Redis
) -> None:
    session["a"] = 1
    session.save()
    [key] = keys(store)
    store.set(key, b"\x00not a record\xff", keepttl=True)
    reloaded = SessionStore(session.session_key)
    assert reloaded.get("a") is None
    assert reloaded.session_key is None


def test_actual_expiry(session: SessionStore, store: redis.Redis) -> None:
    session["foo"] = "bar"
    session.set_expiry(-timedelta(seconds=10))
    session.save()
    assert "foo" not in SessionStore(session.session_key)
    assert keys(store) == []


def test_set_expiry_sets_the_server_side_lifetime(
    session: SessionStore, store: redis.Redis
) -> None:
    session["foo"] = "bar"
    session.set_expiry(1)
    session.save()
    [key] = keys(store)
    assert 0 < store.pttl(key) <= 1000
    assert session.sessionhub_session.persistent  # the cookie lasts as long
    time.sleep(1.3)
    assert SessionStore(session.session_key).get("foo") is None


def test_configured_timeouts_replace_the_cookie_age(redis_server: RedisServer) -> None:
    conf = {"store": "redis", "redis": {"url": redis_server.url}, "timeouts": {"idle": 60}}
    with override_settings(SESSIONHUB=conf):
        assert SessionStore().get_expiry_age() == 60


def test_clear_expired_has_nothing_to_do(store: redis.Redis) -> None:
    SessionStore.clear_expired()  # Redis TTLs do the work; this must not fail
    assert keys(store) == []


# -- the async API ---------------------------------------------------------------------


async def test_async_methods(store: redis.Redis) -> None:
    session = SessionStore()
    await session.aset("cat", "dog")
    assert session.modified is True
    assert await session.aget("cat") == "dog"
    assert await session.asetdefault("n", 1) == 1
    await session.aupdate({"m": 2})
    assert sorted(await session.akeys()) == ["cat", "m", "n"]
    assert await session.ahas_key("m")
    assert await session.apop("m") == 2
    await session.asave()
    key = session.session_key
    assert key is not None
    assert await session.aexists(key)
    loaded = SessionStore(key)
    assert dict(await loaded.aitems()) == {"cat": "dog", "n": 1}
    await loaded.acycle_key()
    assert loaded.session_key != key
    assert not await loaded.aexists(key)
    await loaded.aset_expiry(5)
    await loaded.asave()
    [stored] = keys(store)
    assert 0 < store.pttl(stored) <= 5000
    rotated = loaded.session_key
    await loaded.aflush()
    assert loaded.session_key is None
    assert not await loaded.aexists(rotated)
    assert keys(store) == []


async def test_async_view_under_asgi(store: redis.Redis) -> None:
    from django.core.handlers.asgi import ASGIHandler

    transport = httpx.ASGITransport(app=cast(Any, ASGIHandler()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        first = await client.get("/async/counter")
        cookie = first.headers["set-cookie"].strip().split(";")[0]
        second = await client.get("/async/counter", headers={"Cookie": cookie})
    assert first.json() == {"count": 1}
    assert second.json() == {"count": 2}
    assert len(keys(store)) == 1


# -- Django itself: contrib.auth through the middlewares ---------------------------------


@pytest.fixture
def users(store: redis.Redis) -> None:
    project.create_users("alice")


def _conf(redis_server: RedisServer) -> dict[str, Any]:
    return {"store": "redis", "redis": {"url": redis_server.url}}


def test_contrib_auth_login_and_logout(
    users: None, redis_server: RedisServer, store: redis.Redis
) -> None:
    client = Client("django", _conf(redis_server))
    try:
        client.post("/write", key="cart", value="1 book")
        anonymous = client.cookie
        client.get("/django/login", user="alice")
        assert client.cookie not in (None, anonymous)
        assert client.get("/django/whoami").json() == {"user": "alice"}
        read = client.get("/read").json()
        assert read["data"]["cart"] == "1 book"
        from django.contrib.auth.models import User

        assert read["principal"] == str(User.objects.get(username="alice").pk)
        stale = client.get("/django/whoami", headers={"Cookie": f"session={anonymous}"})
        assert stale.json() == {"user": None}
        assert len(keys(store)) == 1
        out = client.get("/django/logout")
        assert any("Max-Age=0" in cookie for cookie in out.set_cookies())
        assert keys(store) == []
        assert client.get("/django/whoami").json() == {"user": None}
    finally:
        client.close()


def test_django_own_middleware_works_with_the_engine(
    users: None, redis_server: RedisServer, store: redis.Redis
) -> None:
    middleware = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    with override_settings(MIDDLEWARE=middleware, SESSION_COOKIE_NAME="sessionid"):
        client = Client("django", _conf(redis_server), cookie_name="sessionid")
        try:
            login = client.get("/django/login", user="alice")
            [cookie] = login.set_cookies()
            assert cookie.startswith("sessionid=")
            assert "HttpOnly" in cookie
            assert "SameSite=Lax" in cookie
            assert client.get("/django/whoami").json() == {"user": "alice"}
            assert len(keys(store)) == 1
            client.get("/django/logout")
            assert client.cookie is None
            assert keys(store) == []
        finally:
            client.close()


def test_the_response_s_own_vary_is_merged_with_ours(redis_server: RedisServer) -> None:
    client = Client("django", _conf(redis_server))
    try:
        assert client.get("/varied").headers["vary"] == "Accept-Language, Cookie"
        assert client.get("/read").headers["vary"] == "Cookie"
        assert "vary" not in client.get("/anon").headers
    finally:
        client.close()


def test_the_store_starts_as_django_s_own() -> None:
    """SessionStore skips SessionBase.__init__ (for a lazy serializer): it must set
    everything that does, to the same values."""
    ours, django_s = SessionStore("k" * 32), SessionBase("k" * 32)
    expected = vars(django_s)
    assert {name: vars(ours)[name] for name in expected if name != "serializer"} == {
        name: value for name, value in expected.items() if name != "serializer"
    }
    assert ours.serializer is django_s.serializer


def test_the_middleware_loads_lazily_and_answers_503_when_the_store_is_down() -> None:
    from tests.servers import free_port

    conf = {"store": "redis", "redis": {"url": f"redis://127.0.0.1:{free_port()}/0"}}
    client = Client("django", conf)
    try:
        client.cookie = IdScheme().new().id
        assert client.get("/anon").status == 200  # the view never touches the session
        down = client.get("/read")
        assert down.status == 503
        assert down.text.startswith("503 Service Unavailable: session store unavailable")
        assert client.get("/django/whoami").status == 503  # a load inside request.user
    finally:
        client.close()

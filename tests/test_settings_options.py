"""Settings of users and events (session limit, anonymous events, stream length, the
expiry worker), the helpers that run the worker with an app, and Redis keys checked."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sessionhub import LimitPolicy, LoginRefused, SessionLimit, auth
from sessionhub.config import ConfigError, Settings
from sessionhub.connect import RedisSettings
from sessionhub.events import Event, EventType
from sessionhub.stores.redis import RedisStore
from sessionhub.stores.redis.consumer import EventConsumer
from sessionhub.web.asgi import SessionMiddleware
from sessionhub.web.worker import expiry_lifespan, start_expiry_worker
from tests.servers import RedisServer, free_port
from tests.test_events import BOUND, expired, wait_until
from tests.test_web_config import clean_environment

__all__ = ["clean_environment"]  # autouse: no SESSIONHUB_* from outside, an empty cwd


def expiry_threads() -> int:
    return sum(thread.name == "sessionhub-expiry" for thread in threading.enumerate())


# -- loading ------------------------------------------------------------------------


def test_defaults_leave_users_and_events_as_the_stores_have_them() -> None:
    settings = Settings.load()
    assert settings.session_limit is None
    assert settings.anonymous_events is False
    assert settings.stream_length == 10_000
    assert settings.expiry.enabled is False
    assert settings.expiry.options() == {"interval": 1.0, "lease_ttl": None, "batch": 500}
    assert settings.lifecycle().session_limit is None


def test_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONHUB_SESSION_LIMIT__MAX_SESSIONS", "2")
    monkeypatch.setenv("SESSIONHUB_SESSION_LIMIT__POLICY", "refuse")
    monkeypatch.setenv("SESSIONHUB_ANONYMOUS_EVENTS", "true")
    monkeypatch.setenv("SESSIONHUB_STREAM_LENGTH", "500")
    monkeypatch.setenv("SESSIONHUB_EXPIRY__ENABLED", "true")
    monkeypatch.setenv("SESSIONHUB_EXPIRY__INTERVAL", "0.5")
    monkeypatch.setenv("SESSIONHUB_EXPIRY__LEASE_TTL", "4")
    monkeypatch.setenv("SESSIONHUB_EXPIRY__BATCH", "50")
    settings = Settings.load()
    assert settings.session_limit == SessionLimit(2, LimitPolicy.REFUSE)
    assert settings.anonymous_events is True
    assert settings.stream_length == 500
    assert settings.expiry.enabled is True
    assert settings.expiry.options() == {"interval": 0.5, "lease_ttl": 4.0, "batch": 50}
    worker = settings.expiry_worker()
    assert (worker.sweep.interval, worker.sweep.lease_ttl, worker.sweep.batch) == (0.5, 4.0, 50)
    assert settings.memory_store().anonymous_events is True
    # What the settings build keeps the limit: a third login of one user is refused.
    manager = settings.session_manager()
    for _ in range(2):
        session = manager.new_session()
        manager.login(session, "alice")
        manager.commit(session)
    third = manager.new_session()
    manager.login(third, "alice")
    with pytest.raises(LoginRefused):
        manager.commit(third)


def test_the_policy_defaults_to_ending_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONHUB_SESSION_LIMIT__MAX_SESSIONS", "3")
    assert Settings.load().session_limit == SessionLimit(3, LimitPolicy.END_OLDEST)


@pytest.mark.parametrize("suffix", ["yaml", "toml"])
def test_a_config_file(clean_environment: Path, suffix: str) -> None:
    path = clean_environment / f"sessionhub.{suffix}"
    if suffix == "yaml":
        path.write_text(
            "session_limit:\n  max_sessions: 5\n  policy: refuse\n"
            "anonymous_events: true\nstream_length: 0\n"
            "expiry:\n  enabled: true\n  interval: 2\n"
        )
    else:
        path.write_text(
            "anonymous_events = true\nstream_length = 0\n"
            '[session_limit]\nmax_sessions = 5\npolicy = "refuse"\n'
            "[expiry]\nenabled = true\ninterval = 2\n"
        )
    settings = Settings.load(path)
    assert settings.session_limit == SessionLimit(5, LimitPolicy.REFUSE)
    assert settings.anonymous_events is True
    assert settings.stream_length == 0
    assert settings.expiry.enabled is True
    assert settings.expiry.interval == 2


def test_flask_style_flat_keys() -> None:
    from sessionhub.config import nest

    flat = {
        "SESSIONHUB_SESSION_LIMIT__MAX_SESSIONS": 1,
        "SESSIONHUB_EXPIRY__ENABLED": True,
        "SESSIONHUB_STREAM_LENGTH": 7,
    }
    settings = Settings.load(**nest(flat))
    assert settings.session_limit == SessionLimit(1)
    assert settings.expiry.enabled is True
    assert settings.stream_length == 7


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"session_limit": {"max_sessions": 0}}, "session_limit: max_sessions must be at least 1"),
        ({"session_limit": {"max_sessions": 2, "policy": "nope"}}, "session_limit.policy"),
        ({"session_limit": {"max": 2}}, "session_limit.max"),
        ({"stream_length": -1}, "stream_length: Input should be greater than or equal to 0"),
        ({"expiry": {"interval": 0}}, "expiry.interval: Input should be greater than 0"),
        ({"expiry": {"interval": 2, "lease_ttl": 1}}, "lease_ttl must be longer than interval"),
        ({"expiry": {"batch": 0}}, "expiry.batch"),
        ({"expiry": {"enable": True}}, "expiry.enable: Extra inputs are not permitted"),
        ({"redis": {"ur": "redis://x"}}, "redis.ur: Extra inputs are not permitted"),
    ],
)
def test_bad_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(**values)


@pytest.mark.parametrize(
    ("variable", "right"),
    [
        ("SESSIONHUB_SESSION_LIMIT_MAX_SESSIONS", "SESSIONHUB_SESSION_LIMIT__MAX_SESSIONS"),
        ("SESSIONHUB_EXPIRY_ENABLED", "SESSIONHUB_EXPIRY__ENABLED"),
    ],
)
def test_a_variable_one_underscore_short_is_an_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, right: str
) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ConfigError, match=f"nested keys take two underscores: {right}"):
        Settings.load()


def test_a_misspelt_redis_key_is_an_error_wherever_it_comes_from(
    clean_environment: Path,
) -> None:
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        RedisSettings(ur="redis://127.0.0.1:1/0")  # type: ignore[call-arg]
    path = clean_environment / "sessionhub.yaml"
    path.write_text("store: redis\nredis:\n  ur: redis://:hunter2@redis.internal:6379/0\n")
    with pytest.raises(ConfigError, match=r"redis\.ur: Extra inputs are not permitted") as caught:
        Settings.load(path)
    assert "hunter2" not in str(caught.value)  # the input stays out of the message


# -- the worker, run from the settings --------------------------------------------------


def test_a_worker_started_from_settings_delivers_expired_events(
    redis_server: RedisServer, clean_environment: Path
) -> None:
    redis_server.client().flushall()
    path = clean_environment / "sessionhub.yaml"
    path.write_text(
        f"store: redis\nredis:\n  url: {redis_server.url}\n"
        "timeouts:\n  idle: 0.3\n  absolute: 5\n"
        "anonymous_events: true\n"
        "expiry:\n  enabled: true\n  interval: 0.05\n"
    )
    settings = Settings.load(path)
    manager = settings.session_manager()
    alice = manager.new_session()
    manager.login(alice, "alice")
    manager.commit(alice)
    anonymous = manager.new_session()
    anonymous["cart"] = ["book"]
    manager.commit(anonymous)
    consumer = EventConsumer(RedisStore(redis.Redis(port=redis_server.port)), "audit", "one")
    found: list[Event] = []

    def both_reported() -> bool:
        found.extend(expired(consumer.read(block=0.05)))
        return len(found) >= 2

    worker = start_expiry_worker(settings)
    assert worker is not None
    try:
        wait_until(both_reported)
    finally:
        worker.stop()
    assert {(event.handle, event.principal) for event in found} == {
        (alice.handle, "alice"),
        (anonymous.handle, None),  # reported because anonymous_events is on
    }
    assert expiry_threads() == 0


def test_stream_length_zero_publishes_to_listeners_only(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    settings = Settings.load(store="redis", redis={"url": redis_server.url}, stream_length=0)
    manager = settings.session_manager()
    events: list[Event] = []
    manager.store.listeners.add(events.append)  # type: ignore[attr-defined]
    session = manager.new_session()
    manager.login(session, "alice")
    manager.commit(session)
    assert [event.type for event in events] == [EventType.CREATED, EventType.AUTHENTICATED]
    assert redis_server.client().keys("sh:e:*") == []
    published = Settings.load(store="redis", redis={"url": redis_server.url}).session_manager()
    published.login(other := published.new_session(), "bob")
    published.commit(other)
    assert redis_server.client().keys("sh:e:*") != []  # the default does publish


def test_nothing_starts_unless_the_settings_enable_it() -> None:
    before = expiry_threads()
    assert start_expiry_worker(Settings.load()) is None
    assert expiry_threads() == before


async def test_the_asgi_lifespan_runs_the_worker_while_the_app_serves() -> None:
    settings = Settings.load(
        timeouts={"idle": 0.3, "absolute": 5}, expiry={"enabled": True, "interval": 0.05}
    )
    events: list[Event] = []
    settings.memory_store().listeners.add(events.append)

    async def login(request: Request) -> Response:
        auth.login(request.session, "alice")
        return PlainTextResponse("in")

    app = Starlette(
        routes=[Route("/login", login, methods=["POST"])],
        middleware=[Middleware(SessionMiddleware, settings=settings)],
        lifespan=expiry_lifespan(settings),
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.post("/login")).status_code == 200
        start = time.monotonic()
        while not expired(events):
            assert time.monotonic() - start < BOUND, "no expired event within the bound"
            await asyncio.sleep(0.05)
    finally:
        server.should_exit = True
        await serving
    [event] = expired(events)
    assert event.principal == "alice"


def test_django_starts_the_worker_from_its_settings() -> None:
    from django.test.utils import override_settings

    import tests.web_django  # noqa: F401  (configures Django)
    from sessionhub.web import django as engine

    conf = {"timeouts": {"idle": 0.3, "absolute": 5}, "expiry": {"enabled": True, "interval": 0.05}}
    with override_settings(SESSIONHUB=conf):
        events: list[Event] = []
        runtime = engine.runtime()
        runtime.settings.memory_store().listeners.add(events.append)
        session = runtime.manager.new_session()
        runtime.manager.login(session, "alice")
        runtime.manager.commit(session)
        worker = engine.start_expiry_worker()
        assert worker is not None
        try:
            wait_until(lambda: bool(expired(events)))
        finally:
            worker.stop()
    assert [event.handle for event in expired(events)] == [session.handle]
    assert engine.start_expiry_worker() is None  # the project's own settings: off

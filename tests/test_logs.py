"""Structured logs: lifecycle events and store failures with handles, never ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sessionhub import RedisStore, SessionManager, StoreUnavailable
from sessionhub.config import Settings
from sessionhub.ids import IdScheme
from sessionhub.logs import JsonFormatter, SessionLog, json_handler
from tests.id_watch import IdWatch
from tests.log_records import Records, recording
from tests.servers import RedisServer
from tests.web_apps import make_app


def events(log: Records) -> list[dict[str, str]]:
    """The lifecycle records' structured fields."""
    fields = ("event", "session_handle", "previous_handle", "principal_digest", "reason")
    return [
        {name: getattr(r, name) for name in fields if hasattr(r, name)}
        for r in log.records
        if hasattr(r, "event")
    ]


@pytest.fixture
def log() -> Iterator[Records]:
    with recording("sessionhub") as records:
        yield records


def test_lifecycle_events_are_logged_with_handles_and_digests(
    log: Records, redis_client: redis.Redis
) -> None:
    ids = IdScheme(digest_key=b"k" * 32)
    manager = SessionLog().instrument(SessionManager(RedisStore(redis_client), ids=ids))
    session = manager.load(None)
    manager.login(session, "alice@example.com")
    first = manager.commit(session)
    created = session.handle
    session = manager.load(first.id)
    session.rotate()
    manager.commit(session)
    rotated = session.handle
    session.invalidate()
    manager.commit(session)

    digest = ids.principal_digest("alice@example.com")
    assert events(log) == [
        {"event": "created", "session_handle": created, "principal_digest": digest},
        {"event": "authenticated", "session_handle": created, "principal_digest": digest},
        {
            "event": "rotated",
            "session_handle": rotated,
            "previous_handle": created,
            "principal_digest": digest,
        },
        {
            "event": "deleted",
            "session_handle": rotated,
            "principal_digest": digest,
            "reason": "logout",
        },
    ]
    for record in log.records:
        assert record.name == "sessionhub"
        assert "alice" not in repr(vars(record))  # the digest, not the principal


def test_store_failures_are_logged_with_the_operation(log: Records) -> None:
    server = RedisServer().start()
    client = server.client(retry=Retry(NoBackoff(), 0))
    manager = SessionLog().instrument(SessionManager(RedisStore(client)))
    session = manager.load(None)
    session["cart"] = [1]
    session_id = manager.commit(session).id
    handle = session.handle
    server.cleanup()
    with pytest.raises(StoreUnavailable):
        manager.load(session_id)
    [failure] = [r for r in log.records if r.levelno >= logging.WARNING]
    assert failure.getMessage() == "session store unavailable"
    assert failure.operation == "read"  # type: ignore[attr-defined]
    assert failure.session_handle == handle  # type: ignore[attr-defined]
    assert failure.reason.startswith("session store unavailable")  # type: ignore[attr-defined]


def test_a_failing_script_is_logged_as_an_error(log: Records, redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client)
    manager = SessionLog().instrument(SessionManager(store))
    session = manager.load(None)
    session["cart"] = [1]
    session_id = manager.commit(session).id
    session = manager.load(session_id)
    session["cart"] = [2]
    redis_client.set(store.commands.key(session.handle or ""), b"not a record")
    with pytest.raises(redis.ResponseError):
        manager.commit(session)
    [failure] = [r for r in log.records if r.levelno >= logging.ERROR]
    assert failure.getMessage() == "session store call failed"
    assert failure.operation == "apply"  # type: ignore[attr-defined]
    assert "malformed record" in failure.reason  # type: ignore[attr-defined]


def test_install_logs_for_managers_built_from_settings(log: Records) -> None:
    stop = SessionLog(level=logging.DEBUG).install()
    try:
        manager = Settings.load(store="memory").session_manager()
    finally:
        stop()
    session = manager.load(None)
    manager.login(session, "bob")
    manager.commit(session)
    assert [event["event"] for event in events(log)] == ["created", "authenticated"]
    assert {r.levelno for r in log.records if hasattr(r, "event")} == {logging.DEBUG}
    unhooked = Settings.load(store="memory").session_manager()
    assert not hasattr(unhooked.store, "observers")  # built after stop(): not hooked


def test_json_formatter_writes_one_object_per_record() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("sessionhub.test_json")
    logger.propagate = False
    logger.addHandler(json_handler(stream))
    logger.setLevel(logging.INFO)
    try:
        logger.info("session %s", "deleted", extra={"session_handle": "A" * 23, "reason": "admin"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed", extra={"operation": "read"})
    finally:
        logger.handlers.clear()
        logger.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "session deleted"
    assert first["level"] == "info"
    assert first["logger"] == "sessionhub.test_json"
    assert first["session_handle"] == "A" * 23
    assert first["reason"] == "admin"
    assert first["time"].endswith("+00:00")
    assert "args" not in first
    assert "msg" not in first
    assert second["operation"] == "read"
    assert "ValueError: boom" in second["exception"]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ({"not": "json"},), None)
    record.odd = object()
    assert json.loads(JsonFormatter().format(record))["odd"].startswith("<object object")


def test_the_run_wide_watch_sees_issued_ids_and_would_catch_a_leak(
    no_session_id_is_logged: IdWatch,
) -> None:
    ref = IdScheme().new()
    assert ref.id in no_session_id_is_logged.ids  # every issued id is watched
    make_app("litestar", {})  # Litestar sets the root logger to INFO...
    assert logging.getLogger().level == logging.DEBUG  # ...and the watch sets it back

    watch = IdWatch()  # a private one: a leak here must not fail the run
    watch.issued(ref.id)
    clean = logging.LogRecord(
        "sessionhub", logging.INFO, __file__, 1, "handle %s", (ref.handle,), None
    )
    watch.check(clean)
    assert watch.leaks == []
    for record in (
        logging.LogRecord("x", logging.DEBUG, __file__, 1, "id=%s", (ref.id,), None),
        logging.LogRecord("x", logging.DEBUG, __file__, 1, f"cookie: s={ref.id}; Path=/", (), None),
    ):
        watch.check(record)
    extra = logging.LogRecord("x", logging.INFO, __file__, 1, "nothing here", (), None)
    extra.session = {"id": ref.id}
    watch.check(extra)
    assert len(watch.leaks) == 3

"""Redis-specific behaviour: real TTLs, concurrency, corrupt data, restarts, bytes."""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
import time

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionhub import (
    JSON,
    AsyncRedisStore,
    AsyncSessionManager,
    FlushMode,
    RedisStore,
    SessionManager,
    StoreUnavailable,
    Timeouts,
)
from sessionhub.ids import IdScheme
from sessionhub.record import Delta, Meta, Record, apply, format_record, parse_record
from sessionhub.stores.base import Apply, Create, Read
from sessionhub.stores.redis.store import SLOT_TAGS
from tests.servers import RedisServer

NOW = int(time.time() * 1000)
# A day's idle timeout: a read refreshes (rewrites) the record only once 10% of it
# has passed since NOW, the suite's start, and the tests read it back unchanged.
HEAD = b"%d %d 86400000 %d 1" % (NOW, NOW, NOW + 86_400_000)
PAYLOAD: dict[str, JSON] = {"user_id": 12345, "cart": {f"item-{i}": i for i in range(10)}}


def test_keys_hold_a_digest_never_the_id(redis_client: redis.Redis) -> None:
    manager = SessionManager(RedisStore(redis_client))
    session = manager.load(None)
    session.update(PAYLOAD)
    session_id = manager.commit(session).id
    assert session_id is not None
    [key] = redis_client.keys("*")
    assert session_id.encode() not in key
    assert session_id[1:20].encode() not in redis_client.get(key)  # type: ignore[operator]
    tag = SLOT_TAGS[session_id[0]]
    assert key == f"sh:s:{{{tag}}}".encode() + session.handle[1:].encode()  # type: ignore[index]


def test_bytes_per_session(redis_client: redis.Redis) -> None:
    """The note's figure: a user id and a 10-item dict, as Redis counts it."""
    manager = SessionManager(RedisStore(redis_client))
    session = manager.load(None)
    session.update(PAYLOAD)
    manager.commit(session)
    [key] = redis_client.keys("*")
    usage = redis_client.memory_usage(key)
    assert usage is not None
    assert usage <= 330, usage


def test_values_are_readable_json(redis_client: redis.Redis) -> None:
    manager = SessionManager(RedisStore(redis_client))
    session = manager.load(None)
    session.update(PAYLOAD)
    manager.commit(session)
    [key] = redis_client.keys("*")
    blob = redis_client.get(key)
    assert b'"cart"\t{"item-0":0,' in blob  # type: ignore[operator]


def test_idle_expiry_with_real_ttl(redis_client: redis.Redis) -> None:
    manager = SessionManager(
        RedisStore(redis_client), timeouts=Timeouts(idle=0.4, absolute=60, refresh_share=0.5)
    )
    session = manager.load(None)
    session["a"] = 1
    session_id = manager.commit(session).id
    [key] = redis_client.keys("*")
    assert 0 < redis_client.pttl(key) <= 400
    time.sleep(0.1)
    manager.load(session_id)  # not due (25% < 50%): the TTL is not pushed
    assert redis_client.pttl(key) <= 300
    time.sleep(0.15)
    assert not manager.load(session_id).is_new  # 62% passed: refreshed
    assert redis_client.pttl(key) > 300
    time.sleep(0.5)
    assert manager.load(session_id).is_new
    assert redis_client.keys("*") == []


def test_absolute_deadline_with_real_ttl(redis_client: redis.Redis) -> None:
    manager = SessionManager(
        RedisStore(redis_client), timeouts=Timeouts(idle=0.5, absolute=0.7, refresh_share=0)
    )
    session = manager.load(None)
    session["a"] = 1
    session_id = manager.commit(session).id
    for _ in range(4):  # busy: used every 0.2 s, well inside the idle timeout
        time.sleep(0.2)
        loaded = manager.load(session_id)
        if loaded.is_new:
            break
    assert loaded.is_new  # gone at 0.7 s however busy


def test_remember_me_with_real_ttl(redis_client: redis.Redis) -> None:
    manager = SessionManager(RedisStore(redis_client), timeouts=Timeouts(idle=0.3, absolute=0.3))
    session = manager.load(None)
    session["a"] = 1
    session.remember(idle=5, absolute=10)
    session_id = manager.commit(session).id
    time.sleep(0.5)
    loaded = manager.load(session_id)
    assert not loaded.is_new
    assert loaded.persistent
    [key] = redis_client.keys("*")
    assert redis_client.pttl(key) > 4000


def test_fifty_concurrent_commits_from_threads(redis_server: RedisServer) -> None:
    pool = redis.ConnectionPool(port=redis_server.port, max_connections=60)
    manager = SessionManager(RedisStore(redis.Redis(connection_pool=pool)))
    session = manager.load(None)
    session["start"] = True
    session_id = manager.commit(session).id
    loaded = [manager.load(session_id) for _ in range(50)]  # all read before any write
    barrier = threading.Barrier(50)

    def write(index: int) -> None:
        loaded[index][f"attr-{index}"] = index
        barrier.wait()
        manager.commit(loaded[index])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = manager.load(session_id)
    assert {f"attr-{i}" for i in range(50)} <= set(final)
    assert final.version == 51


async def test_fifty_concurrent_commits_from_tasks(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(port=redis_server.port)
    manager = AsyncSessionManager(AsyncRedisStore(client))
    session = manager.new_session()
    session["start"] = True
    session_id = (await manager.commit(session)).id
    loaded = await asyncio.gather(*(manager.load(session_id) for _ in range(50)))
    for index, each in enumerate(loaded):
        each[f"attr-{index}"] = index
    await asyncio.gather(*(manager.commit(each) for each in loaded))
    final = await manager.load(session_id)
    assert {f"attr-{i}" for i in range(50)} <= set(final)
    await client.aclose()


@pytest.mark.parametrize(
    "stored",
    [
        b"not a record",
        HEAD + b'\n"a"\tnot json',
        HEAD + b"\nno tab here",
        HEAD + b"\n!p\t42",
        HEAD + b'\n"a"\t1\n"a\t2',
        b"\x80\x04\x95" + pickle.dumps({"a": 1})[3:],
    ],
)
def test_corrupt_data_gives_a_new_session_and_logs_the_handle(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture, stored: bytes
) -> None:
    manager = SessionManager(RedisStore(redis_client))
    session = manager.load(None)
    session["a"] = 1
    session_id = manager.commit(session).id
    assert session_id is not None
    [key] = redis_client.keys("*")
    redis_client.set(key, stored)
    with caplog.at_level(logging.WARNING, logger="sessionhub"):
        loaded = manager.load(session_id)
    assert loaded.is_new
    [record] = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert record.session_handle == session.handle  # type: ignore[attr-defined]
    assert session_id not in caplog.text
    assert redis_client.get(key) == stored  # left as it was: nothing is lost


def test_pickle_is_never_unpickled(redis_client: redis.Redis) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, ("raise SystemExit('pickle was loaded')",))

    manager = SessionManager(RedisStore(redis_client))
    session = manager.load(None)
    session["a"] = 1
    session_id = manager.commit(session).id
    [key] = redis_client.keys("*")
    redis_client.set(key, HEAD + b'\n"a"\t' + pickle.dumps(Boom()))
    assert manager.load(session_id).is_new


def test_redis_restart_mid_run(redis_server: RedisServer) -> None:
    server = RedisServer().start()
    try:
        client = redis.Redis(port=server.port)
        manager = SessionManager(RedisStore(client))
        session = manager.load(None)
        session["a"] = 1
        session_id = manager.commit(session).id
        server.restart()  # no persistence: data and scripts gone
        assert manager.load(session_id).is_new
        fresh = manager.load(None)
        fresh["b"] = 2
        fresh_id = manager.commit(fresh).id
        again = manager.load(fresh_id)
        again["c"] = 3
        manager.commit(again)
        assert dict(manager.load(fresh_id)) == {"b": 2, "c": 3}
    finally:
        server.cleanup()


def test_immediate_flush_writes_each_change(redis_client: redis.Redis) -> None:
    manager = SessionManager(RedisStore(redis_client), flush_mode=FlushMode.IMMEDIATE)
    session = manager.load(None)
    session["a"] = 1
    assert session.id is not None  # stored at once
    other = manager.load(session.id)
    assert dict(other) == {"a": 1}
    session["b"] = 2
    assert dict(manager.load(session.id)) == {"a": 1, "b": 2}


async def test_immediate_flush_async(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(port=redis_server.port)
    manager = AsyncSessionManager(AsyncRedisStore(client), flush_mode=FlushMode.IMMEDIATE)
    session = manager.new_session()
    session["a"] = 1
    session["b"] = 2
    await asyncio.sleep(0.05)
    assert session.id is not None
    assert dict(await manager.load(session.id)) == {"a": 1, "b": 2}
    session["c"] = 3
    await manager.commit(session)
    assert dict(await manager.load(session.id)) == {"a": 1, "b": 2, "c": 3}
    await client.aclose()


def test_decode_responses_client_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="bytes"):
        RedisStore(redis.Redis(port=redis_server.port, decode_responses=True))


_names = st.sampled_from([b'"a"', b'"b"', b'"c"', b"!p", b'"\\t"'])
_values = st.sampled_from([b"1", b'"x"', b"[1,2]", b'{"k":null}', b"true"])


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.dictionaries(_names, _values),
    sets=st.dictionaries(_names, _values),
    deletes=st.lists(_names, max_size=3),
    clear=st.booleans(),
    base=st.sampled_from(["none", "current", "stale"]),
)
def test_lua_merge_matches_python_merge(
    redis_client: redis.Redis,
    start: dict[bytes, bytes],
    sets: dict[bytes, bytes],
    deletes: list[bytes],
    clear: bool,
    base: str,
) -> None:
    """The two implementations of the record merge agree (memory store vs Redis).

    A commit that brings the record it expects to leave gets it stored as it
    is while the stored version is the one it read ("current"); built from an
    older version ("stale": another request wrote meanwhile), it is ignored and
    the change merged into the record as it is now.
    """
    now = int(time.time() * 1000)
    record = Record(Meta(now - 5000, now - 5000, 60_000, now + 3_600_000, 3), start)
    deletes = [name for name in deletes if name not in sets]
    delta = Delta(sets, tuple(deletes), clear)
    store = RedisStore(redis_client)
    key = store.commands.key("Axxxxxxxxxxxxxxxxxxxxxx")
    redis_client.set(key, format_record(record), px=60_000)
    older = Record(Meta(now - 5000, now - 5000, 60_000, now + 3_600_000, 2), {b'"old"': b"0"})
    claimed = {"none": None, "current": record, "stale": older}[base]
    expected_by_client = None if claimed is None else apply(claimed, delta, now)
    meta = store.execute(Apply("Axxxxxxxxxxxxxxxxxxxxxx", delta, now, expected_by_client))
    expected = apply(record, delta, now)
    assert meta == expected.meta
    assert parse_record(redis_client.get(key)) == expected  # type: ignore[arg-type]


def _calls(client: redis.Redis) -> dict[str, int]:
    """Commands run so far, by name: sent by clients or run by scripts."""
    stats = client.info("commandstats")
    return {name[8:]: int(each["calls"]) for name, each in stats.items()}


def _more(client: redis.Redis, before: dict[str, int]) -> dict[str, int]:
    after = _calls(client)
    return {
        name: after[name] - before.get(name, 0)
        for name in after
        if after[name] != before.get(name, 0) and name not in ("info", "config|resetstat")
    }


def test_a_read_is_one_get_and_refreshes_only_when_due(redis_client: redis.Redis) -> None:
    clock = [1_000_000.0]
    manager = SessionManager(
        RedisStore(redis_client),
        timeouts=Timeouts(idle=600, absolute=3600, refresh_share=0.1),
        clock=lambda: clock[0],
    )
    session = manager.new_session()
    session["a"] = 1
    session_id = manager.commit(session).id
    [key] = redis_client.keys("*")
    before = _calls(redis_client)
    clock[0] += 59  # under a tenth of the idle timeout
    assert manager.load(session_id).accessed_at == 1_000_000
    assert _more(redis_client, before) == {"get": 1}
    before = _calls(redis_client)
    clock[0] += 2  # past it: the idle expiry moves
    assert manager.load(session_id).accessed_at == 1_000_061
    # The GET, then the script (its own GET and SET count too; the schedule is
    # not touched: the sweep follows a slid expiry when the old one comes due).
    assert _more(redis_client, before) == {"get": 2, "evalsha": 1, "set": 1}
    assert parse_record(redis_client.get(key)).meta.accessed == 1_000_061_000  # type: ignore[arg-type]


def test_a_record_past_its_time_reads_as_no_session(redis_client: redis.Redis) -> None:
    """Redis drops a key at its TTL; a read a moment before (clocks differ) must not revive it."""
    store = RedisStore(redis_client)
    now = int(time.time() * 1000)
    handle = "Axxxxxxxxxxxxxxxxxxxxxx"
    record = Record(Meta(now - 90_000, now - 90_000, 60_000, now + 60_000, 1), {b'"a"': b"1"})
    redis_client.set(store.commands.key(handle), format_record(record), px=60_000)
    assert store.execute(Read(handle, now, 0.1)) is None
    assert store.execute(Read(handle, now - 40_000, 1.0)) == record  # before its time: found


def test_a_commit_after_an_unseen_commit_merges(redis_client: redis.Redis) -> None:
    """Two requests load the same session; the second commits a version it did not read."""
    manager = SessionManager(RedisStore(redis_client))
    session = manager.new_session()
    session["a"] = 1
    session_id = manager.commit(session).id
    first, second = manager.load(session_id), manager.load(session_id)
    first["b"] = 2
    manager.commit(first)
    before = _calls(redis_client)
    second["c"] = 3
    manager.commit(second)
    second["d"] = 4  # the second knows no longer what is stored: merged again
    manager.commit(second)
    # An anonymous session is in no book: the scripts only GET and SET.
    assert _more(redis_client, before) == {"evalsha": 2, "get": 2, "set": 2}
    assert dict(manager.load(session_id)) == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert manager.load(session_id).version == 4


def test_an_anonymous_session_is_stored_with_one_set(redis_client: redis.Redis) -> None:
    manager = SessionManager(RedisStore(redis_client))
    before = _calls(redis_client)
    session = manager.new_session()
    session.update(PAYLOAD)
    manager.commit(session)
    assert _more(redis_client, before) == {"set": 1}
    assert 0 < redis_client.pttl(redis_client.keys("*")[0]) <= 1800_000
    # Logged in, or with anonymous sessions tracked: the script keeps the books.
    for store, login in (
        (RedisStore(redis_client), True),
        (RedisStore(redis_client, anonymous_events=True), False),
    ):
        manager = SessionManager(store)
        session = manager.new_session()
        session["a"] = 1
        if login:
            manager.login(session, "alice")
        before = _calls(redis_client)
        manager.commit(session)
        assert _more(redis_client, before)["evalsha"] == 1


def test_an_anonymous_create_sent_again_finds_itself(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client)
    now = int(time.time() * 1000)
    record = Record(Meta(now, now, 60_000, now + 60_000, 1), {b'"a"': b"1"})
    handle = "Axxxxxxxxxxxxxxxxxxxxxx"
    assert store.execute(Create(handle, record)) is True
    assert store.execute(Create(handle, record)) is True  # its first reply was lost
    other = Record(Meta(now, now, 60_000, now + 60_000, 1), {b'"a"': b"2"})
    assert store.execute(Create(handle, other)) is False  # taken
    assert parse_record(redis_client.get(store.commands.key(handle))) == record  # type: ignore[arg-type]


def test_unreachable_store_raises_store_unavailable() -> None:
    from sessionhub.connect import RedisSettings, redis_client
    from tests.servers import free_port

    settings = RedisSettings(port=free_port())
    manager = SessionManager(RedisStore(redis_client(settings)))
    session_id = IdScheme().new().id
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unavailable"):
        manager.load(session_id)
    assert time.monotonic() - started < settings.timeout + 0.5  # retried, but bounded
    session = manager.load(None)  # no id: no store call, no error
    session["a"] = 1
    with pytest.raises(StoreUnavailable):
        manager.commit(session)


def test_unreachable_store_can_degrade(caplog: pytest.LogCaptureFixture) -> None:
    from sessionhub.connect import RedisSettings, redis_client
    from tests.servers import free_port

    client = redis_client(RedisSettings(port=free_port()))
    manager = SessionManager(RedisStore(client), degrade_when_unavailable=True)
    session_id = IdScheme().new().id
    with caplog.at_level(logging.WARNING, logger="sessionhub"):
        session = manager.load(session_id)
    assert session.is_new
    session["a"] = 1
    outcome = manager.commit(session)
    assert outcome.id is None
    assert not outcome.send
    assert "not stored" in caplog.text
    assert session_id not in caplog.text


def test_a_repeated_commit_lands_as_a_commit_of_its_own(redis_client: redis.Redis) -> None:
    """What a commit sent again after a lost reply does (docs/operating.md, retries)."""
    manager = SessionManager(RedisStore(redis_client))
    session = manager.load(None)
    session.update(a=1, b=2)
    session_id = manager.commit(session).id
    assert session_id is not None
    store = RedisStore(redis_client)
    handle = manager.load(session_id).handle
    assert handle is not None
    clear_and_set = Apply(handle, Delta({b'"c"': b"3"}, clear=True), NOW)
    # Nothing in between: the same as once (but the version).
    store.execute(clear_and_set)
    store.execute(clear_and_set)
    again = manager.load(session_id)
    assert dict(again) == {"c": 3}
    assert again.version == 3
    # Another commit in between: the repetition lands after it.
    store.execute(clear_and_set)
    store.execute(Apply(handle, Delta({b'"d"': b"4"}), NOW))
    store.execute(clear_and_set)
    assert dict(manager.load(session_id)) == {"c": 3}

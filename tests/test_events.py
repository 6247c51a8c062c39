"""Events in Redis Streams, the expiry sweep, and the self-cleaning user index.

Real Redis (standalone and Cluster), real sub-second TTLs: sessions really
expire, the sweep finds them, consumers read the streams in groups.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sessionhub import (
    AsyncEventConsumer,
    AsyncExpiryWorker,
    AsyncRedisStore,
    AsyncSessionManager,
    EventConsumer,
    ExpiryWorker,
    MemoryStore,
    RedisStore,
    SessionManager,
    Timeouts,
)
from sessionhub.events import Event, EventType, Reason
from sessionhub.record import parse_record
from sessionhub.stores.base import Create
from sessionhub.stores.redis.consumer import EventReader
from sessionhub.stores.redis.store import RedisCommands
from sessionhub.users import SessionLimit
from tests.servers import RedisCluster, RedisServer, free_port
from tests.users_kit import REDIS_KINDS, Kit, Kits, async_client, flush

SHORT = Timeouts(idle=0.3, absolute=60)
# Generous: the machine is shared; what is asserted is "well within 5 s".
BOUND = 5.0


@pytest.fixture(params=REDIS_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str, request: pytest.FixtureRequest) -> RedisServer | RedisCluster:
    found: RedisServer | RedisCluster = request.getfixturevalue(
        "redis_server" if kind.startswith("redis") else "redis_cluster"
    )
    flush(found)
    return found


@pytest.fixture
def make_kit(kind: str, server: RedisServer | RedisCluster) -> Iterator[Kits]:
    with Kits(kind, server) as kits:
        yield kits


def log_in_users(kit: Kit, count: int, prefix: str = "user") -> set[str]:
    """One session for each of `count` users (spread over every shard); their handles."""
    return {kit.handle(kit.login(f"{prefix}-{n}")) for n in range(count)}


def wait_until(condition: Callable[[], bool], timeout: float = BOUND) -> float:
    """Seconds until `condition` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "not within the bound"
        time.sleep(0.05)
    return time.monotonic() - start


def expired(events: list[Event]) -> list[Event]:
    return [event for event in events if event.type is EventType.EXPIRED]


def test_a_group_started_after_the_expiry_receives_every_expired_event_once(
    make_kit: Kits,
) -> None:
    kit = make_kit(timeouts=SHORT)
    handles = log_in_users(kit, 100)
    time.sleep(0.5)  # all expired: no worker ran, no consumer was connected
    worker = kit.worker()
    assert worker.tick() == 100
    assert worker.tick() == 0
    for group in ("audit", "metrics"):  # each group gets everything, once
        consumer = kit.consumer(group, "reader-1")
        events = consumer.read_all()
        found = expired(events)
        assert sorted(e.handle for e in found) == sorted(handles)
        for event in found:
            assert event.principal is not None
            assert event.principal.startswith("user-")
            assert event.expires_at is not None
            assert event.expires_at <= event.at
        consumer.ack(events)
        assert consumer.read_all() == []
        assert kit.consumer(group, "reader-2").read_all() == []


def test_expired_events_name_principals_of_any_shape(make_kit: Kits) -> None:
    kit = make_kit(timeouts=SHORT)
    principals = ['Zoë "the admin"', "tab\tand\nnewline", "😀", "x" * 300]
    handles = {kit.handle(kit.login(principal)): principal for principal in principals}
    time.sleep(0.4)
    kit.worker().tick()
    for found in (expired(kit.events), expired(kit.consumer("g", "c").read_all())):
        assert {e.handle: e.principal for e in found} == handles


def test_a_crash_between_read_and_ack_redelivers(make_kit: Kits) -> None:
    kit = make_kit(timeouts=SHORT)
    handles = log_in_users(kit, 100)
    time.sleep(0.5)
    kit.worker().tick()
    first = kit.consumer("audit", "a")
    delivered = expired(first.read_all())
    assert sorted(e.handle for e in delivered) == sorted(handles)
    del first  # crashed: nothing acked

    restarted = kit.consumer("audit", "a")  # the same consumer, back: its pending events
    again = expired(restarted.read_all())
    assert sorted(e.id or "" for e in again) == sorted(e.id or "" for e in delivered)
    assert kit.consumer("audit", "b").read_all() == []  # nothing new for the others

    time.sleep(0.3)
    rescuer = kit.consumer("audit", "b")  # "a" is gone for good: take its events over
    claimed = rescuer.claim(min_idle=0.2, count=1000)
    assert sorted(e.handle for e in expired(claimed)) == sorted(handles)
    rescuer.ack(claimed)
    assert rescuer.claim(min_idle=0) == []
    assert kit.consumer("audit", "a").read_all() == []
    assert kit.consumer("other-group", "x").read_all() != []  # untouched by the acks


def test_expired_events_arrive_within_the_bound(make_kit: Kits) -> None:
    kit = make_kit(timeouts=SHORT)
    consumer = kit.consumer("live", "reader", start="$")
    consumer.read(block=0)  # the group exists before anything happens
    handles = log_in_users(kit, 20)
    received: list[tuple[Event, float]] = []

    async def consume(reader: AsyncEventConsumer) -> None:
        async with AsyncExpiryWorker(kit.store, interval=0.5):
            while len(received) < 20:
                received.extend((e, time.time()) for e in expired(await reader.read(block=0.2)))

    reader = consumer.consumer
    if isinstance(reader, AsyncEventConsumer):
        kit.run(asyncio.wait_for(consume(reader), 30))
    else:
        with ExpiryWorker(kit.store, interval=0.5):
            while len(received) < 20:
                received.extend((e, time.time()) for e in expired(reader.read(block=0.2)))
    assert {event.handle for event, _ in received} == handles
    for event, arrival in received:
        assert event.expires_at is not None
        assert arrival - event.expires_at < BOUND


def test_two_instances_sweeping_report_each_expiry_once(
    kind: str, server: RedisServer | RedisCluster, make_kit: Kits
) -> None:
    kit = make_kit(timeouts=SHORT)
    handles = log_in_users(kit, 100)
    other = make_kit()  # a second app instance: its own client and store
    workers = [kit.worker(interval=0.05), other.worker(interval=0.05)]
    time.sleep(0.1)
    counts = [0, 0]
    leaders = []
    # Both tick in turn while the sessions expire; then, both at once.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for index, worker in enumerate(workers):
            counts[index] += worker.tick()
        leaders.append(tuple(worker.leading for worker in workers))
        time.sleep(0.02)
    assert all(sum(each) == 1 for each in leaders)  # exactly one leads at any time
    assert sum(counts) == 100
    assert 0 in counts  # the other one never swept
    if kit.loop is None:  # and two at the very same moment, from two threads
        rivals = [ExpiryWorker(RedisStore(kit.store.client), lease_name="race") for _ in range(2)]
        log_in_users(kit, 50, prefix="late")
        time.sleep(0.5)
        results: list[int] = []
        threads = [threading.Thread(target=lambda w=w: results.append(w.tick())) for w in rivals]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [0, 50]
    consumer = kit.consumer("audit", "reader")
    found = expired(consumer.read_all())
    reported = [e.handle for e in found]
    assert len(reported) == len(set(reported))  # no duplicates at all
    assert handles <= set(reported)


def test_the_lease_moves_on_when_the_sweeping_instance_dies(
    make_kit: Kits,
) -> None:
    kit = make_kit(timeouts=SHORT)
    first = kit.worker(interval=0.1, lease_ttl=0.4)
    second = make_kit().worker(interval=0.1, lease_ttl=0.4)
    assert first.tick() == 0
    assert first.leading
    assert second.tick() == 0
    assert not second.leading
    handles = log_in_users(kit, 10)
    time.sleep(0.5)  # "first" died without giving the lease up: it lapses
    assert second.tick() == 10
    assert second.leading
    assert {e.handle for e in expired(kit.consumer("g", "c").read_all())} == handles


@pytest.mark.parametrize("sweeping", [True, False])
def test_index_keys_of_1000_users_disappear_after_their_sessions_expire(
    make_kit: Kits, sweeping: bool
) -> None:
    idle = 3.0  # long enough to log 1,000 users in on a busy machine
    kit = make_kit(timeouts=Timeouts(idle=idle, absolute=60))
    log_in_users(kit, 1000)
    last_expiry = time.monotonic() + idle
    assert len(kit.keys("sh:u:*")) == 1000
    worker = kit.worker()

    def gone() -> bool:
        if sweeping:
            worker.tick()
        return kit.keys("sh:u:*") == []

    wait_until(gone, timeout=idle + BOUND)
    assert time.monotonic() - last_expiry < BOUND
    if sweeping:  # the schedules empty out too (their last entries may be a tick behind)
        wait_until(lambda: worker.tick() >= 0 and kit.keys("sh:x:*") == [], timeout=1.0)
        assert kit.keys("sh:s:*") == []


def test_expired_entries_leave_the_index_of_a_user_still_logged_in(
    make_kit: Kits,
) -> None:
    kit = make_kit(timeouts=Timeouts(idle=0.4, absolute=60, refresh_share=0.1))
    busy, idle = kit.login("alice"), kit.login("alice")
    busy_handle, idle_handle = kit.handle(busy), kit.handle(idle)
    worker = kit.worker()
    [index] = kit.keys("sh:u:*")

    def swept() -> bool:
        assert kit.alive(busy)  # kept alive by use; slides the index's TTL along
        worker.tick()
        return idle_handle in {e.handle for e in expired(kit.events)}

    wait_until(swept)
    assert [each.handle for each in kit.sessions_of("alice")] == [busy_handle]
    raw = _raw(kit)
    assert raw.zrange(index, 0, -1) == [(busy_handle or "")[1:].encode()]
    record_ttl = raw.pttl(kit.store.commands.key(busy_handle))
    assert 0 < raw.pttl(index) <= record_ttl + 50  # never outlives its last session


def _raw(kit: Kit) -> redis.Redis | redis.cluster.RedisCluster:
    if isinstance(kit.server, RedisCluster):
        return redis.cluster.RedisCluster(host="127.0.0.1", port=kit.server.ports[0])
    assert isinstance(kit.server, RedisServer)
    return kit.server.client()


def test_listeners_and_the_stream_tell_the_same_story(make_kit: Kits) -> None:
    kit = make_kit(timeouts=SHORT, anonymous_events=True, session_limit=SessionLimit(1))
    session = kit.load(kit.anonymous())
    session.rotate()
    rotated = kit.commit(session)
    assert rotated is not None
    alice = kit.login("alice", from_id=rotated)
    kit.login("alice")  # the limit pushes the first one out
    bob = kit.login("bob")
    session = kit.load(bob)
    session.invalidate()
    kit.commit(session)
    kit.anonymous()
    time.sleep(0.4)
    kit.worker().tick()
    assert not kit.alive(alice)
    streamed = kit.consumer("audit", "reader").read_all()

    def story(events: list[Event]) -> list[str]:
        return sorted(
            repr((e.type, e.handle, e.previous, e.reason, e.principal, e.created_at, e.at))
            for e in events
        )

    assert story(streamed) == story(kit.events)
    kinds = {e.type for e in streamed}
    assert kinds == set(EventType)
    reasons = {e.reason for e in streamed if e.type is EventType.DELETED}
    assert reasons == {Reason.LIMIT, Reason.LOGOUT}
    assert all(len(e.handle) == 23 for e in streamed)  # handles, never ids


def test_the_streams_stay_bounded(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    kit = Kit("redis-sync", redis_server, stream_length=50)
    try:
        for _ in range(600):  # one user: one shard, one stream
            kit.login("alice")
        [stream] = kit.keys("sh:e:*")
        length = _raw(kit).xlen(stream)
        assert 50 <= length <= 150  # MAXLEN ~ trims whole nodes of 100 entries
    finally:
        kit.close()


def test_no_stream_when_its_length_is_zero(
    kind: str, server: RedisServer | RedisCluster, make_kit: Kits
) -> None:
    kit = make_kit(stream_length=0)
    kit.login("alice")
    assert kit.keys("sh:e:*") == []
    assert [e.type for e in kit.events] == [EventType.CREATED, EventType.AUTHENTICATED]


def test_a_retried_create_does_not_bring_back_a_session_ended_meanwhile(
    make_kit: Kits,
) -> None:
    kit = make_kit(session_limit=SessionLimit(1))
    first = kit.login("alice")
    handle = kit.handle(first)
    blob = _raw(kit).get(kit.store.commands.key(handle))
    assert isinstance(blob, bytes)
    retry = Create(handle, parse_record(blob), SessionLimit(1))  # its reply was "lost"
    kit.login("alice")  # ends the first (limit 1) right after its creation
    assert kit.execute(retry) is False  # key taken: the lifecycle would pick a new id
    assert not kit.alive(first)
    assert len(kit.sessions_of("alice")) == 1
    assert [e.reason for e in kit.events if e.type is EventType.DELETED] == [Reason.LIMIT]


# -- the in-process side: memory store, listeners, workers ----------------------


def test_memory_store_reports_expiry_to_listeners() -> None:
    store = MemoryStore()
    events: list[Event] = []
    store.listeners.add(events.append)
    manager = SessionManager(store, timeouts=SHORT)
    session = manager.load(None)
    manager.login(session, "alice")
    manager.commit(session)
    handle = session.handle
    with ExpiryWorker(store, interval=0.05) as worker:
        wait_until(lambda: bool(expired(events)))
        assert worker.sweep.leading
    [event] = expired(events)
    assert (event.handle, event.principal) == (handle, "alice")
    assert manager.sessions_of("alice") == []
    rivals = [ExpiryWorker(store), ExpiryWorker(store)]
    assert [rival.tick() for rival in rivals] == [0, 0]
    assert [rival.sweep.leading for rival in rivals] == [True, False]


async def test_async_worker_and_consumer_on_redis(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    store = AsyncRedisStore(async_client(redis_server))
    manager = AsyncSessionManager(store, timeouts=SHORT)
    session = manager.new_session()
    manager.login(session, "alice")
    await manager.commit(session)
    consumer = AsyncEventConsumer(store, "audit", "reader")
    async with AsyncExpiryWorker(store, interval=0.05) as worker:
        found: list[Event] = []
        for _ in range(100):
            found += expired(await consumer.read(block=0.1))
            if found:
                break
        assert worker.sweep.leading
    assert [e.handle for e in found] == [session.handle]
    assert not worker.sweep.leading  # stopped: the lease was given up
    assert redis_server.client().exists(store.commands.lease_key("expiry")) == 0
    await store.client.aclose()


def test_a_stopped_worker_gives_its_lease_up(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    store = RedisStore(redis_server.client())
    with ExpiryWorker(store, interval=0.05) as first:
        wait_until(lambda: first.sweep.leading)
        second = ExpiryWorker(store, interval=0.05)
        assert second.tick() == 0
        assert not second.sweep.leading
    assert second.tick() == 0
    assert second.sweep.leading  # at once: no need to wait for the lease to lapse


def test_the_worker_survives_an_unreachable_store(caplog: pytest.LogCaptureFixture) -> None:
    no_retries = Retry(NoBackoff(), 0)
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.1, retry=no_retries)
    store = RedisStore(client)
    worker = ExpiryWorker(store, interval=0.05)
    with caplog.at_level(logging.WARNING, logger="sessionhub"):
        assert worker.tick() == 0
        worker.start()
        time.sleep(0.2)
        worker.stop()
    assert "expiry sweep skipped" in caplog.text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": 0}, "positive"),
        ({"batch": 0}, "positive"),
        ({"interval": 1, "lease_ttl": 1}, "longer than interval"),
    ],
)
def test_worker_settings_are_checked(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExpiryWorker(MemoryStore(), **options)


@pytest.mark.parametrize(
    ("group", "consumer", "start", "message"),
    [
        ("", "c", "0", "non-empty"),
        ("g", "", "0", "non-empty"),
        ("g", "c", "now", "start must be"),
    ],
)
def test_consumer_settings_are_checked(group: str, consumer: str, start: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventReader(RedisCommands(), group, consumer, start=start)


def test_consumer_bad_input(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    consumer = EventConsumer(RedisStore(redis_server.client()), "g", "c")
    with pytest.raises(ValueError, match="read from a stream"):
        consumer.ack([Event(EventType.CREATED, "A" * 23, 0.0)])
    with pytest.raises(ValueError, match="count"):
        consumer.read(count=0)
    with pytest.raises(ValueError, match="block"):
        consumer.read(block=-1)
    assert consumer.read(block=0) == []


def test_foreign_and_trimmed_entries_are_skipped_and_acked(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.flushall()
    store = RedisStore(client)
    consumer = EventConsumer(store, "g", "c")
    assert consumer.read(block=0) == []  # creates the group on every stream
    stream = store.commands.stream_key("A")
    client.xadd(stream, {"hello": "world"})  # not one of ours
    entry = client.xadd(stream, {"t": "created", "h": "A" * 23, "at": "1"})
    [event] = consumer.read(block=0)  # the foreign entry is skipped
    assert (event.type, event.handle, event.at) == (EventType.CREATED, "A" * 23, 0.001)
    client.xdel(stream, entry)  # trimmed away before it was acked
    restarted = EventConsumer(store, "g", "c")
    assert restarted.read(block=0) == []  # its pending entry is gone: acked away
    assert client.xpending(stream, "g")["pending"] == 0  # nothing redelivered forever

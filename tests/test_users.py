"""The per-user contract: list a user's sessions, end them, limit them.

One suite on every store: memory, Redis and Redis Cluster, sync and asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from sessionhub import LoginRefused, Timeouts
from sessionhub.events import EventType, Reason
from sessionhub.ids import IdScheme
from sessionhub.users import LimitPolicy, SessionLimit
from tests.conftest import (
    AsyncCountingConnection,
    CountingConnection,
    async_counting_client,
    counting_client,
)
from tests.harness import FakeClock
from tests.servers import RedisCluster, RedisServer
from tests.users_kit import KINDS, Kit, Kits

MakeKit = Kits


@pytest.fixture(params=KINDS)
def make_kit(request: pytest.FixtureRequest) -> Iterator[Kits]:
    """Builds kits of one kind on a clean store; closes them after the test."""
    kind: str = request.param
    server: RedisServer | RedisCluster | None = None
    if kind.startswith("redis"):
        server = request.getfixturevalue("redis_server")
    elif kind.startswith("cluster"):
        server = request.getfixturevalue("redis_cluster")
    with Kits(kind, server) as kits:
        yield kits


@pytest.fixture
def kit(make_kit: MakeKit) -> Kit:
    return make_kit(clock=FakeClock())


def test_three_devices_listed_then_all_but_the_current_ended(kit: Kit) -> None:
    clock = kit.manager.lifecycle.clock
    assert isinstance(clock, FakeClock)
    ids = []
    for device in ("laptop", "phone", "tablet"):
        ids.append(kit.login("alice", agent=device, ip="192.0.2.1"))
        clock.advance(1)
    kit.login("bob")  # another user, untouched throughout
    listed = kit.sessions_of("alice")
    assert [each.client_info["agent"] for each in listed] == ["laptop", "phone", "tablet"]
    assert [each.handle for each in listed] == [kit.load(i).handle for i in ids]
    for each, session_id in zip(listed, ids, strict=True):
        assert each.principal == "alice"
        assert each.handle != session_id  # a handle, never the id
        assert each.created_at <= each.accessed_at < each.expires_at
        assert each.authenticated_at == each.created_at
    current = kit.load(ids[2])

    ended = kit.end_sessions("alice", except_current=current)

    assert sorted(ended) == sorted(each.handle for each in listed[:2])
    assert kit.load(ids[0]).is_new  # rejected on their next request
    assert kit.load(ids[1]).is_new
    assert kit.alive(ids[2])
    assert [each.client_info["agent"] for each in kit.sessions_of("alice")] == ["tablet"]
    assert len(kit.sessions_of("bob")) == 1
    deleted = [e for e in kit.events if e.type is EventType.DELETED]
    assert sorted(e.handle for e in deleted) == sorted(ended)
    assert {e.reason for e in deleted} == {Reason.USER_ENDED}
    assert {e.principal for e in deleted} == {"alice"}


def test_end_sessions_without_current_ends_all_as_admin(kit: Kit) -> None:
    ids = [kit.login("alice") for _ in range(3)]
    assert len(kit.end_sessions("alice")) == 3
    assert not any(kit.alive(i) for i in ids)
    assert kit.sessions_of("alice") == []
    assert {e.reason for e in kit.events if e.type is EventType.DELETED} == {Reason.ADMIN}
    assert kit.end_sessions("alice") == []
    assert kit.end_sessions("nobody-ever") == []


def test_end_one_session_by_handle(kit: Kit) -> None:
    first, second = kit.login("alice"), kit.login("alice")
    handle = kit.load(first).handle
    assert handle is not None
    # From a user's "my devices" page: only their own sessions.
    assert not kit.end_session(handle, principal="mallory")
    assert kit.alive(first)
    assert kit.end_session(handle, principal="alice", reason=Reason.USER_ENDED)
    assert not kit.alive(first)
    assert kit.alive(second)
    assert not kit.end_session(handle)  # already gone
    [deleted] = [e for e in kit.events if e.type is EventType.DELETED]
    assert (deleted.handle, deleted.reason) == (handle, Reason.USER_ENDED)
    other = kit.load(second).handle
    assert other is not None
    assert kit.end_session(other)
    assert kit.events[-1].reason is Reason.ADMIN
    assert kit.sessions_of("alice") == []


@pytest.mark.parametrize(
    "call",
    [
        lambda kit: kit.sessions_of(""),
        lambda kit: kit.sessions_of(42),
        lambda kit: kit.end_sessions(""),
        lambda kit: kit.end_sessions("alice", except_current="not a handle"),
        lambda kit: kit.end_session("not a handle"),
        lambda kit: kit.end_session("A" * 24),
        lambda kit: kit.end_session(None),
        lambda kit: kit.end_session("$" * 23),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(kit: Kit, call: Callable[[Kit], object]) -> None:
    ids = [kit.login("alice") for _ in range(2)]
    with pytest.raises(ValueError, match=r"principal|handle"):
        call(kit)
    assert all(kit.alive(i) for i in ids)
    assert len(kit.sessions_of("alice")) == 2


def test_an_unknown_reason_is_refused(kit: Kit) -> None:
    session_id = kit.login("alice")
    with pytest.raises(ValueError, match="bogus"):
        kit.end_session(kit.handle(session_id), reason="bogus")
    with pytest.raises(ValueError, match="bogus"):
        kit.end_sessions("alice", reason="bogus")
    assert kit.alive(session_id)


@pytest.mark.parametrize(
    "principal", ['Zoë "the admin" <zoe@example.com>', "tab\tand\nnewline", "😀", "x" * 300]
)
def test_principals_of_any_shape(kit: Kit, principal: str) -> None:
    first, second = kit.login(principal, agent="a"), kit.login(principal, agent="b")
    listed = kit.sessions_of(principal)
    assert [each.principal for each in listed] == [principal, principal]
    assert {e.principal for e in kit.events} == {principal}  # as the scripts reported it
    assert kit.end_sessions(principal, except_current=kit.load(second)) == [kit.handle(first)]
    assert kit.events[-1].principal == principal


def test_logout_leaves_the_index(kit: Kit) -> None:
    first, second = kit.login("alice"), kit.login("alice")
    session = kit.load(first)
    session.invalidate()
    kit.commit(session)
    assert [each.handle for each in kit.sessions_of("alice")] == [kit.load(second).handle]
    assert kit.events[-1].type is EventType.DELETED
    assert kit.events[-1].reason is Reason.LOGOUT
    assert kit.events[-1].handle == session.handle or kit.events[-1].principal == "alice"


def test_login_from_an_anonymous_session_is_indexed(kit: Kit) -> None:
    anonymous = kit.anonymous()
    logged_in = kit.login("carol", from_id=anonymous, agent="kiosk")
    assert logged_in[0] == IdScheme().shard_of("carol")
    assert kit.load(anonymous).is_new
    [listed] = kit.sessions_of("carol")
    assert listed.handle == kit.load(logged_in).handle
    assert listed.client_info == {"agent": "kiosk"}
    [event] = [e for e in kit.events if e.type is EventType.AUTHENTICATED]
    assert event.handle == listed.handle
    assert event.previous is not None
    assert event.previous[0] == anonymous[0]  # the old handle, in the old shard


def test_rotation_and_switching_users_keep_the_indexes_right(kit: Kit) -> None:
    session_id = kit.login("alice")
    session = kit.load(session_id)
    session.rotate()
    rotated = kit.commit(session)
    assert rotated is not None
    assert [each.handle for each in kit.sessions_of("alice")] == [session.handle]
    assert kit.events.pop().type is EventType.ROTATED
    kit.manager.login(session, "bob")  # another user on the same browser
    as_bob = kit.commit(session)
    assert as_bob is not None
    assert kit.sessions_of("alice") == []
    assert [each.handle for each in kit.sessions_of("bob")] == [session.handle]
    assert kit.events[-1].type is EventType.AUTHENTICATED
    assert kit.events[-1].principal == "bob"


def test_client_info_changes_show_in_the_listing(kit: Kit) -> None:
    session_id = kit.login("alice", agent="old")
    session = kit.load(session_id)
    session.client_info = {"agent": "new", "ip": "198.51.100.7"}
    kit.commit(session)
    [listed] = kit.sessions_of("alice")
    assert listed.client_info == {"agent": "new", "ip": "198.51.100.7"}


def test_limit_ends_the_oldest(make_kit: MakeKit) -> None:
    clock = FakeClock()
    kit = make_kit(clock=clock, session_limit=SessionLimit(2))
    ids = []
    for _ in range(4):
        ids.append(kit.login("alice"))
        clock.advance(1)
    assert [kit.alive(i) for i in ids] == [False, False, True, True]
    assert [each.handle for each in kit.sessions_of("alice")] == [
        kit.load(i).handle for i in ids[2:]
    ]
    limited = [e for e in kit.events if e.reason is Reason.LIMIT]
    assert len(limited) == 2
    assert kit.login("bob")  # the limit is per principal


def test_limit_refuses_and_the_session_stays_as_it_was(make_kit: MakeKit) -> None:
    kit = make_kit(clock=FakeClock(), session_limit=SessionLimit(2, LimitPolicy.REFUSE))
    ids = [kit.login("alice") for _ in range(2)]
    anonymous = kit.anonymous()
    session = kit.load(anonymous)
    kit.manager.login(session, "alice")
    with pytest.raises(LoginRefused, match="alice") as refused:
        kit.commit(session)
    assert refused.value.max_sessions == 2
    assert session.principal is None
    assert session.id == anonymous  # not rotated
    assert kit.alive(anonymous)
    assert kit.load(anonymous).principal is None
    session["after"] = True  # the request goes on, anonymous
    assert kit.commit(session) == anonymous
    assert kit.load(anonymous)["after"] is True
    fresh = kit.load(None)
    kit.manager.login(fresh, "alice")
    with pytest.raises(LoginRefused):
        kit.commit(fresh)
    assert fresh.is_new
    assert all(kit.alive(i) for i in ids)
    assert len(kit.sessions_of("alice")) == 2
    kit.end_sessions("alice", except_current=kit.load(ids[0]))  # room again
    assert kit.login("alice")


def test_logging_in_again_as_the_same_user_is_not_a_new_session(make_kit: MakeKit) -> None:
    kit = make_kit(clock=FakeClock(), session_limit=SessionLimit(1, LimitPolicy.REFUSE))
    session_id = kit.login("alice")
    again = kit.login("alice", from_id=session_id)  # re-authentication: same user
    assert again != session_id
    assert [each.handle for each in kit.sessions_of("alice")] == [kit.load(again).handle]


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SessionLimit(0)
    with pytest.raises(TypeError):
        SessionLimit(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'sometimes'"):
        SessionLimit(2, "sometimes")  # type: ignore[arg-type]


def _anonymous_life(kit: Kit) -> None:
    """Create, rotate, end an anonymous session."""
    session = kit.load(kit.anonymous())
    session.rotate()
    kit.commit(session)
    session.invalidate()
    kit.commit(session)


def test_anonymous_sessions_are_not_tracked_unless_asked(make_kit: MakeKit) -> None:
    quiet = make_kit(clock=FakeClock())
    _anonymous_life(quiet)
    assert quiet.events == []
    if quiet.is_redis:
        # No schedule, no stream, no record: only the rotation's short-lived forward.
        [forward] = quiet.keys()
        assert b":s:" in forward
    tracked = make_kit(clock=FakeClock(), anonymous_events=True)
    _anonymous_life(tracked)
    kinds = [e.type for e in tracked.events]
    assert kinds == [EventType.CREATED, EventType.ROTATED, EventType.DELETED]
    assert tracked.events[1].previous == tracked.events[0].handle
    assert {e.principal for e in tracked.events} == {None}


def test_timestamps_of_events(make_kit: MakeKit) -> None:
    clock = FakeClock()
    kit = make_kit(clock=clock, timeouts=Timeouts(idle=100, absolute=1000))
    session_id = kit.login("alice")
    created, authenticated = kit.events
    assert (created.type, authenticated.type) == (EventType.CREATED, EventType.AUTHENTICATED)
    for event in (created, authenticated):
        assert event.at == clock.now
        assert event.created_at == clock.now
        assert event.expires_at == clock.now + 100
        assert event.handle == kit.load(session_id).handle


@pytest.mark.parametrize("kind", ["redis-sync", "redis-async"])
def test_one_round_trip_each(kind: str, redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    clock = FakeClock()
    client: object
    counter: type[CountingConnection | AsyncCountingConnection]
    if kind == "redis-sync":
        client, counter = counting_client(redis_server.port), CountingConnection
    else:
        client, counter = async_counting_client(redis_server.port), AsyncCountingConnection
    kit = Kit(kind, redis_server, client=client, clock=clock, session_limit=SessionLimit(5))
    try:
        warm_up = kit.login("alice")  # every script once, so none is sent in full below
        clock.advance(600)
        warm = kit.load(warm_up)  # the read that slides the expiry
        warm["x"] = 0
        kit.commit(warm)
        kit.login("alice", from_id=kit.anonymous())
        kit.sessions_of("alice")
        kit.end_sessions("alice", except_current=kit.load(warm_up))
        assert kit.end_session(kit.load(warm_up).handle or "")
        session_id = kit.login("alice")
        session = kit.load(session_id)
        anonymous = kit.anonymous()

        def change() -> None:
            session["x"] = clock.now
            kit.commit(session)

        def slide() -> None:
            clock.advance(600)  # past the refresh share: the read slides the expiry
            assert kit.load(session_id).accessed_at == clock.now

        handle = session.handle or ""
        # What touches the user's other sessions reads the index first: a script may
        # touch only the keys it declares, and which sessions are in it is data.
        checks: list[tuple[str, Callable[[], object], int]] = [
            ("read", lambda: kit.load(session_id), 1),
            (
                "read + login from it, limit checked",
                lambda: kit.login("alice", from_id=anonymous),
                3,
            ),
            # A GET, then the script that slides them (once per refresh share).
            ("read that slides the expiry and the index's", slide, 2),
            ("commit of a change", change, 1),
            ("login of a new session, limit checked", lambda: kit.login("alice"), 2),
            ("list", lambda: kit.sessions_of("alice"), 2),
            ("end all but one", lambda: kit.end_sessions("alice", except_current=handle), 2),
            ("end one of a principal's", lambda: kit.end_session(handle, principal="alice"), 3),
        ]
        for name, action, expected in checks:
            before = counter.sent
            action()
            assert counter.sent - before == expected, name
    finally:
        kit.close()


@pytest.mark.parametrize("kind", ["redis-sync", "cluster-sync"])
def test_damaged_records_do_not_break_the_listing(
    kind: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("redis_server" if kind == "redis-sync" else "redis_cluster")
    with Kits(kind, server) as kits:
        kit = kits(clock=FakeClock())
        garbage, odd, fine = (kit.login("alice", agent=str(n)) for n in range(3))
        client = kit.store.client
        client.set(kit.store.commands.key(kit.handle(garbage)), b"not a record", keepttl=True)
        key = kit.store.commands.key(kit.handle(odd))
        blob = client.get(key)
        damaged = re.sub(
            rb"\n!a\t[^\n]*", b"\n!a\tsoon", re.sub(rb"\n!c\t[^\n]*", b"\n!c\t{", blob)
        )
        client.set(key, damaged, keepttl=True)
        listed = {each.handle: each for each in kit.sessions_of("alice")}
        assert set(listed) == {kit.handle(odd), kit.handle(fine)}  # the garbage is left out
        assert listed[kit.handle(odd)].authenticated_at is None
        assert listed[kit.handle(odd)].client_info == {}
        assert listed[kit.handle(fine)].client_info == {"agent": "2"}
        assert len(kit.end_sessions("alice")) == 3  # all ended, damaged or not
        assert kit.sessions_of("alice") == []

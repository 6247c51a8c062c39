"""The store contract: one suite, run on memory and Redis, sync and asyncio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessionhub import SessionEnded, Timeouts
from sessionhub.ids import IdScheme
from tests.harness import FakeClock, Harness
from tests.servers import RedisServer

KINDS = ["memory-sync", "memory-async", "redis-sync", "redis-async"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def h(kind: str, redis_server: RedisServer, clock: FakeClock) -> Iterator[Harness]:
    redis_server.client().flushall()
    harness = Harness(kind, redis_server.port, clock=clock)
    yield harness
    harness.close()


def test_new_session_costs_nothing_until_written(h: Harness) -> None:
    before = h.round_trips()
    session = h.load(None)
    assert session.is_new
    assert session.id is None
    outcome = h.commit(session)
    assert outcome.id is None
    assert not outcome.send
    assert h.round_trips() == before
    assert h.keys() == []


def test_write_creates_then_read_returns_it(h: Harness) -> None:
    session = h.load(None)
    session["user_id"] = 42
    session["cart"] = {"sku-1": 2}
    outcome = h.commit(session)
    assert outcome.send
    assert outcome.id is not None
    assert len(outcome.id) == 44
    again = h.load(outcome.id)
    assert not again.is_new
    assert dict(again) == {"user_id": 42, "cart": {"sku-1": 2}}
    assert again.version == 1


def warm_up(h: Harness) -> None:
    """Run every operation once, so Redis has cached every script."""
    session = h.load(h.store(a=1))
    session["b"] = 1
    h.commit(session)
    session.rotate()
    h.commit(session)
    session.invalidate()
    h.commit(session)


def test_round_trips_per_operation(h: Harness) -> None:
    warm_up(h)
    session_id = h.store(a=1)
    start = h.round_trips()
    session = h.load(session_id)
    assert h.round_trips() - start == 1  # read
    h.commit(session)
    assert h.round_trips() - start == 1  # untouched: no write
    session["b"] = 2
    h.commit(session)
    assert h.round_trips() - start == 2  # commit of a change
    session.rotate()
    h.commit(session)
    assert h.round_trips() - start == 3  # rotate
    session.invalidate()
    h.commit(session)
    assert h.round_trips() - start == 4  # delete


@pytest.mark.parametrize("kind", ["redis-sync", "redis-async"])
def test_scripts_come_back_after_script_flush(h: Harness, redis_server: RedisServer) -> None:
    warm_up(h)
    session_id = h.store(a=1)
    redis_server.client().script_flush()
    start = h.round_trips()
    session = h.load(session_id)  # a GET: no script
    session["b"] = 2
    h.commit(session)
    assert h.round_trips() - start == 3  # GET; EVALSHA refused, EVAL sent once
    assert dict(h.load(session_id)) == {"a": 1, "b": 2}
    session = h.load(session_id)
    session["c"] = 3
    start = h.round_trips()
    h.commit(session)
    assert h.round_trips() - start == 1


def test_reassigning_an_equal_value_writes_nothing(h: Harness) -> None:
    session_id = h.store(a={"x": 1})
    session = h.load(session_id)
    session["a"] = {"x": 1}
    start = h.round_trips()
    h.commit(session)
    assert h.round_trips() == start


def test_in_place_mutation_is_saved(h: Harness) -> None:
    session_id = h.store(cart=["a"])
    session = h.load(session_id)
    cart = session["cart"]
    assert isinstance(cart, list)
    cart.append("b")
    h.commit(session)
    assert h.load(session_id)["cart"] == ["a", "b"]
    session = h.load(session_id)
    cart = session["cart"]
    assert isinstance(cart, list)
    cart.append("c")
    session["cart"] = cart
    h.commit(session)
    assert h.load(session_id)["cart"] == ["a", "b", "c"]


def test_delete_and_clear(h: Harness) -> None:
    session_id = h.store(a=1, b=2, c=3)
    session = h.load(session_id)
    del session["a"]
    assert session.pop("b") == 2
    h.commit(session)
    assert dict(h.load(session_id)) == {"c": 3}
    session = h.load(session_id)
    session.clear()  # ends the session, as an emptied cookie session ends
    session["d"] = 4  # then a new one
    outcome = h.commit(session)
    assert outcome.id not in (None, session_id)
    assert h.load(session_id).is_new
    assert dict(h.load(outcome.id)) == {"d": 4}


def test_attribute_names_of_any_shape(h: Harness) -> None:
    names = {'quote"d': 1, "tab\tand\nnewline": 2, "!bang": 3, "ünïcode": 4, "": 5}
    session_id = h.store(**names)
    assert dict(h.load(session_id)) == names


def test_non_json_values_are_refused_when_assigned(h: Harness) -> None:
    session = h.load(None)
    with pytest.raises(TypeError, match=r"'when'.*not JSON serializable"):
        session["when"] = object()  # type: ignore[assignment]
    with pytest.raises(TypeError):
        session[1] = "x"  # type: ignore[index]
    assert dict(session) == {}


def test_overlapping_commits_keep_both_attributes(h: Harness) -> None:
    session_id = h.store(base=0)
    first, second = h.load(session_id), h.load(session_id)
    first["a"] = 1
    second["b"] = 2
    h.commit(first)
    h.commit(second)
    assert dict(h.load(session_id)) == {"base": 0, "a": 1, "b": 2}


def test_deleted_session_is_not_resurrected(h: Harness) -> None:
    session_id = h.store(a=1)
    holder = h.load(session_id)
    ender = h.load(session_id)
    ender.invalidate()
    h.commit(ender)
    holder["b"] = 2
    with pytest.raises(SessionEnded):
        h.commit(holder)  # the end wins, and says so
    assert h.load(session_id).is_new
    assert h.keys() == []


def test_rotation_keeps_data_and_kills_old_id(h: Harness) -> None:
    session_id = h.store(a=1)
    session = h.load(session_id)
    session.rotate()
    session["b"] = 2
    outcome = h.commit(session)
    assert outcome.send
    assert outcome.id not in (None, session_id)
    assert h.load(session_id).is_new
    assert dict(h.load(outcome.id)) == {"a": 1, "b": 2}
    assert len(h.keys()) == (2 if h.is_redis else 1)  # and, on Redis, the old id's forward


def test_login_binds_principal_and_rotates(h: Harness, clock: FakeClock) -> None:
    session_id = h.store(cart=[1])
    session = h.load(session_id)
    h.manager.login(session, "alice")
    outcome = h.commit(session)
    assert outcome.id != session_id
    assert outcome.id is not None
    assert outcome.id[0] == IdScheme().shard_of("alice")
    logged_in = h.load(outcome.id)
    assert logged_in.principal == "alice"
    assert logged_in.authenticated_at == pytest.approx(clock.now)
    assert logged_in["cart"] == [1]
    assert h.load(session_id).is_new


def test_login_on_a_new_session_creates_it(h: Harness) -> None:
    session = h.load(None)
    h.manager.login(session, "bob")
    outcome = h.commit(session)
    assert outcome.id is not None
    assert h.load(outcome.id).principal == "bob"


def test_invalidate_then_write_starts_a_new_session(h: Harness) -> None:
    session_id = h.store(a=1)
    session = h.load(session_id)
    session.invalidate()
    session["fresh"] = True
    outcome = h.commit(session)
    assert outcome.id not in (None, session_id)
    assert h.load(session_id).is_new
    assert dict(h.load(outcome.id)) == {"fresh": True}


def test_refresh_only_when_due(kind: str, redis_server: RedisServer) -> None:
    clock = FakeClock()
    h = Harness(kind, redis_server.port, clock=clock, timeouts=Timeouts(idle=100, absolute=1000))
    try:
        session_id = h.store(a=1)
        created = clock.now
        clock.advance(5)  # less than 10% of idle: no refresh
        session = h.load(session_id)
        assert session.accessed_at == created
        assert session.expires_at == created + 100
        clock.advance(6)  # 11 s since the last refresh: refreshed
        session = h.load(session_id)
        assert session.accessed_at == clock.now
        assert session.expires_at == clock.now + 100
    finally:
        h.close()


def test_absolute_deadline_caps_sliding(kind: str, redis_server: RedisServer) -> None:
    clock = FakeClock()
    h = Harness(kind, redis_server.port, clock=clock, timeouts=Timeouts(idle=100, absolute=150))
    try:
        session_id = h.store(a=1)
        start = clock.now
        clock.advance(90)
        session = h.load(session_id)
        assert session.expires_at == start + 150  # not now + 100
        assert session.deadline == start + 150
    finally:
        h.close()


def test_remember_me_extends_idle_and_deadline(kind: str, redis_server: RedisServer) -> None:
    clock = FakeClock()
    h = Harness(kind, redis_server.port, clock=clock, timeouts=Timeouts(idle=100, absolute=150))
    try:
        session = h.load(None)
        session["a"] = 1
        session.remember(idle=1000, absolute=5000)
        outcome = h.commit(session)
        assert outcome.persistent
        assert outcome.id is not None
        loaded = h.load(outcome.id)
        assert loaded.idle_timeout == 1000
        assert loaded.deadline == clock.now + 5000
        assert loaded.persistent
    finally:
        h.close()


def test_expired_by_clock_on_memory_store(redis_server: RedisServer) -> None:
    clock = FakeClock()
    for kind in ("memory-sync", "memory-async"):
        h = Harness(
            kind, redis_server.port, clock=clock, timeouts=Timeouts(idle=100, absolute=1000)
        )
        session_id = h.store(a=1)
        clock.advance(101)
        assert h.load(session_id).is_new
        h.close()


@pytest.mark.parametrize("raw", ["", "x", "A" * 44 + "=", "A" * 45, "$" + "A" * 43, "A" * 5000])
def test_malformed_ids_cost_no_store_call(h: Harness, raw: str) -> None:
    start = h.round_trips()
    session = h.load(raw)
    assert session.is_new
    assert h.round_trips() == start


def test_unknown_well_formed_id_is_not_adopted(h: Harness) -> None:
    forged = IdScheme().new().id
    session = h.load(forged)
    assert session.is_new
    session["a"] = 1
    outcome = h.commit(session)
    assert outcome.id != forged
    assert h.load(forged).is_new


def test_get_marks_the_session_accessed_and_tracks_mutable_values(h: Harness) -> None:
    session_id = h.store(cart=["a"])
    session = h.load(session_id)
    assert session.get("missing") is None
    assert session.get("missing", 7) == 7
    assert session.accessed  # the response depends on the session: Vary
    cart = session.get("cart")
    assert isinstance(cart, list)
    cart.append("b")  # mutated in place, never assigned back: still saved
    h.commit(session)
    assert h.load(session_id)["cart"] == ["a", "b"]

"""`Session` is a `dict`, as Starlette's and Flask's sessions are: every dict method
works as on a dict, and every one that changes it is saved."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from sessionhub import Session, Timeouts
from tests.harness import FakeClock, Harness
from tests.servers import RedisServer

Change = Callable[[Session], Any]


@pytest.fixture(params=["memory-sync", "redis-async"])
def h(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Harness]:
    redis_server.client().flushall()
    harness = Harness(str(request.param), redis_server.port)
    yield harness
    harness.close()


def test_a_session_is_a_dict_and_serializes_as_one(h: Harness) -> None:
    session = h.load(h.store(user_id=42, cart={"sku-1": 2}))
    assert isinstance(session, dict)
    expected = {"user_id": 42, "cart": {"sku-1": 2}}
    assert json.loads(json.dumps(session)) == expected
    assert orjson.loads(orjson.dumps(session)) == expected
    assert session == expected
    assert dict(session) == expected
    assert session.copy() == expected
    assert (session | {"x": 1}) == {**expected, "x": 1}
    assert sorted(session.keys()) == ["cart", "user_id"]
    assert list(session.values()) == [42, {"sku-1": 2}]
    assert session.accessed


CHANGES: dict[str, tuple[Change, dict[str, Any]]] = {
    "setitem": (lambda s: s.__setitem__("b", 2), {"a": 1, "b": 2, "c": [3]}),
    "delitem": (lambda s: s.__delitem__("a"), {"c": [3]}),
    "pop": (lambda s: s.pop("a"), {"c": [3]}),
    "pop missing": (lambda s: s.pop("zz", None), {"a": 1, "c": [3]}),
    "popitem (the last set)": (lambda s: s.popitem(), {"a": 1}),
    "setdefault new": (lambda s: s.setdefault("d", {"n": 1}), {"a": 1, "c": [3], "d": {"n": 1}}),
    "setdefault then mutate": (
        lambda s: s.setdefault("c", []).append(4),  # type: ignore[union-attr]
        {"a": 1, "c": [3, 4]},
    ),
    "update": (lambda s: s.update({"a": 10}, e=5), {"a": 10, "c": [3], "e": 5}),
    "update pairs": (lambda s: s.update([("f", 6)]), {"a": 1, "c": [3], "f": 6}),
    "ior": (lambda s: s.__ior__({"g": 7}), {"a": 1, "c": [3], "g": 7}),
    "mutate a value read by get": (
        lambda s: s.get("c").append(9),  # type: ignore[union-attr]
        {"a": 1, "c": [3, 9]},
    ),
    "mutate a value read by items": (
        lambda s: dict(s.items())["c"].append(8),
        {"a": 1, "c": [3, 8]},
    ),
}


@pytest.mark.parametrize("name", CHANGES)
def test_every_change_is_saved(h: Harness, name: str) -> None:
    change, expected = CHANGES[name]
    session_id = h.store(a=1, c=[3])
    session = h.load(session_id)
    change(session)
    assert dict(session) == expected
    h.commit(session)
    assert dict(h.load(session_id)) == expected


def test_popitem_removes_the_last_item_as_a_dict_does(h: Harness) -> None:
    session = h.load(None)
    session.update(first=1, second=2)
    assert session.popitem() == ("second", 2)
    assert dict(session) == {"first": 1}


def test_clear_ends_the_session_and_with_it_the_user_s(h: Harness) -> None:
    session = h.load(None)
    h.manager.login(session, "alice")
    session["cart"] = ["book"]
    session_id = h.commit(session).id
    assert session_id is not None
    emptied = h.load(session_id)
    emptied.clear()
    assert dict(emptied) == {}
    outcome = h.commit(emptied)
    assert outcome.send  # the client is told to drop the id
    assert outcome.id is None
    assert h.load(session_id).is_new
    assert h.run(h.manager.sessions_of("alice")) == []  # no longer anyone's
    assert h.records() == []


def test_non_json_values_and_names_are_refused_by_every_door(h: Harness) -> None:
    session = h.load(None)
    with pytest.raises(TypeError):
        session.update(when=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        session |= {"when": object()}
    with pytest.raises(TypeError):
        session.setdefault("when", object())  # type: ignore[arg-type]
    assert dict(session) == {}


def test_a_remembered_session_read_right_after_its_write_sends_no_cookie(
    redis_server: RedisServer,
) -> None:
    """The cookie of a remembered session is renewed when a read moves its expiry,
    not whenever a read falls in the same millisecond as the last write."""
    for kind in ("memory-sync", "redis-sync"):
        clock = FakeClock()
        h = Harness(kind, redis_server.port, clock=clock, timeouts=Timeouts(refresh_share=0.1))
        try:
            session = h.load(None)
            session["a"] = 1
            session.remember(idle=86_400)
            session_id = h.commit(session).id
            sends = [h.commit(h.load(session_id)).send for _ in range(20)]  # the same instant
            assert sends == [False] * 20
            clock.advance(86_400 * 0.2)  # past the refresh share: the expiry moves
            assert h.commit(h.load(session_id)).send
        finally:
            h.close()


def test_a_session_made_from_a_mapping_holds_it_unchanged() -> None:
    """As Starlette's own ``Session({...})``: for an application's unit tests."""
    session = Session({"a": "1"}, b=2)
    assert not session.modified
    session.pop("missing", None)  # not a look at what it holds, nor a change
    assert not session.accessed
    assert not session.modified
    session.setdefault("a", "2")
    assert not session.modified
    session.setdefault("c", 3)
    assert session.modified
    assert session == {"a": "1", "b": 2, "c": 3}
    with pytest.raises(TypeError):
        Session({"when": object()})

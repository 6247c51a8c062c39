"""The failover watch's rules, fed the sentinels' messages: no I/O.

The messages are the ones three sentinels published in measured failovers
(tests/test_sentinel_failover.py runs the real thing).
"""

from __future__ import annotations

import pytest

from sessionhub.stores.redis.durable import refusal
from sessionhub.stores.redis.failover import (
    Abort,
    FailoverState,
    FailoverTooLong,
    Step,
    Switch,
    is_read,
    sentinel_event,
)

SERVICE = "sessionhub"
OLD, NEW = ("127.0.0.1", 6379), ("127.0.0.1", 6380)
LEADER, OTHER, THIRD = "s1:26379", "s2:26379", "s3:26379"
SETTLE = 3.0

# A graceful failover (SENTINEL FAILOVER), as the sentinel running it publishes it.
LEADER_STEPS = [
    ("+try-failover", f"master {SERVICE} 127.0.0.1 6379"),
    ("+elected-leader", f"master {SERVICE} 127.0.0.1 6379"),
    ("+failover-state-select-slave", f"master {SERVICE} 127.0.0.1 6379"),
    ("+selected-slave", f"slave 127.0.0.1:6380 127.0.0.1 6380 @ {SERVICE} 127.0.0.1 6379"),
    (
        "+failover-state-send-slaveof-noone",
        f"slave 127.0.0.1:6380 127.0.0.1 6380 @ {SERVICE} 127.0.0.1 6379",
    ),
    (
        "+failover-state-wait-promotion",
        f"slave 127.0.0.1:6380 127.0.0.1 6380 @ {SERVICE} 127.0.0.1 6379",
    ),
    ("+promoted-slave", f"slave 127.0.0.1:6380 127.0.0.1 6380 @ {SERVICE} 127.0.0.1 6379"),
    ("+failover-state-reconf-slaves", f"master {SERVICE} 127.0.0.1 6379"),
    ("+slave-reconf-sent", f"slave 127.0.0.1:6381 127.0.0.1 6381 @ {SERVICE} 127.0.0.1 6379"),
    ("+failover-end", f"master {SERVICE} 127.0.0.1 6379"),
]
SWITCH = ("+switch-master", f"{SERVICE} 127.0.0.1 6379 127.0.0.1 6380")


def _state(*sentinels: str, failover_timeout: float = 5.0) -> FailoverState:
    state = FailoverState(settle=SETTLE)
    for sentinel in sentinels:
        state.subscribed(sentinel, OLD, False, failover_timeout, 0.0)
    assert not state.holding(0.0)
    # The first agreement counts as a switch: connections opened before it are dropped.
    assert (state.primary, state.switches) == (OLD, 1)
    return state


def _publish(state: FailoverState, sentinel: str, message: tuple[str, str], now: float) -> None:
    event = sentinel_event(*message, SERVICE)
    assert event is not None, message
    state.heard(sentinel, event, now)


# -- the messages --------------------------------------------------------------------------


def test_every_step_of_a_failover_is_a_step_and_the_switch_names_the_new_primary() -> None:
    for message in LEADER_STEPS:
        assert sentinel_event(*message, SERVICE) == Step()
    assert sentinel_event(*SWITCH, SERVICE) == Switch(NEW)
    for abort in ("-failover-abort-not-elected", "-failover-abort-no-good-slave"):
        assert sentinel_event(abort, f"master {SERVICE} 127.0.0.1 6379", SERVICE) == Abort()


@pytest.mark.parametrize(
    ("channel", "data"),
    [
        ("+try-failover", "master other 127.0.0.1 7000"),  # another service
        ("+switch-master", "other 127.0.0.1 7000 127.0.0.1 7001"),
        ("+selected-slave", "slave 127.0.0.1:7001 127.0.0.1 7001 @ other 127.0.0.1 7000"),
        ("+switch-master", f"{SERVICE} 127.0.0.1"),  # malformed
        ("+new-epoch", "1"),  # no service named: not a step of its own
        ("+vote-for-leader", "0ea80c9c5431d42736ff3d1d17b773b5d9d4ccf5 1"),
        ("+sdown", f"master {SERVICE} 127.0.0.1 6379"),  # down is not a failover yet
        ("+config-update-from", f"sentinel abc 127.0.0.1 26379 @ {SERVICE} 127.0.0.1 6379"),
    ],
)
def test_what_is_not_a_failover_step_of_this_service(channel: str, data: str) -> None:
    assert sentinel_event(channel, data, SERVICE) is None


def test_only_reads_go_on_during_a_failover() -> None:
    assert is_read(("GET", "k"))
    assert is_read((b"XREVRANGE", "s", "+", "-"))
    assert not is_read(("SET", "k", "v"))
    assert not is_read(("DEL", "k"))
    assert not is_read(("XACK", "s", "g", "1-0"))


# -- the state machine ---------------------------------------------------------------------


def test_a_graceful_failover_holds_writes_from_its_first_step_to_the_switch() -> None:
    state = _state(LEADER, OTHER, THIRD)
    _publish(state, LEADER, LEADER_STEPS[0], 1.0)
    assert state.holding(1.0)
    assert state.pause(write=False, deadline=4.0, now=1.0) is None  # reads go on
    assert state.pause(write=True, deadline=4.0, now=1.0) is not None
    for now, message in enumerate(LEADER_STEPS[1:], start=2):
        _publish(state, LEADER, message, now / 10 + 1)
        assert state.holding(now / 10 + 1)
    # The switch spreads: until every sentinel names the new primary, writes wait.
    _publish(state, OTHER, SWITCH, 2.1)
    _publish(state, THIRD, SWITCH, 2.1)
    assert state.holding(2.1)
    assert state.switches == 1
    _publish(state, LEADER, SWITCH, 2.2)
    assert not state.holding(2.2)
    assert (state.primary, state.switches) == (NEW, 2)
    # A second failover, back: counted again.
    _publish(state, OTHER, LEADER_STEPS[0], 20.0)
    assert state.holding(20.0)
    back = ("+switch-master", f"{SERVICE} 127.0.0.1 6380 127.0.0.1 6379")
    for sentinel in (LEADER, OTHER, THIRD):
        _publish(state, sentinel, back, 21.0)
    assert not state.holding(21.0)
    assert (state.primary, state.switches) == (OLD, 3)


def test_an_aborted_failover_releases_writes_without_a_switch() -> None:
    state = _state(LEADER, OTHER)
    _publish(state, LEADER, LEADER_STEPS[0], 1.0)
    _publish(state, OTHER, LEADER_STEPS[0], 1.0)  # both tried
    abort = ("-failover-abort-not-elected", f"master {SERVICE} 127.0.0.1 6379")
    _publish(state, OTHER, abort, 1.1)
    assert state.holding(1.1), "the elected sentinel still runs it"
    _publish(state, LEADER, ("-failover-abort-no-good-slave", abort[1]), 1.2)
    assert not state.holding(1.2)
    assert (state.primary, state.switches) == (OLD, 1)


def test_a_sentinel_that_never_aborts_holds_no_longer_than_its_failover_timeout() -> None:
    state = _state(LEADER, failover_timeout=5.0)
    _publish(state, LEADER, LEADER_STEPS[0], 1.0)
    _publish(state, LEADER, LEADER_STEPS[1], 2.0)
    assert state.holding(6.9)
    assert state.pause(write=True, deadline=100.0, now=6.0) == pytest.approx(1.0)
    assert not state.holding(7.0)


def test_a_sentinel_behind_the_others_is_waited_for_at_most_settle_seconds() -> None:
    state = _state(LEADER, OTHER, THIRD)
    _publish(state, LEADER, SWITCH, 1.0)
    _publish(state, OTHER, SWITCH, 1.0)
    assert state.holding(1.0 + SETTLE - 0.01)
    assert state.pause(write=True, deadline=100.0, now=2.0) == pytest.approx(SETTLE - 1.0)
    assert not state.holding(1.0 + SETTLE)  # THIRD is cut off from the others
    assert (state.primary, state.switches) == (NEW, 2)


def test_a_lost_sentinel_no_longer_counts_and_is_asked_again_when_back() -> None:
    state = _state(LEADER, OTHER)
    _publish(state, LEADER, LEADER_STEPS[0], 1.0)
    state.lost(LEADER, 1.5)
    assert not state.holding(1.5)  # nothing heard of a failover any more
    # Back, mid-failover (SENTINEL MASTER says failover_in_progress): held again.
    state.subscribed(LEADER, OLD, True, 5.0, 2.0)
    assert state.holding(2.0)
    # What a sentinel says before it is asked counts for nothing.
    state.heard(THIRD, Switch(NEW), 2.0)
    assert state.holding(2.0)
    state.subscribed(LEADER, NEW, False, 5.0, 3.0)
    state.subscribed(OTHER, NEW, False, 5.0, 3.0)
    assert not state.holding(3.0)
    assert (state.primary, state.switches) == (NEW, 2)


def test_a_write_held_until_its_deadline_fails() -> None:
    state = _state(LEADER)
    _publish(state, LEADER, LEADER_STEPS[0], 1.0)
    assert state.pause(write=True, deadline=3.0, now=2.0) == pytest.approx(1.0)
    with pytest.raises(FailoverTooLong) as failed:
        state.pause(write=True, deadline=3.0, now=3.0)
    assert refusal(failed.value) == failed.value.reason
    assert "failing over" in failed.value.reason
    assert "failover_wait" in failed.value.reason


def test_waiters_are_woken_by_what_the_sentinels_say() -> None:
    state = _state(LEADER)
    woken: list[str] = []
    with state.watching(lambda: woken.append("woken")):
        _publish(state, LEADER, LEADER_STEPS[0], 1.0)
        state.lost(LEADER, 2.0)
    state.subscribed(LEADER, OLD, False, 5.0, 3.0)
    assert woken == ["woken", "woken"]

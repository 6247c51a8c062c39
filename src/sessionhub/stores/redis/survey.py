"""What operators ask of the books the Redis store keeps: counts, events, a tail.

The CLI, the admin dashboard and the metrics read the same keys the scripts
write (see `store`): each shard's expiry schedule and event stream. Nothing
here scans the keyspace; every function costs one call per shard (64), each
O(log n) or bounded by a `limit`, so it is cheap enough for a page load or a
scrape.

*Live sessions* are the schedules' entries not yet due: the sessions the
store tracks, that is the logged-in ones, plus the anonymous ones when the
store has `anonymous_events=True`.

Written once, as generators of calls, like the store: `RedisStore.run` and
`AsyncRedisStore.arun` send them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...events import Event, event_from_fields
from ...ids import SHARD_ALPHABET
from .consumer import _entries
from .store import Call, Calls, Pause, RedisCommands

__all__ = [
    "StreamTail",
    "Window",
    "chronological",
    "entry_time",
    "events_since",
    "live_sessions",
    "recent_events",
]


def entry_time(entry_id: str) -> int:
    """The milliseconds part of a stream entry id ("1712345678901-0")."""
    return int(entry_id.partition("-")[0])


def chronological(event: Event) -> tuple[int, float, int]:
    """A sort key putting events of all streams in time order: the stream entry's
    time (Redis's clock), then the event's own time, then the entry's sequence."""
    ms, _, seq = (event.id or "0").partition("-")
    return int(ms), event.at, int(seq or 0)


def _events(stream: str, entries: Iterable[Any]) -> list[Event]:
    found = []
    for raw_id, fields in entries:
        entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        try:
            found.append(event_from_fields(fields, id=entry_id, stream=stream))
        except ValueError:
            continue  # not written by sessionhub, or trimmed
    return found


def live_sessions(commands: RedisCommands, now: int) -> Calls:
    """Tracked sessions not yet due, per shard character (`now` in ms)."""
    counts: dict[str, int] = {}
    for shard in SHARD_ALPHABET:
        counts[shard] = int(
            (yield Call(("ZCOUNT", commands.schedule_key(shard), f"({now}", "+inf")))
        )
    return counts


@dataclass(frozen=True, slots=True)
class Window:
    """The events of a time window, oldest first.

    A stream holding more than the limit in the window was read only back to
    `complete_from` (seconds since the epoch): counts before it are short.
    """

    events: list[Event]
    since: float
    complete_from: float


def events_since(commands: RedisCommands, since: int, limit: int) -> Calls:
    """The events of every stream from `since` (ms) on, at most `limit` per stream."""
    events: list[Event] = []
    complete_from = since
    for stream in commands.stream_keys():
        entries = yield Call(("XREVRANGE", stream, "+", f"{since}-0", "COUNT", limit))
        found = _events(stream, entries)
        if len(entries) >= limit and entries:
            oldest = entries[-1][0]
            complete_from = max(complete_from, entry_time(oldest.decode()))
        events += found
    events.sort(key=chronological)
    return Window(events, since / 1000, complete_from / 1000)


def recent_events(commands: RedisCommands, count: int) -> Calls:
    """The `count` newest events of all streams, newest first."""
    events: list[Event] = []
    for stream in commands.stream_keys():
        events += _events(stream, (yield Call(("XREVRANGE", stream, "+", "-", "COUNT", count))))
    events.sort(key=chronological, reverse=True)
    return events[:count]


class StreamTail:
    """Follows every shard's stream from a position, like ``tail -f`` (no consumer group).

    `start`: "$" (only events from now on), "0" (every event still retained),
    or a stream entry id ("1712345678901-0", or just milliseconds): the events
    after it. Printing the id of the last event seen and starting again from
    it resumes where a previous run stopped.
    """

    def __init__(self, commands: RedisCommands, start: str = "$") -> None:
        if start not in ("$", "0"):
            ms, _, seq = start.partition("-")
            if not ms.isdigit() or (seq and not seq.isdigit()):
                raise ValueError(f"not a stream position: {start[:40]!r} (use $, 0 or an event id)")
        self.commands = commands
        self.start = start
        self.positions: dict[str, str] = {}

    def setup(self) -> Calls:
        streams = self.commands.stream_keys()
        if self.start != "$":
            self.positions = dict.fromkeys(
                streams, self.start if "-" in self.start else f"{self.start}-0"
            )
            return
        # "$" means "now" for each stream: its newest entry, so that nothing
        # published between two reads is missed.
        for stream in streams:
            newest = yield Call(("XREVRANGE", stream, "+", "-", "COUNT", 1))
            self.positions[stream] = newest[0][0].decode() if newest else "0-0"

    def read(self, count: int, block: float) -> Calls:
        """The next events (at most `count` per stream), oldest first; waits up to
        `block` seconds when there are none (0: return at once)."""
        if not self.positions:
            yield from self.setup()
        positions = self.positions
        entries: list[Any] = []
        if not self.commands.cluster:
            wait = ("BLOCK", max(1, round(block * 1000))) if block else ()
            reply = yield Call(
                ("XREAD", "COUNT", count, *wait, "STREAMS", *positions, *positions.values())
            )
            entries = _entries(reply)
        else:
            # A Cluster reads streams of different slots one by one, and cannot block on them.
            for stream, since in positions.items():
                entries += _entries(
                    (yield Call(("XREAD", "COUNT", count, "STREAMS", stream, since)))
                )
            if not entries and block:
                yield Pause(block)
        events: list[Event] = []
        for stream, entry_id, fields in entries:
            positions[stream] = entry_id  # entries come oldest first in each stream
            events += _events(stream, [(entry_id, fields)])
        events.sort(key=chronological)
        return events

"""Reading session events back from the Redis Streams, in consumer groups.

Each of the 64 shards has its own stream (so no slot is hot on a Cluster); a
consumer reads all of them. Delivery is at-least-once: an event is delivered
to one consumer of each group and stays *pending* until that consumer acks
it. A consumer that restarts under the same name first gets its own pending
events again; events left pending by a consumer that is gone for good are
taken over with `claim`. A group created after events were published starts
at the oldest event still in the streams (`start="0"`), so a consumer that
was offline catches up -- as far back as the streams' bounded length reaches.

The reading is written once, in `EventReader`, as generators of calls;
`EventConsumer` and `AsyncEventConsumer` only send them through a store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis import exceptions as redis_errors

from ...events import Event, event_from_fields
from .store import AsyncRedisStore, Call, Calls, Pause, RedisCommands, RedisStore

__all__ = ["AsyncEventConsumer", "EventConsumer", "EventReader"]

_NEW = ">"

_Entry = tuple[str, str, Any]  # stream, entry id, fields (None once trimmed)


def _entries(reply: Any) -> list[_Entry]:
    """XREADGROUP's reply as a flat list of entries, whatever the protocol version."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    found = []
    for name, entries in streams:
        if entries and isinstance(entries[0], list) and isinstance(entries[0][0], list | tuple):
            entries = entries[0]  # RESP3 nests the entries one level deeper
        found += [(name.decode(), entry_id.decode(), fields) for entry_id, fields in entries]
    return found


def _event(stream: str, entry_id: str, fields: Any) -> Event | None:
    if not fields:  # trimmed away while pending: nothing left to deliver
        return None
    try:
        return event_from_fields(fields, id=entry_id, stream=stream)
    except ValueError:
        return None  # not written by sessionhub


class EventReader:
    """What a consumer sends (no I/O). `start`: where a new group begins, "0" or "$"."""

    def __init__(
        self, commands: RedisCommands, group: str, consumer: str, *, start: str = "0"
    ) -> None:
        if not group or not consumer:
            raise ValueError("group and consumer must be non-empty")
        if start not in ("0", "$"):
            raise ValueError('start must be "0" (all retained events) or "$" (new ones only)')
        self.commands = commands
        self.group = group
        self.consumer = consumer
        self.start = start
        self.streams = commands.stream_keys()
        self._ready = False
        # Where each stream's own pending events have been read up to; a stream
        # drops out once they are all read again, then only new events are read.
        self._pending = dict.fromkeys(self.streams, "0")

    def setup(self) -> Calls:
        """Create the group on every stream (creating the streams), once."""
        for stream in self.streams:
            try:
                yield Call(("XGROUP", "CREATE", stream, self.group, self.start, "MKSTREAM"))
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._ready = True

    def read(self, count: int, block: float) -> Calls:
        """Up to `count` events per stream: first this consumer's pending ones, then new.

        With nothing to read, waits up to `block` seconds for new events.
        """
        if count < 1 or block < 0:
            raise ValueError("count must be positive and block not negative")
        if not self._ready:
            yield from self.setup()
        while self._pending:
            ids = dict(self._pending)
            entries = yield from self._fetch(ids, count, 0)
            for stream in ids:
                mine = [entry_id for name, entry_id, _ in entries if name == stream]
                if mine:
                    self._pending[stream] = mine[-1]
                else:
                    del self._pending[stream]
            events = yield from self._deliverable(entries)
            if events:
                return events
        entries = yield from self._fetch(dict.fromkeys(self.streams, _NEW), count, block)
        return (yield from self._deliverable(entries))

    def _fetch(self, ids: dict[str, str], count: int, block: float) -> Calls:
        head = ("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count)
        if not self.commands.cluster:
            wait = ("BLOCK", max(1, round(block * 1000))) if block else ()
            reply = yield Call((*head, *wait, "STREAMS", *ids, *ids.values()))
            return _entries(reply)
        # A Cluster cannot read streams of different slots in one call, nor block on them.
        entries: list[_Entry] = []
        for stream, since in ids.items():
            entries += _entries((yield Call((*head, "STREAMS", stream, since))))
        if not entries and block:
            yield Pause(block)
        return entries

    def _deliverable(self, entries: list[_Entry]) -> Calls:
        """The events among `entries`; the rest (trimmed, or not events) are acked away."""
        events: list[Event] = []
        dropped: dict[str, list[str]] = {}
        for stream, entry_id, fields in entries:
            event = _event(stream, entry_id, fields)
            if event is None:
                dropped.setdefault(stream, []).append(entry_id)
            else:
                events.append(event)
        yield from self._ack(dropped)
        return events

    def ack(self, events: Iterable[Event]) -> Calls:
        by_stream: dict[str, list[str]] = {}
        for event in events:
            if event.stream is None or event.id is None:
                raise ValueError("only events read from a stream can be acknowledged")
            by_stream.setdefault(event.stream, []).append(event.id)
        yield from self._ack(by_stream)

    def _ack(self, by_stream: dict[str, list[str]]) -> Calls:
        for stream, ids in by_stream.items():
            yield Call(("XACK", stream, self.group, *ids))

    def claim(self, min_idle: float, count: int) -> Calls:
        """Take over up to `count` events per stream that have been pending longer
        than `min_idle` seconds: read by a consumer that never acked them."""
        if not self._ready:
            yield from self.setup()
        idle = round(min_idle * 1000)
        entries: list[_Entry] = []
        for stream in self.streams:
            command = ("XAUTOCLAIM", stream, self.group, self.consumer, idle, "0-0", "COUNT", count)
            reply = yield Call(command)
            entries += [(stream, entry_id.decode(), fields) for entry_id, fields in reply[1]]
        return (yield from self._deliverable(entries))


class EventConsumer:
    """One consumer of a group, reading through a `RedisStore` (for its client).

    Give it a client whose socket timeout is longer than `block`. Handle the
    events `read` returns, then `ack` them; an event not acked is delivered
    again (to this consumer after a restart, or to whoever `claim`s it).
    """

    def __init__(self, store: RedisStore, group: str, consumer: str, *, start: str = "0") -> None:
        self.store = store
        self.reader = EventReader(store.commands, group, consumer, start=start)

    def read(self, count: int = 100, block: float = 1.0) -> list[Event]:
        events: list[Event] = self.store.run(self.reader.read(count, block))
        return events

    def ack(self, events: Iterable[Event]) -> None:
        self.store.run(self.reader.ack(events))

    def claim(self, min_idle: float = 60.0, count: int = 100) -> list[Event]:
        events: list[Event] = self.store.run(self.reader.claim(min_idle, count))
        return events


class AsyncEventConsumer:
    """`EventConsumer` for asyncio, through an `AsyncRedisStore`."""

    def __init__(
        self, store: AsyncRedisStore, group: str, consumer: str, *, start: str = "0"
    ) -> None:
        self.store = store
        self.reader = EventReader(store.commands, group, consumer, start=start)

    async def read(self, count: int = 100, block: float = 1.0) -> list[Event]:
        events: list[Event] = await self.store.arun(self.reader.read(count, block))
        return events

    async def ack(self, events: Iterable[Event]) -> None:
        await self.store.arun(self.reader.ack(events))

    async def claim(self, min_idle: float = 60.0, count: int = 100) -> list[Event]:
        events: list[Event] = await self.store.arun(self.reader.claim(min_idle, count))
        return events

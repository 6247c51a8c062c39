"""`sessionhub monitor`: session events as they happen, one line each.

Like ``redis-cli monitor``, but semantic: logins, rotations, logouts, admin
ends, expiries, read from the event streams (so it sees every instance's
events, and misses none while it runs). Two ways to resume:

* ``--from ID``: each line starts with its event id; start again from the
  last one printed (or from ``0``: all retained events; ``10m``: the last ten
  minutes; the default ``$``: from now on);
* ``--group NAME``: read as a consumer group, acknowledging each event once
  printed; a restart with the same group (and ``--consumer``) goes on after
  the last acknowledged event, and several monitors of one group share the
  events between them.
"""

from __future__ import annotations

import datetime
import time
from typing import Annotated

import orjson
import typer

from ..events import Event
from ..stores.redis.consumer import EventConsumer
from ..stores.redis.survey import StreamTail, chronological
from .common import (
    ConfigOption,
    NamespaceOption,
    UrlOption,
    connect,
    event_fields,
    fail,
    printable,
)

__all__ = ["monitor", "start_position"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Not repeating what was given: an operator may have pasted a session id.
_FROM_HELP = "--from takes $, 0, an event id (1712345678901-0) or a time ago: 10m, 2h..."


def start_position(text: str, now: float) -> str | None:
    """--from as a stream position: $, 0, an event id, or a duration ago ("10m")."""
    if text in ("$", "0") or text.replace("-", "", 1).isdigit():
        return text
    number, unit = text[:-1], text[-1:]
    if unit in _UNITS and number.isdigit():
        return f"{int((now - int(number) * _UNITS[unit]) * 1000)}-0"
    return None


def line(event: Event) -> str:
    moment = datetime.datetime.fromtimestamp(event.at, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]
    parts = [event.id or "-", moment, f"{event.type.value:<13}", event.handle]
    parts.append(printable(event.principal) if event.principal else "-")
    if event.previous:
        parts.append(f"was {event.previous}")
    if event.reason:
        parts.append(f"reason {event.reason.value}")
    return "  ".join(parts)


def monitor(
    start: Annotated[
        str, typer.Option("--from", help="$ (now), 0 (all retained), an event id, or 10m/2h ago.")
    ] = "$",
    group: Annotated[
        str | None, typer.Option(help="Read as this consumer group (resumes where it stopped).")
    ] = None,
    consumer: Annotated[str, typer.Option(help="Consumer name within --group.")] = "monitor",
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    follow: Annotated[
        bool, typer.Option(help="Wait for new events; --no-follow stops when caught up.")
    ] = True,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
) -> None:
    """Print session events from the event streams as they happen (Ctrl-C stops)."""
    position = start_position(start, time.time())
    if position is None:
        fail(_FROM_HELP, 2)
    printed = 0
    with connect(url, namespace, config) as deployment:
        store = deployment.store
        # One read waits for new events for at most half the socket timeout: a blocked
        # read that outlasts it would look like a Redis that stopped answering.
        block = deployment.settings.redis.socket_timeout / 2 if follow else 0
        if group is not None:
            reader = EventConsumer(store, group, consumer, start="0" if position == "0" else "$")

            def read() -> list[Event]:
                # A group's reply comes stream by stream: put it back in time order.
                events = reader.read(count=100, block=block)
                return sorted(events, key=chronological)

        else:
            try:
                tail = StreamTail(store.commands, position)
            except ValueError:
                fail(_FROM_HELP, 2)

            def read() -> list[Event]:
                events: list[Event] = store.run(tail.read(100, block))
                return events

        try:
            while count is None or printed < count:
                events = read()
                if not events and not follow:
                    break
                if count is not None:
                    events = events[: count - printed]
                for event in events:
                    typer.echo(orjson.dumps(event_fields(event)).decode() if json else line(event))
                printed += len(events)
                if group is not None and events:
                    reader.ack(events)
        except KeyboardInterrupt:
            pass

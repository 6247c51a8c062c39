"""Session events: what happened to which session, and in-process listeners.

Every store reports what it changed as `Event`s: `created`, `rotated`,
`authenticated`, `deleted` (with a `Reason`) and `expired`. An event names the
session by its handle, never by its id, so events can be logged and shipped
freely.

The Redis store also appends each event to a Redis Stream inside the script
that makes the change (atomic with it); `sessionhub.stores.redis.consumer`
reads them back in consumer groups. The in-process `Listeners` of a store see
the events *this process* caused, synchronously, right after the change.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import orjson

__all__ = [
    "Event",
    "EventType",
    "Listener",
    "Listeners",
    "Reason",
    "decode_principal",
    "event_from_fields",
]

logger = logging.getLogger("sessionhub")


class EventType(enum.StrEnum):
    #: A session was stored for the first time.
    CREATED = "created"
    #: A session's id changed; `previous` is the handle that stopped working.
    ROTATED = "rotated"
    #: A principal was bound to a session (login). Login rotates the id, so
    #: `previous` is set when the session existed before.
    AUTHENTICATED = "authenticated"
    #: A session was ended on purpose; `reason` says why.
    DELETED = "deleted"
    #: A session timed out (idle or absolute); `expires_at` is when.
    EXPIRED = "expired"


class Reason(enum.StrEnum):
    #: The user logged out of this session.
    LOGOUT = "logout"
    #: An operator (or the application on its own behalf) ended it.
    ADMIN = "admin"
    #: A login beyond the per-user session limit pushed it out.
    LIMIT = "limit"
    #: The user ended it from another of their sessions ("log out everywhere").
    USER_ENDED = "user-ended"


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to one session. Times are seconds since the epoch.

    `id` and `stream` are set on events read from a Redis Stream: they are
    what `ack` needs.
    """

    type: EventType
    handle: str
    at: float
    principal: str | None = None
    previous: str | None = None
    reason: Reason | None = None
    created_at: float | None = None
    expires_at: float | None = None
    id: str | None = None
    stream: str | None = None


def _seconds(raw: bytes | None) -> float | None:
    return None if raw is None else int(raw) / 1000


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def event_from_fields(
    fields: Mapping[bytes, bytes], *, id: str | None = None, stream: str | None = None
) -> Event:
    """The event a stream entry (or a script's reply) describes.

    The field names are short to keep stream entries small: t type, h handle,
    at time, p principal, o previous handle, r reason, c created, x expiry.
    ValueError if the entry is not an event.
    """
    try:
        kind = EventType(fields[b"t"].decode())
        reason = fields.get(b"r")
        return Event(
            type=kind,
            handle=fields[b"h"].decode(),
            at=int(fields[b"at"]) / 1000,
            principal=_text(fields.get(b"p")),
            previous=_text(fields.get(b"o")),
            reason=None if reason is None else Reason(reason.decode()),
            created_at=_seconds(fields.get(b"c")),
            expires_at=_seconds(fields.get(b"x")),
            id=id,
            stream=stream,
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a session event: {exc}") from None


def decode_principal(raw: bytes | None) -> str | None:
    """A stored principal (a JSON string) as text."""
    if raw is None:
        return None
    value = orjson.loads(raw)
    return value if isinstance(value, str) else None


Listener = Callable[[Event], None]


class Listeners:
    """Callbacks told about events as they happen in this process.

    A listener runs synchronously, in the thread (or event loop) that made the
    change, so it must be quick; an exception it raises is logged and
    swallowed -- a listener can never fail a request.
    """

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def add(self, listener: Listener) -> Callable[[], None]:
        """Start calling `listener`; returns a function that stops it."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(each for each in self._listeners if each is not listener)

        return remove

    def emit(self, events: Iterable[Event]) -> None:
        listeners = self._listeners
        if not listeners:
            return
        for event in events:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    logger.exception(
                        "session event listener failed",
                        extra={"session_handle": event.handle, "event": event.type.value},
                    )

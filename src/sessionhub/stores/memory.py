"""An in-process store: one application instance, tests, the in-app mode.

Sessions live in this process only: another instance (or a restart) does not
see them. Thread-safe; expired records are dropped when met and when room is
needed; at most `max_sessions` are kept, the least recently used going first.

It keeps the same books as the Redis store: a per-principal index of
logged-in sessions, and an expiry schedule (a heap) of the sessions it
reports `expired` events for, which `Sweep` works through. Its events go to
`listeners` only (there is no stream to replay).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..events import Event, EventType, Listeners, Reason, decode_principal
from ..record import AUTH_TIME, CLIENT_INFO, PRINCIPAL, Delta, Meta, Record, apply
from ..users import LimitPolicy, SessionInfo, SessionLimit, session_info
from .base import (
    FORWARD_WINDOW,
    FORWARDED,
    LIMIT_REACHED,
    PRINCIPAL_CHANGED,
    Apply,
    Create,
    Delete,
    EndSessions,
    Followed,
    Forward,
    HoldLease,
    ListSessions,
    Operation,
    Read,
    ReleaseLease,
    Rotate,
    Sweep,
    refresh_due,
)

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Tracked:
    expires: int
    principal: str | None


def _principal(record: Record) -> str | None:
    return decode_principal(record.fields.get(PRINCIPAL))


def _login_time(record: Record) -> int:
    raw = record.fields.get(AUTH_TIME)
    return record.meta.created if raw is None else int(raw)


class MemoryStore:
    """Sessions in a dict of this process.

    `anonymous_events`: also track sessions without a principal, so their
    events (including `expired`) are reported.
    """

    def __init__(self, *, max_sessions: int = 100_000, anonymous_events: bool = False) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be positive")
        self.max_sessions = max_sessions
        self.anonymous_events = anonymous_events
        self.listeners = Listeners()
        self._records: OrderedDict[str, Record] = OrderedDict()
        # A rotated session's old handle -> (its new handle, until when, ms).
        self._forwards: dict[str, tuple[str, int]] = {}
        self._users: dict[str, dict[str, int]] = {}  # principal -> handle -> login time
        self._tracked: dict[str, _Tracked] = {}
        self._schedule: list[tuple[int, str]] = []  # (expires, handle); stale entries skipped
        self._leases: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def execute(self, operation: Operation) -> Any:
        events: list[Event] = []
        with self._lock:
            result = self._execute(operation, events)
        self.listeners.emit(events)  # outside the lock: a listener may use the store
        return result

    async def aexecute(self, operation: Operation) -> Any:
        return self.execute(operation)

    def _execute(self, operation: Operation, events: list[Event]) -> Any:
        match operation:
            case Read(handle, now, share):
                return self._read(handle, now, share)
            case Create(handle, record, limit):
                return self._create(handle, record, limit, events)
            case Apply(handle, delta, now):
                target = self._follow(handle, now)
                found = self._live(target, now)
                if found is None:
                    return None
                merged = apply(found, delta, now)
                meta = self._put(target, merged, now)
                if meta is not None:
                    self._retrack(target, merged)
                return Followed(meta) if meta is not None and target != handle else meta
            case Rotate(handle, new_handle, delta, now, limit):
                return self._rotate(handle, new_handle, delta, now, limit, events)
            case Delete(handle, now, reason):
                return self._end(self._follow(handle, now), now, reason, events)
            case ListSessions(user, now):
                return self._list(user.principal, now)
            case EndSessions(user, now, reason, keep):
                handles = [h for h in self._users.get(user.principal, {}) if h != keep]
                return [h for h in handles if self._end(h, now, reason, events)]
            case Sweep(now, _):
                return self._sweep(now, events)
            case HoldLease(name, token, ttl):
                return self._hold(name, token, ttl)
            case ReleaseLease(name, token):
                if self._leases.get(name, ("", 0.0))[0] == token:
                    del self._leases[name]
                return None
        raise TypeError(f"unknown operation {operation!r}")

    # -- records ----------------------------------------------------------------

    def _live(self, handle: str, now: int) -> Record | None:
        record = self._records.get(handle)
        if record is None:
            return None
        if record.meta.expires <= now:
            del self._records[handle]  # still tracked: `Sweep` reports it
            return None
        self._records.move_to_end(handle)
        return record

    def _follow(self, handle: str, now: int) -> str:
        """Where the forwards from `handle` lead (`handle` itself if it has none)."""
        while (forward := self._forwards.get(handle)) is not None:
            if forward[1] <= now:
                del self._forwards[handle]
                break
            handle = forward[0]
        return handle

    def _forward(self, handle: str, new_handle: str, now: int) -> None:
        forwards = self._forwards
        if len(forwards) >= self.max_sessions:
            for old in [old for old, (_, until) in forwards.items() if until <= now]:
                del forwards[old]
            while len(forwards) >= self.max_sessions:
                del forwards[next(iter(forwards))]  # the oldest
        forwards[handle] = (new_handle, now + FORWARD_WINDOW)

    def _read(self, handle: str, now: int, share: float) -> Record | Forward | None:
        record = self._live(handle, now)
        if record is None:
            return FORWARDED if self._follow(handle, now) != handle else None
        refreshed = refresh_due(record, now, share)
        if refreshed:
            meta = record.meta
            record.meta = Meta(meta.created, now, meta.idle, meta.deadline, meta.version)
            self._retrack(handle, record)
        return Record(record.meta, dict(record.fields), refreshed)

    def _create(
        self, handle: str, record: Record, limit: SessionLimit | None, events: list[Event]
    ) -> Any:
        existing = self._records.get(handle)
        if existing is not None:
            return existing == record  # a retry of this very create succeeded
        now = record.meta.created
        principal = _principal(record)
        if principal is not None and not self._fits(principal, limit, now, events):
            return LIMIT_REACHED
        self._put(handle, Record(record.meta, dict(record.fields)), now)
        self._track(handle, record)
        self._report(events, EventType.CREATED, handle, record, now)
        if principal is not None:
            self._report(events, EventType.AUTHENTICATED, handle, record, now)
        return True

    def _rotate(
        self,
        handle: str,
        new_handle: str,
        delta: Delta,
        now: int,
        limit: SessionLimit | None,
        events: list[Event],
    ) -> Any:
        handle = self._follow(handle, now)
        if handle == new_handle:  # a retry of this very rotation, which happened
            moved = self._live(new_handle, now)
            return moved.meta if moved else None
        found = self._live(handle, now)
        if found is None:
            return None
        login = PRINCIPAL in delta.sets
        bound = found.fields.get(PRINCIPAL)
        if login and bound is not None and bound != delta.sets[PRINCIPAL]:
            return PRINCIPAL_CHANGED
        merged = apply(found, delta, now)
        principal = _principal(merged)
        if login and principal is not None and not self._fits(principal, limit, now, events):
            return LIMIT_REACHED
        del self._records[handle]
        self._untrack(handle)
        meta = self._put(new_handle, merged, now)
        if meta is None:
            return None
        self._forward(handle, new_handle, now)
        self._track(new_handle, merged)
        kind = EventType.AUTHENTICATED if login else EventType.ROTATED
        self._report(events, kind, new_handle, merged, now, previous=handle)
        return meta

    def _put(self, handle: str, record: Record, now: int) -> Meta | None:
        if record.meta.expires <= now:
            self._records.pop(handle, None)
            return None
        if handle not in self._records and len(self._records) >= self.max_sessions:
            self._make_room(now)
        self._records[handle] = record
        self._records.move_to_end(handle)
        return record.meta

    def _make_room(self, now: int) -> None:
        expired = [h for h, r in self._records.items() if r.meta.expires <= now]
        for handle in expired:
            del self._records[handle]
        while len(self._records) >= self.max_sessions:
            self._records.popitem(last=False)

    def _end(self, handle: str, now: int, reason: Reason, events: list[Event]) -> bool:
        record = self._live(handle, now)
        if record is None:
            return False  # gone already; if it expired, `Sweep` reports it
        del self._records[handle]
        self._untrack(handle)
        self._report(events, EventType.DELETED, handle, record, now, reason=reason)
        return True

    # -- the books: user index and expiry schedule --------------------------------

    def _track(self, handle: str, record: Record) -> None:
        principal = _principal(record)
        if principal is None and not self.anonymous_events:
            return
        if principal is not None:
            self._users.setdefault(principal, {})[handle] = _login_time(record)
        self._tracked[handle] = _Tracked(record.meta.expires, principal)
        heapq.heappush(self._schedule, (record.meta.expires, handle))

    def _retrack(self, handle: str, record: Record) -> None:
        tracked = self._tracked.get(handle)
        if tracked is not None and tracked.expires != record.meta.expires:
            tracked.expires = record.meta.expires
            heapq.heappush(self._schedule, (tracked.expires, handle))

    def _untrack(self, handle: str) -> None:
        tracked = self._tracked.pop(handle, None)
        if tracked is None or tracked.principal is None:
            return
        index = self._users.get(tracked.principal, {})
        index.pop(handle, None)
        if not index:
            self._users.pop(tracked.principal, None)

    def _fits(
        self, principal: str, limit: SessionLimit | None, now: int, events: list[Event]
    ) -> bool:
        """Whether one more session of `principal` fits, ending the oldest if allowed."""
        if limit is None:
            return True
        index = self._users.get(principal, {})
        live = sorted(
            (since, handle)
            for handle, since in list(index.items())
            if self._live(handle, now) is not None
        )
        excess = len(live) - limit.max_sessions + 1
        if excess <= 0:
            return True
        if limit.policy is LimitPolicy.REFUSE:
            return False
        for _, handle in live[:excess]:
            self._end(handle, now, Reason.LIMIT, events)
        return True

    def _list(self, principal: str, now: int) -> list[SessionInfo]:
        found = []
        for handle, _ in sorted(self._users.get(principal, {}).items(), key=lambda i: i[1]):
            record = self._live(handle, now)
            if record is not None:
                fields = record.fields
                info = session_info(
                    handle, principal, record.meta, fields.get(AUTH_TIME), fields.get(CLIENT_INFO)
                )
                found.append(info)
        return found

    def _sweep(self, now: int, events: list[Event]) -> int:
        expired = 0
        schedule = self._schedule
        while schedule and schedule[0][0] <= now:
            expires, handle = heapq.heappop(schedule)
            tracked = self._tracked.get(handle)
            if tracked is None or tracked.expires != expires:
                continue  # stale: the session moved on or ended
            self._records.pop(handle, None)
            self._untrack(handle)
            events.append(
                Event(
                    EventType.EXPIRED,
                    handle,
                    now / 1000,
                    principal=tracked.principal,
                    expires_at=expires / 1000,
                )
            )
            expired += 1
        return expired

    def _hold(self, name: str, token: str, ttl: int) -> bool:
        now = time.monotonic()
        holder = self._leases.get(name)
        if holder is not None and holder[0] != token and holder[1] > now:
            return False
        self._leases[name] = (token, now + ttl / 1000)
        return True

    def _report(
        self,
        events: list[Event],
        kind: EventType,
        handle: str,
        record: Record,
        now: int,
        *,
        previous: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        principal = _principal(record)
        if principal is None and not self.anonymous_events:
            return
        meta = record.meta
        events.append(
            Event(
                kind,
                handle,
                now / 1000,
                principal=principal,
                previous=previous,
                reason=reason,
                created_at=meta.created / 1000,
                expires_at=meta.expires / 1000,
            )
        )

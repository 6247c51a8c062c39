"""The session lifecycle: load, create, commit, rotate, invalidate.

The rules live once, in `Lifecycle`, as generators that *yield* store
operations and receive their results (no I/O here). `SessionManager` runs them
against a synchronous store, `AsyncSessionManager` against an asyncio one; both
are a few lines of plumbing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .codec import Codec, CodecError, JsonCodec
from .errors import StoreUnavailable
from .ids import IdScheme, SessionRef
from .policy import FlushMode, Timeouts
from .record import BINDING, PRINCIPAL, Delta, Meta, Record, RecordError
from .session import Session
from .stores.base import Apply, AsyncStore, Create, Delete, Operation, Read, Rotate, Store

__all__ = ["AsyncSessionManager", "Lifecycle", "Outcome", "SessionManager"]

logger = logging.getLogger("sessionhub")

T = TypeVar("T")
Steps = Generator[Operation, Any, T]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the client must be told after a commit.

    `send` is True when the client's copy of the id must change: a new or
    rotated id (`id` set), an ended session (`id` None: clear it), or, for a
    persistent ("remember me") session, a moved expiry.
    """

    id: str | None
    send: bool
    expires_at: float | None = None
    persistent: bool = False


class Lifecycle:
    """The lifecycle rules, free of I/O.

    `degrade_when_unavailable`: when the store cannot be reached, go on with an
    empty session that is never stored (and log a warning) instead of raising
    `StoreUnavailable`.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        ids: IdScheme | None = None,
        codec: Codec | None = None,
        clock: Callable[[], float] = time.time,
        degrade_when_unavailable: bool = False,
    ) -> None:
        self.degrade = degrade_when_unavailable
        self.timeouts = timeouts or Timeouts()
        self.ids = ids or IdScheme()
        self.codec: Codec = codec or JsonCodec()
        self.clock = clock
        self._binds = bool(getattr(self.codec, "binds_values", False))

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def _fresh_meta(self, now: int) -> Meta:
        timeouts = self.timeouts
        return Meta(now, now, int(timeouts.idle * 1000), now + int(timeouts.absolute * 1000), 0)

    def new_session(self) -> Session:
        """A session that exists only in memory until something is written to it."""
        session = Session(self.codec, self._fresh_meta(self._now()))
        if self._binds:
            session._meta_changes[BINDING] = secrets.token_urlsafe(12).encode()
        return session

    def load(self, raw_id: str | None) -> Steps[Session]:
        """The session `raw_id` names, or a new one.

        Strict: an id that is malformed, unknown, expired, or whose data cannot
        be decoded gives a new session; the client's id is never adopted.
        """
        ref = self.ids.parse(raw_id)
        if ref is None:
            return self.new_session()
        now = self._now()
        try:
            record: Record | None = yield Read(ref.handle, now, self.timeouts.refresh_share)
            if record is None:
                return self.new_session()
            session = Session.from_record(self.codec, ref, record)
        except StoreUnavailable as exc:
            return self._degraded(exc, ref.handle)
        except (RecordError, CodecError, UnicodeDecodeError) as exc:
            logger.warning(
                "session data cannot be read; starting a new session",
                extra={"session_handle": ref.handle, "reason": str(exc)},
            )
            return self.new_session()
        session._refreshed = record.meta.accessed == now
        return session

    def _degraded(self, exc: StoreUnavailable, handle: str | None) -> Session:
        if not self.degrade:
            raise exc
        logger.warning(
            "session store unavailable; going on with a session that is not stored",
            extra={"session_handle": handle, "reason": exc.reason},
        )
        session = self.new_session()
        session._degraded = True
        return session

    def commit(self, session: Session) -> Steps[Outcome]:
        """Write what changed, in at most one store operation per step.

        Raises StoreUnavailable (nothing is half-written: each step is atomic)
        unless the lifecycle degrades, in which case the changes are dropped.
        """
        if session._degraded:
            return Outcome(None, send=False)
        try:
            return (yield from self._commit(session))
        except StoreUnavailable as exc:
            self._degraded(exc, session.handle)
            return Outcome(None, send=False)

    def _commit(self, session: Session) -> Steps[Outcome]:
        ended = False
        if session._doomed is not None:
            yield Delete(session._doomed.handle)
            logger.info("session ended", extra={"session_handle": session._doomed.handle})
            session._doomed = None
            ended = True
        ref = session._ref
        if ref is None:
            return (yield from self._create(session, ended))
        delta = session._delta()
        now = self._now()
        if session._rotate:
            new_ref = self.ids.new(self._shard(session, ref.shard))
            meta = yield Rotate(ref.handle, new_ref.handle, delta or Delta(), now)
            if meta is None:
                return self._gone(session, ref)
            session._committed(new_ref, meta, delta)
            return self._outcome(session, send=True)
        if delta is None:
            return self._outcome(session, send=session._refreshed and session.persistent)
        meta = yield Apply(ref.handle, delta, now)
        if meta is None:
            return self._gone(session, ref)
        expiry_moved = meta.expires != session._meta.expires
        session._committed(ref, meta, delta)
        return self._outcome(session, send=expiry_moved and session.persistent)

    def _create(self, session: Session, ended: bool) -> Steps[Outcome]:
        fields = session._fields()
        attributes = any(name[:1] != b"!" for name in fields)
        if not attributes and PRINCIPAL not in fields:
            # Nothing worth storing: stay lazy.
            session._forget(None, session._meta)
            return Outcome(None, send=ended)
        now = self._now()
        meta = self._fresh_meta(now)
        if session._idle_change is not None:
            meta.idle = session._idle_change
        if session._deadline_change is not None:
            meta.deadline = session._deadline_change
        meta.version = 1
        record = Record(meta, fields)
        ref = self.ids.new(self._shard(session, None))
        while not (yield Create(ref.handle, record)):
            ref = self.ids.new(ref.shard)  # 2^-256 odds; but never share a record
        logger.info("session created", extra={"session_handle": ref.handle})
        session._committed(ref, meta, None)
        return self._outcome(session, send=True)

    def _shard(self, session: Session, current: str | None) -> str | None:
        principal = session.principal
        return self.ids.shard_of(principal) if principal is not None else current

    def _gone(self, session: Session, ref: SessionRef) -> Outcome:
        logger.info(
            "session ended elsewhere; changes dropped", extra={"session_handle": ref.handle}
        )
        session._lost(self._fresh_meta(self._now()))
        return Outcome(None, send=True)

    @staticmethod
    def _outcome(session: Session, *, send: bool) -> Outcome:
        return Outcome(session.id, send, session.expires_at, session.persistent)


# The two drivers: each sends the lifecycle's operations to a store and feeds
# back the result -- or the exception, so the rules can handle store failures.


def _run(steps: Steps[T], store: Store) -> T:
    try:
        operation = next(steps)
        while True:
            try:
                result = store.execute(operation)
            except Exception as exc:
                operation = steps.throw(exc)
            else:
                operation = steps.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _arun(steps: Steps[T], store: AsyncStore) -> T:
    try:
        operation = next(steps)
        while True:
            try:
                result = await store.aexecute(operation)
            except Exception as exc:
                operation = steps.throw(exc)
            else:
                operation = steps.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class SessionManager:
    """Loads and commits sessions against a synchronous store."""

    def __init__(
        self,
        store: Store,
        *,
        flush_mode: FlushMode = FlushMode.ON_COMMIT,
        lifecycle: Lifecycle | None = None,
        **options: Any,
    ) -> None:
        self.store = store
        self.flush_mode = flush_mode
        self.lifecycle = lifecycle or Lifecycle(**options)

    def new_session(self) -> Session:
        return self._watch(self.lifecycle.new_session())

    def load(self, session_id: str | None) -> Session:
        return self._watch(_run(self.lifecycle.load(session_id), self.store))

    def commit(self, session: Session) -> Outcome:
        return _run(self.lifecycle.commit(session), self.store)

    def login(self, session: Session, principal: str) -> None:
        session.login(principal, now=self.lifecycle.clock())

    def _watch(self, session: Session) -> Session:
        if self.flush_mode is FlushMode.IMMEDIATE:
            session._on_change = lambda: self._flush(session)
        return session

    def _flush(self, session: Session) -> None:
        session._on_change = None  # a commit must not re-enter itself
        try:
            self.commit(session)
        finally:
            session._on_change = lambda: self._flush(session)


class AsyncSessionManager:
    """Loads and commits sessions against an asyncio store.

    With `FlushMode.IMMEDIATE` each change is written by a task started when it
    is made; the tasks run one after another and `commit` waits for them.
    """

    def __init__(
        self,
        store: AsyncStore,
        *,
        flush_mode: FlushMode = FlushMode.ON_COMMIT,
        lifecycle: Lifecycle | None = None,
        **options: Any,
    ) -> None:
        self.store = store
        self.flush_mode = flush_mode
        self.lifecycle = lifecycle or Lifecycle(**options)

    def new_session(self) -> Session:
        return self._watch(self.lifecycle.new_session())

    async def load(self, session_id: str | None) -> Session:
        return self._watch(await _arun(self.lifecycle.load(session_id), self.store))

    async def commit(self, session: Session) -> Outcome:
        pending, session._pending_flush = session._pending_flush, None
        if pending is not None:
            await pending
        return await _arun(self.lifecycle.commit(session), self.store)

    def login(self, session: Session, principal: str) -> None:
        session.login(principal, now=self.lifecycle.clock())

    def _watch(self, session: Session) -> Session:
        if self.flush_mode is FlushMode.IMMEDIATE:
            session._on_change = lambda: self._schedule(session)
        return session

    def _schedule(self, session: Session) -> None:
        previous = session._pending_flush

        async def flush() -> Outcome:
            if previous is not None:
                await previous
            return await _arun(self.lifecycle.commit(session), self.store)

        session._pending_flush = asyncio.get_running_loop().create_task(flush())

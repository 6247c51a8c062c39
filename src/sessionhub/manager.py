"""The session lifecycle: load, create, commit, rotate, invalidate; and the
per-user operations: list a user's sessions, end them.

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
from typing import Any, Generic, TypeVar

from .codec import Codec, CodecError, JsonCodec
from .errors import LoginRefused, SessionEnded, StoreUnavailable
from .events import Reason
from .ids import IdScheme, SessionRef, is_handle
from .policy import FlushMode, Timeouts
from .record import BINDING, PRINCIPAL, USER, Delta, Meta, Record, RecordError, apply
from .session import Session, SessionState
from .stores.base import (
    FORWARDED,
    LIMIT_REACHED,
    PRINCIPAL_CHANGED,
    Apply,
    AsyncStore,
    Create,
    Delete,
    EndSessions,
    Followed,
    ListSessions,
    Operation,
    Read,
    Rotate,
    Store,
)
from .users import SessionInfo, SessionLimit, UserRef

__all__ = [
    "AsyncSessionManager",
    "Lifecycle",
    "Outcome",
    "SessionManager",
    "arun_steps",
    "run_steps",
]

logger = logging.getLogger("sessionhub")

T = TypeVar("T")
StoreT = TypeVar("StoreT", Store, AsyncStore)
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
    `StoreUnavailable`. `session_limit`: the most sessions one principal may
    have at once, and what a login beyond it does.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        ids: IdScheme | None = None,
        codec: Codec | None = None,
        clock: Callable[[], float] = time.time,
        degrade_when_unavailable: bool = False,
        session_limit: SessionLimit | None = None,
    ) -> None:
        self.degrade = degrade_when_unavailable
        self.session_limit = session_limit
        self.timeouts = timeouts or Timeouts()
        self.ids = ids or IdScheme()
        self.codec: Codec = codec or JsonCodec()
        self.clock = clock
        self._binds = self.codec.binds_values
        self._idle_ms = int(self.timeouts.idle * 1000)
        self._absolute_ms = int(self.timeouts.absolute * 1000)

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def _fresh_meta(self, now: int) -> Meta:
        return Meta(now, now, self._idle_ms, now + self._absolute_ms, 0)

    def new_session(self) -> Session:
        """A session that exists only in memory until something is written to it."""
        session = Session.blank(self.codec, self._fresh_meta(self._now()))
        self._bind(session._state)
        return session

    def _bind(self, state: SessionState) -> None:
        """Give a session that is not stored yet a binding, if the codec binds values."""
        if self._binds and not state.binding():
            state.meta_changes[BINDING] = secrets.token_urlsafe(12).encode()

    def load(self, raw_id: str | None) -> Steps[Session]:
        """The session `raw_id` names, or a new one.

        Strict: an id that is malformed, unknown, expired, or whose data cannot
        be decoded gives a new session; the client's id is never adopted. An
        id another request has just rotated away from (a login) gives a new
        session too, which remembers that id (`SessionState.superseded`).
        """
        ref = self.ids.parse(raw_id)
        if ref is None:
            return self.new_session()
        now = self._now()
        try:
            record = yield Read(ref.handle, now, self.timeouts.refresh_share)
            if record is None:
                return self.new_session()
            if record is FORWARDED:
                fresh = self.new_session()
                fresh._state.superseded = ref
                return fresh
            return Session.from_record(self.codec, ref, record)
        except StoreUnavailable as exc:
            return self._degraded(exc, ref.handle)
        except (RecordError, CodecError, UnicodeDecodeError) as exc:
            logger.warning(
                "session data cannot be read; starting a new session",
                extra={"session_handle": ref.handle, "reason": str(exc)},
            )
            return self.new_session()

    def _degraded(self, exc: StoreUnavailable, handle: str | None) -> Session:
        if not self.degrade:
            raise exc
        logger.warning(
            "session store unavailable; going on with a session that is not stored",
            extra={"session_handle": handle, "reason": exc.reason},
        )
        session = self.new_session()
        session._state.degraded = True
        return session

    def commit(self, session: Session) -> Steps[Outcome]:
        """Write what changed, in at most one store operation per step.

        Raises StoreUnavailable (nothing is half-written: each step is atomic)
        unless the lifecycle degrades, in which case the changes are dropped;
        SessionEnded if the session ended while the request held it (its
        changes are dropped: an end wins).
        """
        state = session._state
        if state.degraded:
            return Outcome(None, send=False)
        try:
            return (yield from self._commit(session, state))
        except StoreUnavailable as exc:
            self._degraded(exc, state.handle)
            return Outcome(None, send=False)

    def _commit(self, session: Session, state: SessionState) -> Steps[Outcome]:
        ended = False
        if state.doomed is not None:
            yield Delete(state.doomed.handle, self._now(), Reason.LOGOUT, state.doomed_user)
            logger.info("session ended", extra={"session_handle": state.doomed.handle})
            state.doomed = None
            ended = True
        ref = state.ref
        principal = state.pending_principal()
        if principal is not None:
            # Names the user's index: the store's scripts find it in the record.
            state.bind_user(self.ids.principal_digest(principal).encode())
        if ref is None:
            return (yield from self._create(session, state, ended, principal))
        delta = state.delta(session)
        now = self._now()
        if state.rotating:
            new_ref = self.ids.new(self._shard(state, ref.shard))
            limit = self.session_limit if principal is not None else None
            user = state.meta_fields.get(USER)
            meta = yield Rotate(ref.handle, new_ref.handle, delta or Delta(), now, limit, user)
            if meta is LIMIT_REACHED:
                raise self._refused(state, principal)
            if meta is PRINCIPAL_CHANGED:
                # Another request logged this session in as someone else meanwhile:
                # this login starts a session of its own, as if from a fresh one.
                state.ref = None
                return (yield from self._create(session, state, ended, principal))
            if meta is None:
                raise self._gone(session, ref)
            state.committed(new_ref, meta, delta or Delta(), session)
            return self._outcome(state, send=True)
        if delta is None:
            return self._outcome(state, send=state.refreshed and state.persistent())
        base = state.base
        expected = apply(base, delta, now) if base is not None else None
        meta = yield Apply(ref.handle, delta, now, expected)
        if meta is None:
            raise self._gone(session, ref)
        if isinstance(meta, Followed):
            # Rotated by another request since it was read: the changes are in the
            # rotated session, whose id this request must not learn or hand out.
            state.committed(ref, meta.meta, delta, session)
            return self._outcome(state, send=False)
        expiry_moved = meta.expires != state.meta.expires
        state.committed(ref, meta, delta, session)
        if expected is not None and meta == expected.meta:
            state.base = expected
        return self._outcome(state, send=expiry_moved and state.persistent())

    def _create(
        self, session: Session, state: SessionState, ended: bool, principal: str | None
    ) -> Steps[Outcome]:
        # A session that was invalidated, lost, or committed empty earlier in
        # its life dropped its binding with the rest: values must not be sealed
        # bound to their name alone.
        self._bind(state)
        fields = state.fields(session)
        attributes = any(name[:1] != b"!" for name in fields)
        if not attributes and PRINCIPAL not in fields:
            # Nothing worth storing: stay lazy.
            state.forget(None, state.meta)
            return Outcome(None, send=ended)
        superseded = state.superseded
        if superseded is not None and principal is None:
            # A new id here would replace the one the rotating request gives the
            # client: refused, and said so (a login makes its own session).
            raise self._gone(session, superseded, rotated=True)
        now = self._now()
        meta = self._fresh_meta(now)
        if state.idle_change is not None:
            meta.idle = state.idle_change
        if state.deadline_change is not None:
            meta.deadline = state.deadline_change
        meta.version = 1
        record = Record(meta, fields)
        ref = self.ids.new(self._shard(state, None))
        limit = self.session_limit if principal is not None else None
        while not (stored := (yield Create(ref.handle, record, limit))):
            ref = self.ids.new(ref.shard)  # 2^-256 odds; but never share a record
        if stored is LIMIT_REACHED:
            raise self._refused(state, principal)
        logger.info("session created", extra={"session_handle": ref.handle})
        state.committed(ref, meta, None, session)
        state.base = record
        return self._outcome(state, send=True)

    def _shard(self, state: SessionState, current: str | None) -> str | None:
        principal = state.principal()
        return self.ids.shard_of(principal) if principal is not None else current

    def _refused(self, state: SessionState, principal: str | None) -> LoginRefused:
        state.cancel_login()
        limit = self.session_limit.max_sessions if self.session_limit else 0
        return LoginRefused(principal or "", limit)

    def _gone(self, session: Session, ref: SessionRef, *, rotated: bool = False) -> SessionEnded:
        """The request's changes are dropped; the session goes on as a new, empty one."""
        if rotated:
            reason = (
                "the session was signed in again by another request while this one ran; "
                "its changes were not saved"
            )
        else:
            reason = (
                "the session ended while this request ran (signed out elsewhere, or "
                "expired); its changes were not saved"
            )
        logger.info(reason, extra={"session_handle": ref.handle})
        session._state.lost(self._fresh_meta(self._now()), session)
        return SessionEnded(reason)

    @staticmethod
    def _outcome(state: SessionState, *, send: bool) -> Outcome:
        return Outcome(state.id, send, state.expires_at(), state.persistent())

    # -- the sessions of one user ------------------------------------------------

    def user(self, principal: str) -> UserRef:
        """What the store knows `principal` by; ValueError if it is not a principal."""
        if not isinstance(principal, str) or not principal:
            raise ValueError("principal must be a non-empty string")
        ids = self.ids
        return UserRef(principal, ids.shard_of(principal), ids.principal_digest(principal))

    def sessions_of(self, principal: str) -> Steps[list[SessionInfo]]:
        """The live sessions `principal` is logged in with, oldest login first."""
        user = self.user(principal)
        sessions: list[SessionInfo] = yield ListSessions(user, self._now())
        return sessions

    def end_sessions(
        self,
        principal: str,
        *,
        except_current: Session | str | None = None,
        reason: Reason | None = None,
    ) -> Steps[list[str]]:
        """End every session of `principal` but `except_current` (a session or handle).

        The reason defaults to `user-ended` when a current session is kept (the
        user asked, from it: "log out everywhere else") and to `admin` otherwise.
        Returns the handles of the sessions ended.
        """
        user = self.user(principal)
        if isinstance(except_current, Session):
            keep = except_current._state.handle
        else:
            keep = except_current
        if keep is not None and not is_handle(keep):
            raise ValueError("except_current must be a Session or a session handle")
        if reason is None:
            reason = Reason.USER_ENDED if except_current is not None else Reason.ADMIN
        ended: list[str] = yield EndSessions(user, self._now(), Reason(reason), keep)
        return ended

    def end_session(
        self, handle: str, *, principal: str | None = None, reason: Reason = Reason.ADMIN
    ) -> Steps[bool]:
        """End the session `handle` names; with `principal`, only if it is one of theirs.

        Pass `principal` whenever the handle comes from a user (a "my devices"
        page): a user can then end only their own sessions. True if it ended.
        """
        if not isinstance(handle, str) or not is_handle(handle):
            raise ValueError("not a session handle")
        now = self._now()
        user: bytes | None = None
        if principal is not None:
            owner = self.user(principal)
            sessions: list[SessionInfo] = yield ListSessions(owner, now)
            if handle not in {each.handle for each in sessions}:
                return False
            user = owner.digest.encode()
        ended: bool = yield Delete(handle, now, Reason(reason), user)
        return ended


# The two drivers: each sends the lifecycle's operations to a store and feeds
# back the result -- or the exception, so the rules can handle store failures.


def run_steps(steps: Steps[T], store: Store) -> T:
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


async def arun_steps(steps: Steps[T], store: AsyncStore) -> T:
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


class _Manager(Generic[StoreT]):
    """What both managers do without the store: build, watch and log in sessions."""

    def __init__(
        self,
        store: StoreT,
        *,
        flush_mode: FlushMode = FlushMode.ON_COMMIT,
        lifecycle: Lifecycle | None = None,
        **options: Any,
    ) -> None:
        self.store: StoreT = store
        self.flush_mode = flush_mode
        self.lifecycle = lifecycle or Lifecycle(**options)

    def new_session(self) -> Session:
        return self._watch(self.lifecycle.new_session())

    def login(self, session: Session, principal: str) -> None:
        session.login(principal, now=self.lifecycle.clock())

    def _watch(self, session: Session) -> Session:
        if self.flush_mode is FlushMode.IMMEDIATE:
            session._state.on_change = lambda: self._flush(session)
        return session

    def _flush(self, session: Session) -> None:
        """Write a change made under FlushMode.IMMEDIATE (each manager its own way)."""
        raise NotImplementedError


class SessionManager(_Manager[Store]):
    """Loads and commits sessions against a synchronous store."""

    def load(self, session_id: str | None) -> Session:
        return self._watch(run_steps(self.lifecycle.load(session_id), self.store))

    def commit(self, session: Session) -> Outcome:
        return run_steps(self.lifecycle.commit(session), self.store)

    def sessions_of(self, principal: str) -> list[SessionInfo]:
        """The live sessions of `principal`, oldest login first."""
        return run_steps(self.lifecycle.sessions_of(principal), self.store)

    def end_sessions(
        self,
        principal: str,
        *,
        except_current: Session | str | None = None,
        reason: Reason | None = None,
    ) -> list[str]:
        """Log `principal` out everywhere (but `except_current`); the handles ended."""
        steps = self.lifecycle.end_sessions(principal, except_current=except_current, reason=reason)
        return run_steps(steps, self.store)

    def end_session(
        self, handle: str, *, principal: str | None = None, reason: Reason = Reason.ADMIN
    ) -> bool:
        """End one session by its handle (only one of `principal`'s, if given)."""
        steps = self.lifecycle.end_session(handle, principal=principal, reason=reason)
        return run_steps(steps, self.store)

    def _flush(self, session: Session) -> None:
        session._state.on_change = None  # a commit must not re-enter itself
        try:
            self.commit(session)
        finally:
            session._state.on_change = lambda: self._flush(session)


class AsyncSessionManager(_Manager[AsyncStore]):
    """Loads and commits sessions against an asyncio store.

    With `FlushMode.IMMEDIATE` each change is written by a task started when it
    is made; the tasks run one after another and `commit` waits for them.
    """

    async def load(self, session_id: str | None) -> Session:
        return self._watch(await arun_steps(self.lifecycle.load(session_id), self.store))

    async def commit(self, session: Session) -> Outcome:
        pending, session._state.pending_flush = session._state.pending_flush, None
        if pending is not None:
            await pending
        return await arun_steps(self.lifecycle.commit(session), self.store)

    async def sessions_of(self, principal: str) -> list[SessionInfo]:
        """The live sessions of `principal`, oldest login first."""
        return await arun_steps(self.lifecycle.sessions_of(principal), self.store)

    async def end_sessions(
        self,
        principal: str,
        *,
        except_current: Session | str | None = None,
        reason: Reason | None = None,
    ) -> list[str]:
        """Log `principal` out everywhere (but `except_current`); the handles ended."""
        steps = self.lifecycle.end_sessions(principal, except_current=except_current, reason=reason)
        return await arun_steps(steps, self.store)

    async def end_session(
        self, handle: str, *, principal: str | None = None, reason: Reason = Reason.ADMIN
    ) -> bool:
        """End one session by its handle (only one of `principal`'s, if given)."""
        steps = self.lifecycle.end_session(handle, principal=principal, reason=reason)
        return await arun_steps(steps, self.store)

    def _flush(self, session: Session) -> None:
        previous = session._state.pending_flush

        async def flush() -> Outcome:
            if previous is not None:
                await previous
            return await arun_steps(self.lifecycle.commit(session), self.store)

        session._state.pending_flush = asyncio.get_running_loop().create_task(flush())

"""The Redis store: standalone, Sentinel or Cluster, sync or asyncio.

Key layout (`ns` is the namespace, "sh" unless set; `tag` a shard's hash tag)::

    {ns}:s:{tag}<digest>   one session record (a string), native TTL; after a
                           rotation, "!>" and the new handle for a minute (a
                           forward, see `sessionhub.stores.base`)
    {ns}:u:{tag}<user>     a user's index: zset digest -> login time; TTL = its
                           longest-lived session's
    {ns}:x:{tag}           the shard's expiry schedule: zset member -> expiry
    {ns}:e:{tag}           the shard's event stream (MAXLEN ~ stream_length)
    {ns}:lease:<name>      a lease (the expiry sweep's)

The braces are a Cluster hash tag. Each of the 64 shards has a tag chosen so
that shard i hashes into slots [256 i, 256 i + 256): the shards spread evenly
over any split of the slot range into contiguous parts, as Cluster makes. A
logged-in session lives in its principal's shard, so its record, its user's
index, and its shard's schedule and stream share one slot and every script
stays single-slot. Every operation is one round trip (a command or a script
called by SHA); the exceptions are a read that finds the idle expiry due to
move (a GET, then the script that moves it: once per refresh share of the
idle timeout), a login that moves a session to another shard on a Cluster,
where old and new keys live in different slots and the move takes three
(read, copy, hand over; see `RedisCommands._move`), and the sweep, which
takes one per shard. A read is a plain GET and a new anonymous session a
plain SET: the scripts are for the writes that keep books or may race.

How each operation maps to Redis is written once, in `RedisCommands`, as
generators of calls; `RedisStore` and `AsyncRedisStore` only send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import string
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeGuard

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis import exceptions as redis_errors
from redis.crc import key_slot

from ...errors import StoreUnavailable
from ...events import EventType, Listeners, event_from_fields
from ...ids import SHARD_ALPHABET
from ...record import (
    AUTH_TIME,
    CLIENT_INFO,
    PRINCIPAL,
    USER,
    Delta,
    Meta,
    Record,
    RecordError,
    apply,
    format_record,
    parse_record,
)
from ...users import SessionLimit, UserRef, session_info
from ..base import (
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
from .cache import HEARTBEAT_SECONDS, AsyncInvalidations, ClientCache, Invalidations
from .durable import (
    DEFAULT_TIMEOUT,
    attempts,
    durable_replicas,
    ends_sessions,
    refusal,
    replicated,
    sentinel_managed,
    socket_timeout_of,
    wait_args,
)
from .failover import FAILOVER_WAIT, AsyncFailoverGuard, FailoverGuard, is_write
from .scripts import (
    APPLY,
    CREATE,
    DELETE,
    END_SESSIONS,
    HAND_OVER,
    LEASE,
    READ,
    ROTATE,
    SWEEP,
    Script,
)

__all__ = ["SLOT_TAGS", "AsyncRedisStore", "Call", "Calls", "Pause", "RedisCommands", "RedisStore"]

# Errors that mean "Redis is not there right now" (down, slow, failing over),
# as opposed to a bug: they become StoreUnavailable.
_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.SlotNotCoveredError,
    redis_errors.ClusterError,
    redis_errors.OutOfMemoryError,  # full under noeviction: writes refused
    redis_errors.RedisClusterException,  # only when _is_unavailable says so
)


def _is_unavailable(exc: Exception) -> bool:
    # A Cluster client with no node left to ask raises its generic exception, which
    # otherwise means a bug (a cross-slot call): tell them apart by the message.
    if type(exc) is redis_errors.RedisClusterException:
        return str(exc).startswith(("Redis Cluster cannot be connected", "All slots are not"))
    return True


#: How long a Cluster call is sent again while its slot is on the move (keys
#: migrating one by one: TRYAGAIN, ASK, MOVED), and the pause between tries.
REDIRECT_PATIENCE = 1.0
_REDIRECT_PAUSE = 0.05


def _slot_on_the_move(exc: Exception) -> bool:
    """Whether a Cluster client's failure is one a slot on the move causes.

    redis-py follows redirects itself, and gives up with ClusterError ("TTL
    exhausted") when they go on. Its asyncio client may also fail while it
    follows ASK under concurrency, with an AttributeError or TypeError (the
    ASKING and the command go out on different pooled connections, and a
    MOVED elsewhere may close them meanwhile; docs/operating.md, known
    issues). Every script is safe to send again (`sessionhub.stores.base`).
    """
    redirected = redis_errors.TryAgainError | redis_errors.AskError | redis_errors.MovedError
    if isinstance(exc, redirected) or type(exc) is redis_errors.ClusterError:
        return True
    return isinstance(exc, AttributeError | TypeError)


class _Redirects:
    """How one Cluster call is sent again while its slot is on the move (the shells
    send it and wait)."""

    def __init__(self, patience: float) -> None:
        self.deadline = time.monotonic() + patience

    def pause_after(self, exc: Exception) -> float:
        """How long to wait before sending again after `exc`; raises `exc` when it is
        not a slot on the move, or when the patience is spent (a client failure as a
        RedisError: a step may clean up after it, and it leaves the store as a 503)."""
        if not _slot_on_the_move(exc):
            raise exc
        if time.monotonic() + _REDIRECT_PAUSE <= self.deadline:
            return _REDIRECT_PAUSE
        if isinstance(exc, redis_errors.RedisError):
            raise exc
        raise redis_errors.ClusterError(
            f"the Cluster client failed while following a slot on the move ({type(exc).__name__})"
        ) from exc


def _refused(exc: redis_errors.RedisError) -> StoreUnavailable | None:
    """The 503 of an error that means the server will not serve this now (a write it
    will not promise, see `durable.refusal`; the database the settings name, which
    it does not have: no request can be served until they change), if it is one."""
    reason = refusal(exc)
    if reason is not None:
        return StoreUnavailable(reason)
    if type(exc) is redis_errors.ResponseError and str(exc).startswith("DB index is out of"):
        return StoreUnavailable(
            "session store unavailable (Redis has no database of the number configured)"
        )
    return None


def _unavailable(exc: Exception) -> StoreUnavailable:
    if isinstance(exc, redis_errors.TimeoutError):
        return StoreUnavailable("session store timed out")
    if isinstance(exc, redis_errors.OutOfMemoryError):
        return StoreUnavailable("session store full (maxmemory reached)")
    return StoreUnavailable(f"session store unavailable ({type(exc).__name__})")


@dataclass(frozen=True, slots=True)
class Call:
    """One command; with `script`, `args` are EVALSHA's (numkeys, keys..., argv...)."""

    args: tuple[Any, ...]
    script: Script | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait this long before the next call (a poll with nothing to read)."""

    seconds: float


# A failed call is thrown into the generator, which may handle it.
Calls = Generator[Call | Pause, Any, Any]


#: How many times a login's move across slots copies the session again when
#: another request changed it meanwhile, before it gives up.
_MOVE_ATTEMPTS = 3
#: The most forwards a write follows (the session rotated again and again while
#: one request held it); beyond them, the session counts as gone.
_HOPS = 8

_FORWARD = b"!>"
#: How many times a script is called again with the keys it said it needs: a
#: login under a session limit declares its user's sessions, and each login of
#: that user committed in between makes it ask again (a burst of n logins of
#: one user takes up to n rounds for the last of them).
_NEED_ROUNDS = 64
#: The length of a record digest (and of a user digest) in keys and schedules.
_DIGEST = 22


def _needed(reply: Any) -> tuple[str, ...] | None:
    """The keys a script needs declared too (it wrote nothing), if it said so."""
    if isinstance(reply, list) and reply and reply[0] == b"?":
        return tuple(name.decode() for name in reply[1:])
    return None


def _found(raw: bytes | None) -> bytes | Forward | None:
    """What a record key holds: a record, a forward, or no session.

    A key holds "!" for a short while after its session was ended young, and
    "!>" and a handle after a rotation moved its session (see track.lua).
    """
    if raw is None or raw[:1] != b"!":
        return raw
    return FORWARDED if raw[:2] == _FORWARD else None


@dataclass(frozen=True, slots=True)
class _Rotated:
    """A step found the session rotated away by someone else, to `handle`."""

    handle: str


def _meta(reply: list[bytes] | None) -> Meta | None:
    return Meta(*map(int, reply)) if reply else None


def _delta_head(delta: Delta, now: int) -> list[Any]:
    return [
        now,
        "" if delta.idle is None else delta.idle,
        "" if delta.deadline is None else delta.deadline,
        "1" if delta.clear else "0",
    ]


def _delta_changes(delta: Delta) -> list[Any]:
    args: list[Any] = []
    for name, value in delta.sets.items():
        args += (name, value)
    for name in delta.deletes:
        args += (name, b"")
    return args


def _expected_args(expected: Record | None, now: int) -> tuple[Any, ...]:
    if expected is None:
        return ("", "", "")
    meta = expected.meta
    return (meta.version - 1, format_record(expected), meta.expires - now)


def _limit_args(limit: SessionLimit | None) -> tuple[Any, str]:
    return ("", "") if limit is None else (limit.max_sessions, limit.policy.value)


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _spread_tags() -> dict[str, str]:
    """For each shard, the shortest hash tag landing in its 256-slot range."""
    alphabet = string.ascii_lowercase + string.digits
    candidates = ("".join(p) for n in (1, 2, 3) for p in itertools.product(alphabet, repeat=n))
    by_range: dict[int, str] = {}
    for candidate in candidates:
        by_range.setdefault(key_slot(candidate.encode()) // 256, candidate)
        if len(by_range) == len(SHARD_ALPHABET):
            break
    return {shard: by_range[index] for index, shard in enumerate(SHARD_ALPHABET)}


#: shard character -> Cluster hash tag
SLOT_TAGS = _spread_tags()


class RedisCommands:
    """What each store operation sends to Redis (no I/O).

    `anonymous_events`: track sessions without a principal too (schedule
    entries, events). `stream_length`: the approximate length each shard's
    event stream is trimmed to; 0 publishes no stream (listeners only).
    """

    def __init__(
        self,
        namespace: str = "sh",
        *,
        cluster: bool = False,
        anonymous_events: bool = False,
        stream_length: int = 10_000,
        listeners: Listeners | None = None,
    ) -> None:
        if not namespace or any(c in namespace for c in "{} "):
            raise ValueError("namespace must be non-empty, without braces or spaces")
        if stream_length < 0:
            raise ValueError("stream_length must be 0 (no stream) or more")
        self.namespace = namespace
        self.cluster = cluster
        self.listeners = listeners or Listeners()
        self._settings = (stream_length, "1" if anonymous_events else "0")
        self._anonymous = anonymous_events
        #: The client-side cache of reads, if the store keeps one (see `cache`).
        self.cache: ClientCache | None = None

    def key(self, handle: str) -> str:
        return f"{self.namespace}:s:{{{SLOT_TAGS[handle[0]]}}}{handle[1:]}"

    def index_key(self, user: UserRef) -> str:
        return self.user_key(user.shard, user.digest)

    def user_key(self, shard: str, user: str) -> str:
        """The index of the user whose digest is `user`, in `shard`."""
        return f"{self.namespace}:u:{{{SLOT_TAGS[shard]}}}{user}"

    def books(self, handle: str) -> tuple[str, str]:
        """The schedule and stream of `handle`'s shard."""
        return self.schedule_key(handle[0]), self.stream_key(handle[0])

    def schedule_key(self, shard: str) -> str:
        return f"{self.namespace}:x:{{{SLOT_TAGS[shard]}}}"

    def stream_key(self, shard: str) -> str:
        return f"{self.namespace}:e:{{{SLOT_TAGS[shard]}}}"

    def stream_keys(self) -> list[str]:
        return [self.stream_key(shard) for shard in SHARD_ALPHABET]

    def lease_key(self, name: str) -> str:
        return f"{self.namespace}:lease:{name}"

    def steps(self, operation: Operation, *, lookup: bool = True) -> Calls:
        """The calls of `operation`; `lookup=False`: a read may not be answered from the cache."""
        if self.cache is None or isinstance(operation, Read):
            return self._steps(operation, lookup)
        return self._writing(self.cache, operation)

    def _writing(self, cache: ClientCache, operation: Operation) -> Calls:
        # Before: no read of this instance serves the old record meanwhile. After: a
        # read that fetched it meanwhile was not kept (the drop moved the epoch).
        cache.written(operation, self.key)
        try:
            return (yield from self._steps(operation, False))
        finally:
            cache.written(operation, self.key)

    def _steps(self, operation: Operation, lookup: bool) -> Calls:
        match operation:
            case Read(handle, now, share):
                return (yield from self._read(handle, now, share, lookup))
            case Create(handle, record, limit):
                meta = record.meta
                ttl = meta.expires - meta.created
                if limit is None and USER not in record.fields and not self._anonymous:
                    # Nothing to book or report: a plain SET.
                    return (yield from self._put_new(handle, record, ttl))
                status = yield from self._create(handle, record, meta.created, ttl, limit)
                return LIMIT_REACHED if status < 0 else status == 1
            case Apply(handle, delta, now, expected):
                return (yield from self._apply(handle, delta, now, expected))
            case Rotate(handle, new_handle, delta, now, limit, user):
                for _ in range(_HOPS):
                    result = yield from self._rotate(handle, new_handle, delta, now, limit, user)
                    if not isinstance(result, _Rotated):
                        return result
                    handle, user = result.handle, None
                return None
            case Delete(handle, now, reason, user):
                return (yield from self._delete(handle, now, reason.value, user)) == 1
            case ListSessions(user, now):
                return (yield from self._list(user))
            case EndSessions(user, now, reason, keep):
                kept = keep[1:] if keep and keep[0] == user.shard else ""
                args = (user.shard, now, reason.value, kept, *self._settings)
                index = self.index_key(user)
                keys: tuple[str, ...] = (index, *self.books(user.shard))
                keys += yield from self._members(user.shard, index)
                _, digests, _ = yield from self._script(END_SESSIONS, keys, args)
                return [user.shard + digest.decode() for digest in digests]
            case Sweep(now, batch):
                return (yield from self._sweep(now, batch))
            case HoldLease(name, token, ttl):
                return bool((yield Call((1, self.lease_key(name), token, ttl), LEASE)))
            case ReleaseLease(name, token):
                yield Call((1, self.lease_key(name), token, ""), LEASE)
                return None
        raise TypeError(f"unknown operation {operation!r}")

    def _read(self, handle: str, now: int, share: float, lookup: bool) -> Calls:
        """A plain GET; the refresh script only when the idle expiry is due to move.

        With the default refresh share (a tenth of the idle timeout) a session
        is refreshed once every few minutes, so nearly every read is a GET. With
        a client cache, a GET it can answer is not sent at all.
        """
        key = self.key(handle)
        cache = self.cache
        if cache is None:
            raw = yield Call(("GET", key))
        else:
            raw = cache.get(key) if lookup else None
            if raw is None:
                epoch = cache.epoch
                raw = yield Call(("GET", key))
                cache.put(key, raw, epoch)
        found = _found(raw)
        if not isinstance(found, bytes):
            return found
        record = parse_record(found)
        if record.meta.expires <= now:
            return None  # Redis drops the key any moment; the sweep reports it
        if refresh_due(record, now, share):
            if cache is not None:
                cache.drop((key,))  # the script rewrites it
            keys = (key, *self._index_of(handle, record.fields.get(USER)))
            found = _found((yield from self._run(READ, keys, (now, share))))
            if not isinstance(found, bytes):
                return found
            refreshed = parse_record(found)
            refreshed.refreshed = True
            return refreshed
        return record

    def _apply(self, handle: str, delta: Delta, now: int, expected: Record | None) -> Calls:
        """Commit `delta`, following the session's forwards if it was rotated meanwhile."""
        head, changes = _delta_head(delta, now), _delta_changes(delta)
        for hop in range(_HOPS):
            user = expected.fields.get(USER) if expected is not None else None
            keys = (self.key(handle), *self._index_of(handle, user))
            args = (*head, *_expected_args(expected, now), *changes)
            reply = yield from self._run(APPLY, keys, args)
            if not isinstance(reply, bytes):
                meta = expected.meta if reply == 1 and expected else _meta(reply)
                return Followed(meta) if hop and meta is not None else meta
            # Rotated since it was read: merge into the rotated session (the
            # version read is another record's, so `expected` cannot stand).
            handle, expected = reply.decode(), None
            self._forget_cached(handle)
        return None

    def _rotate(
        self,
        handle: str,
        new_handle: str,
        delta: Delta,
        now: int,
        limit: SessionLimit | None,
        user: bytes | None,
    ) -> Calls:
        """One attempt at a rotation from `handle`: its result, or `_Rotated`."""
        if self.cluster and SLOT_TAGS[handle[0]] != SLOT_TAGS[new_handle[0]]:
            return (yield from self._move(handle, new_handle, delta, now, limit))
        keys: tuple[str, ...] = (self.key(handle), self.key(new_handle))
        keys += (self.schedule_key(handle[0]), *self.books(new_handle))
        login = delta.sets.get(USER)
        index = self._index_of(new_handle, login or user)
        keys += index
        if login is not None and index and limit is not None:
            keys += yield from self._members(new_handle[0], index[0])
        args = (*_delta_head(delta, now), handle, new_handle, *self._settings)
        args += (*_limit_args(limit), *_delta_changes(delta))
        status, result, _ = yield from self._script(ROTATE, keys, args)
        if status == 2:
            self._forget_cached(result.decode())
            return _Rotated(result.decode())
        if status < 0:
            return LIMIT_REACHED if status == -1 else PRINCIPAL_CHANGED
        return _meta(result or None)

    def _forget_cached(self, handle: str) -> None:
        """A write follows a forward to `handle`: no cached read of it may outlive it."""
        if self.cache is not None:
            self.cache.drop((self.key(handle),))

    def _put_new(self, handle: str, record: Record, ttl: int) -> Calls:
        """Store a record no book keeps (an anonymous session): True if stored."""
        blob = format_record(record)
        key = self.key(handle)
        if (yield Call(("SET", key, blob, "PX", ttl, "NX"))) is not None:
            return True
        # Taken -- or stored by this very call, whose first reply was lost.
        return (yield Call(("GET", key))) == blob

    def _run(self, script: Script, keys: tuple[str, ...], args: tuple[Any, ...]) -> Calls:
        """Call `script` with `keys` declared, and again with the keys it finds it
        needs too (see track.lua): its reply."""
        for _ in range(_NEED_ROUNDS):
            reply = yield Call((len(keys), *keys, *args), script)
            wanted = _needed(reply)
            if wanted is None:
                return reply
            keys += wanted
        raise StoreUnavailable("the session's keys kept changing while it was written; try again")

    def _script(self, script: Script, keys: tuple[str, ...], args: tuple[Any, ...]) -> Calls:
        """Run a script that reports events: its status, result and events (sent on)."""
        status, result, raw = yield from self._run(script, keys, args)
        events = [event_from_fields(_pairs(each)) for each in raw]
        self.listeners.emit(events)
        return status, result, events

    def _index_of(self, handle: str, user: bytes | None) -> tuple[str, ...]:
        """The user index of a session in `handle`'s shard whose user digest is `user`."""
        return () if user is None else (self.user_key(handle[0], user.decode()),)

    def _members(self, shard: str, index: str) -> Calls:
        """The record keys of the sessions in `index`, of `shard` (read before a script
        that touches them: it checks they are all, see track.lua)."""
        digests = yield Call(("ZRANGE", index, 0, -1))
        return tuple(self.key(shard + digest.decode()) for digest in digests)

    def _list(self, user: UserRef) -> Calls:
        """The live sessions of `user`, oldest login first; entries whose record is
        gone are taken out of the index on the way."""
        index = self.index_key(user)
        digests = [d.decode() for d in (yield Call(("ZRANGE", index, 0, -1)))]
        if not digests:
            return []
        blobs = yield Call(("MGET", *(self.key(user.shard + d) for d in digests)))
        found, gone = [], []
        for digest, blob in zip(digests, blobs, strict=True):
            record = _found(blob)
            if not isinstance(record, bytes):
                gone.append(digest)
                continue
            try:
                parsed = parse_record(record)
            except RecordError:
                continue  # not a record: the session's own reads report it
            fields = parsed.fields
            info = session_info(
                user.shard + digest,
                user.principal,
                parsed.meta,
                fields.get(AUTH_TIME),
                fields.get(CLIENT_INFO),
            )
            found.append(info)
        if gone:
            yield Call(("ZREM", index, *gone))
        return found

    def _create(
        self,
        handle: str,
        record: Record,
        now: int,
        ttl: int,
        limit: SessionLimit | None,
        *,
        report: bool = True,
    ) -> Calls:
        args = (handle, now, ttl, *self._settings, *_limit_args(limit), "1" if report else "")
        keys: tuple[str, ...] = (self.key(handle), *self.books(handle))
        index = self._index_of(handle, record.fields.get(USER))
        keys += index
        if index and limit is not None:
            keys += yield from self._members(handle[0], index[0])
        status, _, _ = yield from self._script(CREATE, keys, (*args, format_record(record)))
        return status

    def _delete(self, handle: str, now: int, reason: str, user: bytes | None = None) -> Calls:
        """End the session, following its forwards: 1 if it ended, 0 if already gone."""
        for _ in range(_HOPS):
            args = (handle, now, reason, *self._settings)
            keys = (self.key(handle), *self.books(handle), *self._index_of(handle, user))
            status, target, _ = yield from self._script(DELETE, keys, args)
            if status != 2:
                return status
            handle, user = target.decode(), None
            self._forget_cached(handle)
        return 0

    def _move(
        self, handle: str, new_handle: str, delta: Delta, now: int, limit: SessionLimit | None
    ) -> Calls:
        """Rotate across Cluster slots: copy the session to the new key, then hand over.

        The copy (the old record merged with the delta) is created in the new
        slot, where the login's limit is checked; the hand-over, in the old
        slot, ends the old record only if it is still the version copied, and
        reports the move. A commit to the old id in between: the copy is made
        again from the record as it is now. A logout (or any end) in between:
        the copy goes too, and the session is gone.
        """
        raw = yield Call(("GET", self.key(handle)))
        if _found(raw) is FORWARDED and raw[2:].decode() != new_handle:
            return _Rotated(raw[2:].decode())
        blob = _found(raw)
        if not isinstance(blob, bytes):
            # A retry of a move that happened?
            moved = _found((yield Call(("GET", self.key(new_handle)))))
            return parse_record(moved).meta if isinstance(moved, bytes) else None
        login = delta.sets.get(PRINCIPAL)
        event = EventType.AUTHENTICATED if login else EventType.ROTATED
        limit = limit if login else None
        try:
            for _ in range(_MOVE_ATTEMPTS):
                copied = parse_record(blob)
                bound = copied.fields.get(PRINCIPAL)
                if login is not None and bound is not None and bound != login:
                    return PRINCIPAL_CHANGED
                record = apply(copied, delta, now)
                ttl = record.meta.expires - now
                if ttl <= 0:
                    yield Call(("DEL", self.key(handle)))  # timed out: the sweep reports it
                    return None
                status = yield from self._create(new_handle, record, now, ttl, limit, report=False)
                if status <= 0:
                    return LIMIT_REACHED if status < 0 else None  # None: taken (2^-256)
                version = copied.meta.version
                args = (handle, now, version, new_handle, event.value, *self._settings)
                keys: tuple[str, ...] = (self.key(handle), *self.books(handle))
                keys += self._index_of(handle, copied.fields.get(USER))
                status, current, _ = yield from self._script(
                    HAND_OVER, keys, (*args, format_record(record))
                )
                if status == 1:
                    return record.meta
                yield from self._delete(new_handle, now, "")  # the copy is out of date
                if status == 0:
                    return None  # ended meanwhile
                if status == 3:
                    return _Rotated(current.decode())  # another request moved it first
                blob = current
        except redis_errors.RedisError:
            # The request fails and its client keeps the old id, so the copy would
            # only count toward its user's session limit until it expired.
            with contextlib.suppress(redis_errors.RedisError):
                yield from self._delete(new_handle, now, "")
            raise
        raise StoreUnavailable("the session kept changing while it moved; try again")

    def _sweep(self, now: int, batch: int) -> Calls:
        expired = 0
        for shard in SHARD_ALPHABET:
            schedule, stream = self.books(shard)
            due = batch
            while due >= batch:  # a full batch: there may be more
                members = yield Call(("ZRANGEBYSCORE", schedule, "-inf", now, "LIMIT", 0, batch))
                due = len(members)
                if not members:
                    break
                keys: tuple[str, ...] = (schedule, stream)
                for member in members:
                    keys += (self.key(shard + member[:_DIGEST].decode()),)
                    if len(member) > _DIGEST:
                        keys += (self.user_key(shard, member[_DIGEST : 2 * _DIGEST].decode()),)
                args = (shard, now, self._settings[0], *members)
                _, _, events = yield from self._script(SWEEP, keys, args)
                expired += len(events)
        return expired


def _is_cluster(client: Any) -> bool:
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


def _check_client(client: Any) -> None:
    kwargs = client.get_connection_kwargs() if hasattr(client, "get_connection_kwargs") else {}
    if kwargs.get("decode_responses"):
        raise ValueError("the Redis client must return bytes (decode_responses=False)")


def _commands_for(
    client: Any, namespace: str, anonymous_events: bool, stream_length: int
) -> RedisCommands:
    _check_client(client)
    return RedisCommands(
        namespace,
        cluster=_is_cluster(client),
        anonymous_events=anonymous_events,
        stream_length=stream_length,
    )


def _cache_for(commands: RedisCommands, size: int, heartbeat: float) -> ClientCache:
    if commands.cluster:
        # Broadcast tracking is per node, and a Cluster client has no one
        # connection that hears every node: refused rather than half-coherent.
        raise ValueError("the client cache works with standalone Redis and Sentinel, not Cluster")
    commands.cache = ClientCache(commands.namespace, size, heartbeat)
    return commands.cache


def _evalsha(call: Call) -> tuple[Any, ...]:
    assert call.script is not None
    return ("EVALSHA", call.script.sha, *call.args)


def _eval(call: Call) -> tuple[Any, ...]:
    assert call.script is not None
    return ("EVAL", call.script.source, *call.args)


def _writes(call: Call | Pause) -> TypeGuard[Call]:
    return isinstance(call, Call) and is_write(call)


# redis-py's execute_command is untyped (and sync or async by client).
def _command(client: Any, *args: Any) -> Any:
    return client.execute_command(*args)


class RedisStore:
    """A store on a `redis.Redis` (or `redis.cluster.RedisCluster`) client.

    `anonymous_events` and `stream_length`: see `RedisCommands`. Events this
    process causes also go to `listeners`.

    `durable_ends`: each end of a session (logout, "log out everywhere", a
    login at the session limit) is acknowledged only once this many replicas
    have it, within `durable_ends_timeout` seconds (`sessionhub.stores.redis.durable`);
    unset: 1 on a Sentinel-managed client, else 0. On a Sentinel-managed client
    (redis-py's `master_for`, as `sessionhub.connect` builds) writes wait for a
    failover to end, at most `failover_wait` seconds
    (`sessionhub.stores.redis.failover`).
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        namespace: str = "sh",
        anonymous_events: bool = False,
        stream_length: int = 10_000,
        cache: bool = False,
        cache_size: int = 10_000,
        cache_heartbeat: float = HEARTBEAT_SECONDS,
        redirect_patience: float = REDIRECT_PATIENCE,
        durable_ends: int | None = None,
        durable_ends_timeout: float = DEFAULT_TIMEOUT,
        failover_wait: float = FAILOVER_WAIT,
    ) -> None:
        self.client = client
        self.commands = _commands_for(client, namespace, anonymous_events, stream_length)
        self.listeners = self.commands.listeners
        #: How long a Cluster call is tried again while its slot is on the move.
        self.redirect_patience = redirect_patience
        sentinel = sentinel_managed(client)
        self.durable_ends = durable_replicas(
            durable_ends,
            sentinel=sentinel,
            cluster=self.commands.cluster,
            timeout=durable_ends_timeout,
            socket_timeout=socket_timeout_of(client),
        )
        self.durable_ends_timeout = durable_ends_timeout
        self.failover = FailoverGuard(client, failover_wait) if sentinel else None
        self.invalidations: Invalidations | None = None
        if cache:
            self.invalidations = Invalidations(
                _cache_for(self.commands, cache_size, cache_heartbeat), client
            )
            self.invalidations.drain()  # opens the connection (or tries again later)

    def execute(self, operation: Operation) -> Any:
        if self.invalidations is not None and type(operation) is Read:
            # A read the cache answers sends nothing: learn of a switch first.
            self._follow_failover(write=False)
            self.invalidations.drain()
        return self.run(self.commands.steps(operation), durable=ends_sessions(operation))

    def close(self) -> None:
        """Close the invalidation connection and the failover watch, if any (the client is
        the caller's)."""
        if self.invalidations is not None:
            self.invalidations.close()
        if self.failover is not None:
            self.failover.close()

    def run(self, steps: Calls, *, durable: bool = False) -> Any:
        """Send the calls `steps` yields, feeding back each reply (or error).

        `durable`: the calls end sessions, so their writes wait for `durable_ends` replicas.
        """
        try:
            call = next(steps)
            while True:
                try:
                    if durable and self.durable_ends and _writes(call):
                        reply = self._send_durable(call)
                    else:
                        reply = self._send(call)
                except redis_errors.RedisError as exc:
                    call = steps.throw(exc)
                else:
                    call = steps.send(reply)
        except StopIteration as done:
            return done.value
        except _UNAVAILABLE as exc:
            if not _is_unavailable(exc):
                raise
            raise _unavailable(exc) from exc
        except redis_errors.RedisError as exc:
            unavailable = _refused(exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def _follow_failover(self, write: bool) -> None:
        """Hold a write while a failover runs (Sentinel); after a switch, forget the old primary."""
        switched = self.failover is not None and self.failover.before(write)
        if switched and self.invalidations is not None:
            self.invalidations.close()  # the pool was dropped; this listened to the old primary

    def _send(self, call: Call | Pause) -> Any:
        if isinstance(call, Pause):
            time.sleep(call.seconds)
            return None
        self._follow_failover(is_write(call))
        if not self.commands.cluster:
            return self._send_once(call)
        redirects = _Redirects(self.redirect_patience)
        while True:
            try:
                return self._send_once(call)
            except Exception as exc:  # _Redirects re-raises what is not a slot on the move
                time.sleep(redirects.pause_after(exc))

    def _send_once(self, call: Call) -> Any:
        if call.script is None:
            return _command(self.client, *call.args)
        try:
            return _command(self.client, *_evalsha(call))
        except redis_errors.NoScriptError:
            return _command(self.client, *_eval(call))

    def _send_durable(self, call: Call) -> Any:
        """The write, then WAIT on the same connection (one round trip, not a transaction)."""
        self._follow_failover(True)
        client: Any = self.client
        for command in attempts(call):
            pipe = client.pipeline(transaction=False)
            pipe.execute_command(*command)
            pipe.execute_command(*wait_args(self.durable_ends, self.durable_ends_timeout))
            reply, acknowledged = pipe.execute(raise_on_error=False)
            if not isinstance(reply, redis_errors.NoScriptError):
                break
        return replicated(reply, acknowledged, self.durable_ends, self.durable_ends_timeout)


class AsyncRedisStore:
    """A store on a `redis.asyncio.Redis` (or its `RedisCluster`) client (options: `RedisStore`)."""

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        namespace: str = "sh",
        anonymous_events: bool = False,
        stream_length: int = 10_000,
        cache: bool = False,
        cache_size: int = 10_000,
        cache_heartbeat: float = HEARTBEAT_SECONDS,
        redirect_patience: float = REDIRECT_PATIENCE,
        durable_ends: int | None = None,
        durable_ends_timeout: float = DEFAULT_TIMEOUT,
        failover_wait: float = FAILOVER_WAIT,
    ) -> None:
        self.client = client
        self.commands = _commands_for(client, namespace, anonymous_events, stream_length)
        self.listeners = self.commands.listeners
        self.redirect_patience = redirect_patience
        sentinel = sentinel_managed(client)
        self.durable_ends = durable_replicas(
            durable_ends,
            sentinel=sentinel,
            cluster=self.commands.cluster,
            timeout=durable_ends_timeout,
            socket_timeout=socket_timeout_of(client),
        )
        self.durable_ends_timeout = durable_ends_timeout
        self.failover = AsyncFailoverGuard(client, failover_wait) if sentinel else None
        #: Opened by the first read (in the event loop), or by `start_cache`.
        self.invalidations: AsyncInvalidations | None = None
        if cache:
            self.invalidations = AsyncInvalidations(
                _cache_for(self.commands, cache_size, cache_heartbeat), client
            )
        # A fresh asyncio Cluster client used by many tasks at once, before it
        # has learnt the slots, sends to wrong nodes, and after enough MOVED
        # replies closes its connections under the other tasks (whose scripts
        # are then retried): the first call learns the slots, alone.
        self._unready = self.commands.cluster
        self._ready_lock = asyncio.Lock()

    async def aexecute(self, operation: Operation) -> Any:
        invalidations = self.invalidations
        if invalidations is not None and type(operation) is Read:
            # As in `RedisStore.execute`: a switch is learnt before the cache answers.
            await self._follow_failover(write=False)
            lookup = invalidations.ready() or await invalidations.settle()
            return await self.arun(self.commands.steps(operation, lookup=lookup))
        return await self.arun(self.commands.steps(operation), durable=ends_sessions(operation))

    async def start_cache(self) -> bool:
        """Open the invalidation connection now; True if the cache is serving."""
        return self.invalidations is not None and await self.invalidations.start()

    async def aclose(self) -> None:
        """Close the invalidation connection and the failover watch, if any (the client is
        the caller's)."""
        if self.invalidations is not None:
            await self.invalidations.aclose()
        if self.failover is not None:
            self.failover.close()

    async def arun(self, steps: Calls, *, durable: bool = False) -> Any:
        """Send the calls `steps` yields, feeding back each reply (or error); `durable`: as
        `RedisStore.run`."""
        if self._unready:
            await self._learn_slots()
        try:
            call = next(steps)
            while True:
                try:
                    if durable and self.durable_ends and _writes(call):
                        reply = await self._send_durable(call)
                    else:
                        reply = await self._send(call)
                except redis_errors.RedisError as exc:
                    call = steps.throw(exc)
                else:
                    call = steps.send(reply)
        except StopIteration as done:
            return done.value
        except _UNAVAILABLE as exc:
            if not _is_unavailable(exc):
                raise
            raise _unavailable(exc) from exc
        except redis_errors.RedisError as exc:
            unavailable = _refused(exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    async def _learn_slots(self) -> None:
        async with self._ready_lock:
            if self._unready:
                try:
                    await self.client.initialize()
                except _UNAVAILABLE as exc:
                    raise _unavailable(exc) from exc
                self._unready = False

    async def _follow_failover(self, write: bool) -> None:
        """As `RedisStore._follow_failover`."""
        switched = self.failover is not None and await self.failover.before(write)
        if switched and self.invalidations is not None:
            await self.invalidations.aclose()

    async def _send(self, call: Call | Pause) -> Any:
        if isinstance(call, Pause):
            await asyncio.sleep(call.seconds)
            return None
        await self._follow_failover(is_write(call))
        if not self.commands.cluster:
            return await self._send_once(call)
        redirects = _Redirects(self.redirect_patience)
        while True:
            try:
                return await self._send_once(call)
            except Exception as exc:  # _Redirects re-raises what is not a slot on the move
                await asyncio.sleep(redirects.pause_after(exc))

    async def _send_once(self, call: Call) -> Any:
        if call.script is None:
            return await _command(self.client, *call.args)
        try:
            return await _command(self.client, *_evalsha(call))
        except redis_errors.NoScriptError:
            return await _command(self.client, *_eval(call))

    async def _send_durable(self, call: Call) -> Any:
        """The write, then WAIT on the same connection (as `RedisStore._send_durable`)."""
        await self._follow_failover(True)
        client: Any = self.client
        for command in attempts(call):
            pipe = client.pipeline(transaction=False)
            pipe.execute_command(*command)
            pipe.execute_command(*wait_args(self.durable_ends, self.durable_ends_timeout))
            reply, acknowledged = await pipe.execute(raise_on_error=False)
            if not isinstance(reply, redis_errors.NoScriptError):
                break
        return replicated(reply, acknowledged, self.durable_ends, self.durable_ends_timeout)

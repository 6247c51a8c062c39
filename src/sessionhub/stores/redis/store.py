"""The Redis store: standalone, Sentinel or Cluster, sync or asyncio.

Key layout (`ns` is the namespace, "sh" unless set)::

    {ns}:s:{<tag>}<digest>     one session record (a string), native TTL

The braces are a Cluster hash tag. Each of the 64 shards has a tag chosen so
that shard i hashes into slots [256 i, 256 i + 256): the shards spread evenly
over any split of the slot range into contiguous parts, as Cluster makes. Every operation is
one round trip (a command or a script called by SHA); the only exception is
a login that moves a session to another shard on a Cluster, where old and new
keys live in different slots and the move takes three (read, create, delete;
both ids are valid for at most the last one).

How each operation maps to Redis is written once, in `RedisCommands`, as
generators of calls; `RedisStore` and `AsyncRedisStore` only send them.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis import exceptions as redis_errors
from redis.crc import key_slot

from ...errors import StoreUnavailable
from ...ids import SHARD_ALPHABET
from ...record import Delta, Meta, apply, format_record, parse_record
from ..base import Apply, Create, Delete, Operation, Read, Rotate
from .scripts import APPLY, READ, ROTATE, Script

__all__ = ["AsyncRedisStore", "RedisCommands", "RedisStore"]

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


Calls = Generator[Call, Any, Any]


def _meta(reply: list[bytes] | None) -> Meta | None:
    return None if reply is None else Meta(*map(int, reply))


def _delta_args(delta: Delta, now: int) -> list[Any]:
    args: list[Any] = [
        now,
        "" if delta.idle is None else delta.idle,
        "" if delta.deadline is None else delta.deadline,
        "1" if delta.clear else "0",
    ]
    for name, value in delta.sets.items():
        args += (name, value)
    for name in delta.deletes:
        args += (name, b"")
    return args


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
    """What each store operation sends to Redis (no I/O)."""

    def __init__(self, namespace: str = "sh", *, cluster: bool = False) -> None:
        if not namespace or any(c in namespace for c in "{} "):
            raise ValueError("namespace must be non-empty, without braces or spaces")
        self.namespace = namespace
        self.cluster = cluster

    def key(self, handle: str) -> str:
        return f"{self.namespace}:s:{{{SLOT_TAGS[handle[0]]}}}{handle[1:]}"

    def steps(self, operation: Operation) -> Calls:
        match operation:
            case Read(handle, now, share):
                blob = yield Call((1, self.key(handle), now, share), READ)
                return None if blob is None else parse_record(blob)
            case Create(handle, record):
                ttl = record.meta.expires - record.meta.created
                stored = yield Call(
                    ("SET", self.key(handle), format_record(record), "NX", "PX", ttl)
                )
                return bool(stored)
            case Apply(handle, delta, now):
                reply = yield Call((1, self.key(handle), *_delta_args(delta, now)), APPLY)
                return _meta(reply)
            case Rotate(handle, new_handle, delta, now):
                if self.cluster and SLOT_TAGS[handle[0]] != SLOT_TAGS[new_handle[0]]:
                    return (yield from self._move(handle, new_handle, delta, now))
                keys = (self.key(handle), self.key(new_handle))
                reply = yield Call((2, *keys, *_delta_args(delta, now)), ROTATE)
                return _meta(reply)
            case Delete(handle):
                return bool((yield Call(("DEL", self.key(handle)))))
        raise TypeError(f"unknown operation {operation!r}")

    def _move(self, handle: str, new_handle: str, delta: Delta, now: int) -> Calls:
        """Rotate across Cluster slots: create the new key, then delete the old."""
        old_key, new_key = self.key(handle), self.key(new_handle)
        blob = yield Call(("GET", old_key))
        if blob is None:
            moved = yield Call(("GET", new_key))  # a retry of a move that happened
            return None if moved is None else parse_record(moved).meta
        record = apply(parse_record(blob), delta, now)
        ttl = record.meta.expires - now
        if ttl > 0:
            yield Call(("SET", new_key, format_record(record), "NX", "PX", ttl))
        yield Call(("DEL", old_key))
        return record.meta if ttl > 0 else None


def _is_cluster(client: Any) -> bool:
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


def _check_client(client: Any) -> None:
    kwargs = client.get_connection_kwargs() if hasattr(client, "get_connection_kwargs") else {}
    if kwargs.get("decode_responses"):
        raise ValueError("the Redis client must return bytes (decode_responses=False)")


def _evalsha(call: Call) -> tuple[Any, ...]:
    assert call.script is not None
    return ("EVALSHA", call.script.sha, *call.args)


def _eval(call: Call) -> tuple[Any, ...]:
    assert call.script is not None
    return ("EVAL", call.script.source, *call.args)


# redis-py's execute_command is untyped (and sync or async by client).
def _command(client: Any, *args: Any) -> Any:
    return client.execute_command(*args)


class RedisStore:
    """A store on a `redis.Redis` (or `redis.cluster.RedisCluster`) client."""

    def __init__(
        self, client: redis.Redis | redis.cluster.RedisCluster, *, namespace: str = "sh"
    ) -> None:
        _check_client(client)
        self.client = client
        self.commands = RedisCommands(namespace, cluster=_is_cluster(client))

    def execute(self, operation: Operation) -> Any:
        steps = self.commands.steps(operation)
        try:
            call = next(steps)
            while True:
                call = steps.send(self._send(call))
        except StopIteration as done:
            return done.value
        except _UNAVAILABLE as exc:
            if not _is_unavailable(exc):
                raise
            raise _unavailable(exc) from exc

    def _send(self, call: Call) -> Any:
        if call.script is None:
            return _command(self.client, *call.args)
        try:
            return _command(self.client, *_evalsha(call))
        except redis_errors.NoScriptError:
            return _command(self.client, *_eval(call))


class AsyncRedisStore:
    """A store on a `redis.asyncio.Redis` (or its `RedisCluster`) client."""

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        namespace: str = "sh",
    ) -> None:
        _check_client(client)
        self.client = client
        self.commands = RedisCommands(namespace, cluster=_is_cluster(client))

    async def aexecute(self, operation: Operation) -> Any:
        steps = self.commands.steps(operation)
        try:
            call = next(steps)
            while True:
                call = steps.send(await self._send(call))
        except StopIteration as done:
            return done.value
        except _UNAVAILABLE as exc:
            if not _is_unavailable(exc):
                raise
            raise _unavailable(exc) from exc

    async def _send(self, call: Call) -> Any:
        if call.script is None:
            return await _command(self.client, *call.args)
        try:
            return await _command(self.client, *_evalsha(call))
        except redis_errors.NoScriptError:
            return await _command(self.client, *_eval(call))

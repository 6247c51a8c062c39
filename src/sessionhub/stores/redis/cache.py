"""Opt-in client-side caching of session reads, kept coherent by Redis.

A repeat read of an unchanged session is answered from memory, with no round
trip. Each store keeps one connection of its own on which Redis reports every
change to a session key (``CLIENT TRACKING ON REDIRECT <own id> BCAST PREFIX
<ns>:s:``, then ``SUBSCRIBE __redis__:invalidate``, RESP2): broadcast mode, so
every write anywhere reaches every caching instance and Redis keeps no table
of who read what. The rules, in `ClientCache`:

* Serve only while the invalidation connection is up. Any error on it (broken,
  Redis restarted, failover) drops the whole cache, and nothing is cached until
  a new connection is subscribed (tried again at most every `RETRY_SECONDS`).
* Before a read may be answered from memory, whatever invalidations already
  reached this process are applied (the sync shell drains the socket without
  blocking; the asyncio one lets its listener task catch up, or asks Redis).
* A reply is cached only if no invalidation was applied while it was in
  flight (`epoch`), so a GET racing a write elsewhere never leaves the old
  record behind.
* This instance's own writes drop the keys they touch before and after they
  run: read-your-writes never waits for the invalidation to arrive.

How long another instance's logout can go unseen is the time its
invalidation takes to reach this socket: one network delay (docs/operating.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from redis import exceptions as redis_errors

from ..base import Apply, Create, Delete, EndSessions, Operation, Rotate

__all__ = ["RETRY_SECONDS", "AsyncInvalidations", "ClientCache", "Invalidations"]

logger = logging.getLogger("sessionhub")

#: The shortest time between two attempts to open the invalidation connection.
RETRY_SECONDS = 1.0

_CHANNEL = b"__redis__:invalidate"


class ClientCache:
    """The cached records (a bounded LRU) and the rules above; no I/O."""

    def __init__(self, namespace: str, size: int = 10_000) -> None:
        if size < 1:
            raise ValueError("the client cache holds at least one entry")
        self.prefix = f"{namespace}:s:"
        self.size = size
        #: Bumped by every invalidation applied: a reply fetched across a bump is not kept.
        self.epoch = 0
        #: Whether the invalidation connection is subscribed (else nothing is served).
        self.listening = False
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        # WSGI servers read from many threads at once.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        if not self.listening:
            return None
        with self._lock:
            blob = self._entries.get(key)
            if blob is not None:
                self._entries.move_to_end(key)
            return blob

    def put(self, key: str, blob: bytes | None, epoch: int) -> None:
        """Keep `blob`, fetched when `epoch` was current, unless it may be outdated."""
        if blob is None or not self.listening:
            return
        with self._lock:
            if epoch != self.epoch:
                return  # an invalidation arrived while the GET was in flight
            self._entries[key] = blob
            self._entries.move_to_end(key)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, keys: Iterable[str]) -> None:
        with self._lock:
            self.epoch += 1
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._entries.clear()

    def start(self) -> None:
        """The invalidation connection is subscribed: caching may begin."""
        self.clear()
        self.listening = True

    def stop(self) -> None:
        """The invalidation connection is gone: nothing can be trusted any more."""
        self.listening = False
        self.clear()

    def heard(self, message: Any) -> None:
        """Apply one message of the invalidation connection."""
        # redis-py hands the channel's messages over as [b"invalidate", keys];
        # the plain RESP2 shape is [b"message", channel, keys]. Anything else
        # (the subscription's confirmation, a PONG) invalidates nothing.
        if not isinstance(message, list):
            return
        if len(message) == 2 and message[0] == b"invalidate":
            keys = message[1]
        elif len(message) == 3 and message[0] == b"message" and message[1] == _CHANNEL:
            keys = message[2]
        else:
            return
        if keys is None:  # FLUSHALL / FLUSHDB: everything
            self.clear()
        else:
            self.drop(key.decode() if isinstance(key, bytes) else str(key) for key in keys)

    def written(self, operation: Operation, key_of: Any) -> None:
        """This instance changes what `operation` names: forget it now."""
        match operation:
            case Apply(handle) | Create(handle) | Delete(handle):
                self.drop((key_of(handle),))
            case Rotate(handle, new_handle):
                self.drop((key_of(handle), key_of(new_handle)))
            case EndSessions():
                self.clear()  # rare, and which sessions it ends is known only after


def _subscribe_commands(connection_id: int, prefix: str) -> list[tuple[Any, ...]]:
    return [
        ("CLIENT", "TRACKING", "ON", "REDIRECT", connection_id, "BCAST", "PREFIX", prefix),
        ("SUBSCRIBE", _CHANNEL),
    ]


# redis-py parses the channel's messages as invalidation pushes and drops them
# unless a handler is set: this one hands them back as the read's reply.
def _as_is(message: Any) -> Any:
    return message


async def _async_as_is(message: Any) -> Any:
    return message


def _new_connection(pool: Any) -> Any:
    # The client's own connection class and settings: TLS, auth, Sentinel alike.
    # Not taken from the pool, so it never counts against (or returns to) it.
    return pool.connection_class(**pool.connection_kwargs)


class Invalidations:
    """The sync shell: drains the invalidation connection before each read."""

    def __init__(self, cache: ClientCache, client: Any) -> None:
        self.cache = cache
        self._pool = client.connection_pool
        self._connection: Any = None
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def drain(self) -> None:
        """Apply every invalidation that has arrived, without waiting for more."""
        with self._lock:
            connection = self._connection
            if connection is None:
                if time.monotonic() >= self._retry_at:
                    self._open()
                return
            try:
                while connection.can_read(0):
                    self.cache.heard(connection.read_response(push_request=True))
            except (redis_errors.RedisError, OSError):
                self._lost()

    def _open(self) -> None:
        connection = _new_connection(self._pool)
        try:
            connection.connect()
            connection._parser.set_invalidation_push_handler(_as_is)
            connection.send_command("CLIENT", "ID")
            connection_id = connection.read_response()
            for command in _subscribe_commands(connection_id, self.cache.prefix):
                connection.send_command(*command)
                connection.read_response(push_request=True)
        except (redis_errors.RedisError, OSError):
            self._retry_at = time.monotonic() + RETRY_SECONDS
            with contextlib.suppress(Exception):
                connection.disconnect()
            return
        self._connection = connection
        self.cache.start()

    def _lost(self) -> None:
        self.cache.stop()
        connection, self._connection = self._connection, None
        self._retry_at = time.monotonic() + RETRY_SECONDS
        with contextlib.suppress(Exception):
            connection.disconnect()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._lost()


class AsyncInvalidations:
    """The asyncio shell: a listener task applies invalidations as they arrive."""

    def __init__(self, cache: ClientCache, client: Any) -> None:
        self.cache = cache
        self._pool = client.connection_pool
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None
        self._retry_at = 0.0

    def ready(self) -> bool:
        """Whether a read may be answered from memory now (no invalidation left unread)."""
        if self._task is None:
            if time.monotonic() >= self._retry_at:
                self._spawn()
            return False
        return self.cache.listening and not _unread(self._connection)

    async def settle(self) -> bool:
        """`ready()`, after letting the listener apply what has just arrived."""
        for _ in range(3):  # the event loop feeds the listener within an iteration or two
            if self.ready():
                return True
            if not self.cache.listening:
                return False
            await asyncio.sleep(0)
        return False

    async def start(self) -> bool:
        """Open the connection now (not at the first read); True once listening."""
        if self._task is None:
            self._spawn()
        assert self._subscribed is not None
        assert self._task is not None
        waiter = asyncio.ensure_future(self._subscribed.wait())
        await asyncio.wait((waiter, self._task), return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return self.cache.listening

    def _spawn(self) -> None:
        self._subscribed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        connection = self._connection = _new_connection(self._pool)
        try:
            await connection.connect()
            connection._parser.set_invalidation_push_handler(_async_as_is)
            await connection.send_command("CLIENT", "ID")
            connection_id = await connection.read_response()
            for command in _subscribe_commands(connection_id, self.cache.prefix):
                await connection.send_command(*command)
                await connection.read_response(push_request=True)
            self.cache.start()
            assert self._subscribed is not None
            self._subscribed.set()
            while True:
                message = await connection.read_response(timeout=math.inf, push_request=True)
                self.cache.heard(message)
        except Exception:  # whatever broke it, the cache goes (below)
            logger.debug("client cache: the invalidation connection was lost", exc_info=True)
        finally:
            self.cache.stop()
            self._connection = None
            self._task = None
            self._retry_at = time.monotonic() + RETRY_SECONDS
            with contextlib.suppress(Exception):
                await connection.disconnect()

    async def aclose(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _unread(connection: Any) -> bool:
    """Whether bytes wait on the asyncio connection that its listener has not read.

    redis.asyncio exposes neither, so this looks at its stream reader's buffer and
    polls the socket; anything unexpected counts as unread (the read asks Redis).
    """
    reader = getattr(connection, "_reader", None)
    writer = getattr(connection, "_writer", None)
    buffered: bytes = getattr(reader, "_buffer", b"?")
    if reader is None or writer is None or buffered:
        return True
    sock = writer.transport.get_extra_info("socket")
    if sock is None:
        return True
    try:
        readable, _, _ = select.select((sock.fileno(),), (), (), 0)
    except (OSError, ValueError):
        return True
    return bool(readable)

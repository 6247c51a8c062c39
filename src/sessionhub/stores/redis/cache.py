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
* Serve only while Redis is heard from: a connection can stay open and deliver
  nothing (a partition without a reset, a stalled Redis). After `heartbeat`
  seconds without a PONG the connection is sent a PING; a PING unanswered for
  another `heartbeat` counts as a broken connection (above). Only a PONG proves
  delivery, and it proves it as of its PING's sending: Redis ran everything
  written before then, and queued those invalidations ahead of the PONG. So a
  read is answered from memory only if a PING sent within the last
  `2 * heartbeat` seconds has been answered (`fresh`), whatever the shells do.
* Before a read may be answered from memory, whatever invalidations already
  reached this process are applied (the sync shell drains the socket without
  blocking; the asyncio one lets its listener task catch up, or asks Redis).
* A reply is cached only if no invalidation was applied while it was in
  flight (`epoch`), so a GET racing a write elsewhere never leaves the old
  record behind.
* This instance's own writes drop the keys they touch before and after they
  run: read-your-writes never waits for the invalidation to arrive.

How long another instance's logout can go unseen is the time its
invalidation takes to reach this socket: one network delay; if the
connection silently stops delivering, `2 * heartbeat` (docs/operating.md).
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
from collections.abc import Generator, Iterable
from typing import Any

from redis import exceptions as redis_errors

from ..base import Apply, Create, Delete, EndSessions, Operation, Rotate

__all__ = [
    "HEARTBEAT_SECONDS",
    "RETRY_SECONDS",
    "AsyncInvalidations",
    "ClientCache",
    "Invalidations",
]

logger = logging.getLogger("sessionhub")

#: The shortest time between two attempts to open the invalidation connection.
RETRY_SECONDS = 1.0

#: Seconds without a PONG before a PING; as long again unanswered: broken.
HEARTBEAT_SECONDS = 1.0

_CHANNEL = b"__redis__:invalidate"


class ClientCache:
    """The cached records (a bounded LRU) and the rules above; no I/O."""

    def __init__(
        self, namespace: str, size: int = 10_000, heartbeat: float = HEARTBEAT_SECONDS
    ) -> None:
        if size < 1:
            raise ValueError("the client cache holds at least one entry")
        if not 0 < heartbeat < math.inf:
            raise ValueError("the heartbeat is a positive number of seconds")
        self.prefix = f"{namespace}:s:"
        self.size = size
        self.heartbeat = heartbeat
        #: When the last answered PING was sent (monotonic): Redis was heard as of then.
        self.heard_at = -math.inf
        #: When the PING awaiting its PONG was sent, if one is.
        self.pinged_at: float | None = None
        #: Bumped by every invalidation applied: a reply fetched across a bump is not kept.
        self.epoch = 0
        #: Whether the invalidation connection is subscribed (else nothing is served).
        self.listening = False
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        # WSGI servers read from many threads at once.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, now: float) -> bool:
        """Whether Redis was heard from recently enough for a read to be served from memory."""
        return self.listening and now - self.heard_at < 2 * self.heartbeat

    def get(self, key: str) -> bytes | None:
        if not self.fresh(time.monotonic()):
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

    def start(self, since: float) -> None:
        """The invalidation connection, opened at `since`, is subscribed: caching may begin."""
        self.clear()
        self.heard_at = since
        self.pinged_at = None
        self.listening = True

    def stop(self) -> None:
        """The invalidation connection is gone: nothing can be trusted any more."""
        self.listening = False
        self.clear()

    # -- the heartbeat: the shells ask what is due and do it ---------------------------

    def ping_due(self, now: float) -> bool:
        return self.pinged_at is None and now - self.heard_at >= self.heartbeat

    def pinged(self, now: float) -> None:
        self.pinged_at = now

    def overdue(self, now: float) -> bool:
        """Whether the PING went unanswered too long: the connection counts as broken."""
        return self.pinged_at is not None and now - self.pinged_at >= self.heartbeat

    def next_beat(self, now: float) -> float:
        """Seconds until `ping_due` or `overdue` may turn true."""
        since = self.heard_at if self.pinged_at is None else self.pinged_at
        return max(since + self.heartbeat - now, 0.0)

    def heard(self, message: Any) -> None:
        """Apply one message of the invalidation connection."""
        # A subscribed RESP2 connection answers PING with [b"pong", b""]; redis-py
        # hands it over as b"PONG". One PING is in flight at a time: this answers it.
        if message == b"PONG" or (isinstance(message, list) and message[:1] == [b"pong"]):
            if self.pinged_at is not None:
                self.heard_at, self.pinged_at = self.pinged_at, None
            return
        # redis-py hands the channel's messages over as [b"invalidate", keys];
        # the plain RESP2 shape is [b"message", channel, keys]. Anything else
        # (the subscription's confirmation) invalidates nothing.
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


def _handshake(prefix: str) -> Generator[tuple[Any, ...], Any, None]:
    """The commands that make a connection the invalidation listener, each sent its
    reply back: one piece for the sync and the asyncio shells to drive."""
    connection_id = yield ("CLIENT", "ID")
    yield ("CLIENT", "TRACKING", "ON", "REDIRECT", connection_id, "BCAST", "PREFIX", prefix)
    yield ("SUBSCRIBE", _CHANNEL)


# redis-py parses the channel's messages as invalidation pushes and drops them
# unless a handler is set: this one hands them back as the read's reply.
def _as_is(message: Any) -> Any:
    return message


async def _async_as_is(message: Any) -> Any:
    return message


def _new_connection(pool: Any, bound: float) -> Any:
    # The client's own connection class and settings: TLS, auth, Sentinel alike.
    # Not taken from the pool, so it never counts against (or returns to) it. A
    # stalled Redis still accepts TCP connections: the handshake gets the bound too.
    kwargs = dict(pool.connection_kwargs)
    for name in ("socket_timeout", "socket_connect_timeout"):
        kwargs[name] = min(kwargs.get(name) or bound, bound)
    return pool.connection_class(**kwargs)


class Invalidations:
    """The sync shell: drains the invalidation connection (and beats) before each read."""

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
            if connection is not None:
                try:
                    while connection.can_read(0):
                        self.cache.heard(connection.read_response(push_request=True))
                    self._beat(connection)
                except (redis_errors.RedisError, OSError):
                    self._lost()
                return
            if time.monotonic() < self._retry_at:
                return
            self._retry_at = math.inf  # this thread opens it
        # Outside the lock: meanwhile other threads' reads go to Redis (the cache is
        # not listening yet) rather than wait for the handshake.
        self._open()

    def _beat(self, connection: Any) -> None:
        now = time.monotonic()
        if self.cache.overdue(now):
            logger.debug("client cache: Redis did not answer PING within the heartbeat")
            self._lost()
        elif self.cache.ping_due(now):
            connection.send_command("PING", check_health=False)
            self.cache.pinged(now)

    def _open(self) -> None:
        since = time.monotonic()
        connection = _new_connection(self._pool, 2 * self.cache.heartbeat)
        try:
            connection.connect()
            connection._parser.set_invalidation_push_handler(_as_is)
            steps, reply = _handshake(self.cache.prefix), None
            with contextlib.suppress(StopIteration):
                while True:
                    connection.send_command(*steps.send(reply))
                    reply = connection.read_response(push_request=True)
        except (redis_errors.RedisError, OSError):
            with contextlib.suppress(Exception):
                connection.disconnect()
            with self._lock:
                self._retry_at = time.monotonic() + RETRY_SECONDS
            return
        with self._lock:
            self._connection = connection
            self.cache.start(since)

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
    """The asyncio shell: a listener task applies invalidations as they arrive, and beats."""

    def __init__(self, cache: ClientCache, client: Any) -> None:
        self.cache = cache
        self._pool = client.connection_pool
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None
        self._retry_at = 0.0

    def ready(self) -> bool:
        """Whether a read may be answered from memory now (no invalidation left unread)."""
        if self._listener() is None:
            if time.monotonic() >= self._retry_at:
                self._spawn()
            return False
        return self.cache.fresh(time.monotonic()) and not _unread(self._connection)

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
        task = self._listener() or self._spawn()
        assert self._subscribed is not None
        waiter = asyncio.ensure_future(self._subscribed.wait())
        await asyncio.wait((waiter, task), return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return self.cache.listening

    def _listener(self) -> asyncio.Task[None] | None:
        """The listener task, if there is one on this event loop."""
        task = self._task
        if task is not None and task.get_loop() is not asyncio.get_running_loop():
            # Its loop was closed under it (nothing cancelled it): it never runs again.
            # End it here rather than whenever it is collected, and quietly.
            self._task = self._connection = None
            self.cache.stop()
            task.get_coro().close()
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            return None
        return task

    def _spawn(self) -> asyncio.Task[None]:
        self._subscribed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._listen())
        return self._task

    async def _listen(self) -> None:
        cache = self.cache
        this = self._task
        assert this is not None
        since = time.monotonic()
        connection = self._connection = _new_connection(self._pool, 2 * cache.heartbeat)
        try:
            await connection.connect()
            connection._parser.set_invalidation_push_handler(_async_as_is)
            steps, reply = _handshake(cache.prefix), None
            with contextlib.suppress(StopIteration):
                while True:
                    await connection.send_command(*steps.send(reply))
                    reply = await connection.read_response(push_request=True)
            cache.start(since)
            assert self._subscribed is not None
            self._subscribed.set()
            while True:
                now = time.monotonic()
                if cache.overdue(now):
                    logger.debug("client cache: Redis did not answer PING within the heartbeat")
                    return
                if cache.ping_due(now):
                    await connection.send_command("PING")
                    cache.pinged(now)
                # None: the time ran out with nothing heard.
                message = await connection.read_response(
                    timeout=cache.next_beat(time.monotonic()), push_request=True
                )
                if message is not None:
                    cache.heard(message)
        except Exception:  # whatever broke it, the cache goes (below)
            logger.debug("client cache: the invalidation connection was lost", exc_info=True)
        finally:
            if self._task is this:  # not replaced (`_listener`)
                cache.stop()
                self._connection = None
                self._task = None
                self._retry_at = time.monotonic() + RETRY_SECONDS
            # Left by a closed loop (`_listener`), there is no loop to await anything in.
            if not this.get_loop().is_closed():
                with contextlib.suppress(Exception):
                    await connection.disconnect()

    async def aclose(self) -> None:
        task = self._listener()
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

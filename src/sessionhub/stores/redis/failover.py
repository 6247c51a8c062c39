"""Following a Sentinel failover: writes wait while it runs, and none reaches the old primary.

redis-py's Sentinel client asks the sentinels where the primary is only when it
opens a connection, so after a graceful failover (``SENTINEL FAILOVER``, or an
upgrade script) its pooled connections keep writing to the old primary. That
server stays a writable primary until Sentinel demotes it, about ten seconds
after the switch, and then throws away every write it took since the replica
was promoted: acknowledged commits and logouts are silently undone. Measured
on loopback (one replica; the sentinel that runs the failover publishes each
step on its pub/sub, the others only the switch)::

    0.002 s  +try-failover                     (writes must stop from here)
    0.19  s  the replica answers ROLE master   (+failover-state-wait-promotion)
    1.05  s  +promoted-slave
    1.13  s  +switch-master, from every sentinel within 5 ms
    11.2  s  the old primary is made a replica (+convert-to-slave)

With a second replica, the other sentinels announce the switch at 1.1 s but
the one running the failover only once it has moved that replica over (2.2 s),
and until then it still names the old primary to any client that asks it.

So each store on a Sentinel-managed client listens to every sentinel of the
deployment (`SentinelWatch`: one daemon thread per sentinel, plain sync
connections, so it serves asyncio stores too and outlives any event loop) and
keeps what they said in `FailoverState`, which decides (no I/O):

* writes (script calls, SET, DEL...; plain reads go on: nobody writes to the
  old primary meanwhile, so what it holds stays consistent) are held while any
  sentinel runs a failover of the service: from its first step to its
  ``+switch-master`` or ``-failover-abort-*``, and no longer than that
  sentinel's own ``failover-timeout`` after its last step;
* and while the sentinels name different primaries, as while the switch
  spreads, for at most `settle` seconds (a sentinel that stays behind longer is
  partitioned from the others: its answer is ignored);
* once they agree on a new primary the store drops every pooled connection
  (`ConnectionPool.disconnect()`) before its next call, so new connections,
  which ask the sentinels, go to it;
* a write held longer than the store's ``failover_wait`` fails with
  `FailoverTooLong`, which the store answers as ``StoreUnavailable`` (HTTP 503).

A sentinel whose connection is lost no longer counts (its subscription is
retried every second, and when it is back its state is asked again: what was
missed is not lost). Without any sentinel heard, writes are not held: the
store then behaves as redis-py does.

`check_primary` (and `acheck_primary`) is the other half: used as redis-py's
``redis_connect_func`` (`sessionhub.connect` sets it for Sentinel, and a store
adds it to a client built elsewhere that has none), a new connection proves,
before any command runs on it, that its server is a primary and that the
sentinels still name it: neither a sentinel behind the others nor an address
looked up just before the switch can send writes where they will be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.connection
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff

from .durable import WriteRefused

__all__ = [
    "FAILOVER_WAIT",
    "PATTERNS",
    "Abort",
    "AsyncFailoverGuard",
    "FailoverGuard",
    "FailoverState",
    "FailoverTooLong",
    "SentinelWatch",
    "Step",
    "Switch",
    "acheck_primary",
    "check_primary",
    "is_read",
    "is_write",
    "sentinel_event",
]

logger = logging.getLogger("sessionhub")

Address = tuple[str, int]

#: What each sentinel connection subscribes to (PSUBSCRIBE): every step of a
#: failover, its aborts, and the switch. "+failover-*" covers the
#: "+failover-state-*" steps and "+failover-end", after which the switch follows.
PATTERNS = (
    "+try-failover",
    "+elected-leader",
    "+failover-*",
    "+selected-slave",
    "+promoted-slave",
    "+slave-reconf-*",
    "-failover-abort-*",
    "+switch-master",
)
_STEPS = (
    "+try-failover",
    "+elected-leader",
    "+failover-",
    "+selected-slave",
    "+promoted-slave",
    "+slave-reconf-",
)
#: Commands that only read: never held (everything else is).
_READS = frozenset(
    {
        "GET",
        "MGET",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZCOUNT",
        "ZCARD",
        "XRANGE",
        "XREVRANGE",
        "XREAD",
        "PING",
    }
)

#: The longest a write waits for a failover to end, unless the store says otherwise.
#: Measured (docs/operating.md): writes are held about 1.1 s in a graceful
#: failover with one replica, 2.2 s with two, 1.2 s after a crash.
FAILOVER_WAIT = 3.0
#: How long a sentinel connection may stay silent before it is sent a PING, and
#: how long that PING may go unanswered before the connection counts as lost.
HEARTBEAT = 1.0
#: Seconds between attempts to subscribe to a sentinel that cannot be reached.
RETRY = 1.0
#: The longest a listener thread blocks on its socket (so `close` is prompt).
_TICK = 0.2
#: Bound on a sentinel connection's connect and socket timeouts.
_SOCKET_BOUND = 1.0
#: Sentinel's default failover-timeout, if a sentinel does not say its own.
_FAILOVER_TIMEOUT = 180.0


class FailoverTooLong(WriteRefused):
    """A write waited `failover_wait` seconds for a failover to end."""

    def __init__(self, wait: float) -> None:
        super().__init__(
            f"session store failing over: writes waited {wait:g} s for the new primary "
            "(failover_wait); try again"
        )


# -- The sentinels' messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """The sentinel that published it runs a failover of the service."""


@dataclass(frozen=True, slots=True)
class Abort:
    """That sentinel's failover attempt ended without a switch."""


@dataclass(frozen=True, slots=True)
class Switch:
    """That sentinel now names `primary` as the service's primary."""

    primary: Address


Event = Step | Abort | Switch


def sentinel_event(channel: str, data: str, service: str) -> Event | None:
    """What one pub/sub message of a sentinel says about `service` (None: nothing)."""
    words = data.split()
    if channel == "+switch-master":
        # <service> <old ip> <old port> <new ip> <new port>
        if len(words) == 5 and words[0] == service and words[4].isdigit():
            return Switch((words[3], int(words[4])))
        return None
    if _service_of(words) != service:
        return None
    if channel.startswith("-failover-abort"):
        return Abort()
    if channel.startswith(_STEPS):
        return Step()
    return None


def _service_of(words: list[str]) -> str | None:
    # "<type> <name> <ip> <port>", then, unless the instance is the primary
    # itself, "@ <service> <primary ip> <primary port>".
    if "@" in words:
        at = words.index("@")
        return words[at + 1] if at + 1 < len(words) else None
    if len(words) >= 2 and words[0] == "master":
        return words[1]
    return None


def is_read(args: tuple[Any, ...]) -> bool:
    """Whether a command (not a script) only reads, so it is never held."""
    name = args[0]
    text = name.decode() if isinstance(name, bytes) else str(name)
    return text.upper() in _READS


def is_write(call: Any) -> bool:
    """Whether a store's call (a script's, or a command's) may write."""
    return call.script is not None or not is_read(call.args)


# -- The state: what the sentinels said, and what it means for writes --------------------


@dataclass(slots=True)
class _Heard:
    """What one sentinel, whose subscription is up, has said."""

    names: Address | None
    #: When its running failover last made a step (None: it runs none).
    stepped: float | None
    failover_timeout: float

    def failing_over(self, now: float) -> bool:
        return self.stepped is not None and now - self.stepped < self.failover_timeout


class FailoverState:
    """Whether writes must wait, from what the sentinels said (no I/O; thread-safe).

    `primary` is the primary the sentinels last agreed on; `switches` counts
    the times it was settled anew (the first time included), each of which the
    store answers by dropping its pooled connections. `settle` is the store's
    failover_wait.
    """

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.primary: Address | None = None
        self.switches = 0
        self._heard: dict[str, _Heard] = {}
        self._announced: Address | None = None  # the newest primary a +switch-master named
        self._split_since: float | None = None  # since when the sentinels disagree
        self._watchers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    # -- what the listeners report --------------------------------------------------------

    def subscribed(
        self,
        sentinel: str,
        names: Address | None,
        failing_over: bool,
        failover_timeout: float,
        now: float,
    ) -> None:
        """`sentinel` is listened to again; its answer to SENTINEL MASTER."""
        with self._lock:
            self._heard[sentinel] = _Heard(names, now if failing_over else None, failover_timeout)
            self._changed(now)
        self._wake()

    def lost(self, sentinel: str, now: float) -> None:
        """`sentinel` can no longer be heard: what it said no longer counts."""
        with self._lock:
            if self._heard.pop(sentinel, None) is None:
                return
            self._changed(now)
        self._wake()

    def heard(self, sentinel: str, event: Event, now: float) -> None:
        with self._lock:
            heard = self._heard.get(sentinel)
            if heard is None:
                return  # not subscribed yet: its state is asked right after
            match event:
                case Step():
                    heard.stepped = now
                case Abort():
                    heard.stepped = None
                case Switch(primary):
                    heard.names, heard.stepped = primary, None
                    self._announced = primary
            self._changed(now)
        self._wake()

    def reset(self) -> None:
        """Forget every sentinel (a forked process listens afresh)."""
        with self._lock:
            self._heard.clear()
            self._split_since = None

    # -- what the stores ask --------------------------------------------------------------

    def holding(self, now: float) -> bool:
        """Whether writes must wait now (and, once the sentinels agree, settle on their primary)."""
        with self._lock:
            heard = list(self._heard.values())
            if any(h.failing_over(now) for h in heard):
                return True
            named = [h.names for h in heard if h.names is not None]
            if not named:
                return False
            if len(set(named)) > 1:
                assert self._split_since is not None
                if now - self._split_since < self.settle:
                    return True
                # Still split after `settle`: the stragglers are cut off from the others.
                chosen = (
                    self._announced
                    if self._announced in named
                    else Counter(named).most_common(1)[0][0]
                )
            else:
                chosen = named[0]
            if chosen != self.primary:
                # The first agreement counts too: connections opened before the
                # watch heard anything may go to a primary the sentinels left.
                self.switches += 1
                self.primary = chosen
            return False

    def pause(self, write: bool, deadline: float, now: float) -> float | None:
        """None: go on. Else how long to wait for news before asking again.

        Raises `FailoverTooLong` for a write still held at `deadline`.
        """
        if not self.holding(now) or not write:
            return None
        if now >= deadline:
            raise FailoverTooLong(self.settle)
        wake = self._wake_at(now)
        until = deadline if wake is None else min(deadline, wake)
        return max(until - now, 0.001)

    def _wake_at(self, now: float) -> float | None:
        """When the hold may end by time alone (a failover timing out, a split settled)."""
        with self._lock:
            times = [
                h.stepped + h.failover_timeout
                for h in self._heard.values()
                if h.stepped is not None
            ]
            if self._split_since is not None:
                times.append(self._split_since + self.settle)
        return min(times) if times else None

    @contextlib.contextmanager
    def watching(self, wake: Callable[[], None]) -> Iterator[None]:
        """Call `wake` (from a listener thread) whenever what the sentinels said changes."""
        with self._lock:
            self._watchers.append(wake)
        try:
            yield
        finally:
            with self._lock:
                self._watchers.remove(wake)

    def _changed(self, now: float) -> None:
        names = {h.names for h in self._heard.values() if h.names is not None}
        if len(names) > 1:
            if self._split_since is None:
                self._split_since = now
        else:
            self._split_since = None

    def _wake(self) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for wake in watchers:
            wake()


# -- Listening to the sentinels -------------------------------------------------------------


def _address(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def _sync_class(connection_class: type[Any]) -> type[redis.Connection]:
    """The sync connection class matching a sentinel client's (sync or asyncio)."""
    if issubclass(connection_class, redis.SSLConnection | redis.asyncio.connection.SSLConnection):
        return redis.SSLConnection
    if issubclass(
        connection_class,
        redis.UnixDomainSocketConnection | redis.asyncio.connection.UnixDomainSocketConnection,
    ):
        return redis.UnixDomainSocketConnection  # type: ignore[return-value]
    return redis.Connection


def _parameters(connection_class: type[Any]) -> set[str]:
    names: set[str] = set()
    for klass in connection_class.__mro__:
        init = vars(klass).get("__init__")
        if init is not None:
            names |= set(inspect.signature(init).parameters)
    return names


# Set here, or meaningless for a separate sync connection (the asyncio client's own objects).
_NOT_COPIED = frozenset(
    {"self", "kwargs", "retry", "redis_connect_func", "connection_pool", "event_dispatcher"}
)


def _listening_client(sentinel: Any) -> redis.Redis:
    """A sync client of its own for one sentinel, with its settings (TLS, credentials).

    The watch never shares the user's sentinel clients: their pools may be
    asyncio ones, bound to an event loop, and a subscription holds its
    connection for good.
    """
    pool = sentinel.connection_pool
    connection_class = _sync_class(pool.connection_class)
    accepted = _parameters(connection_class) - _NOT_COPIED
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in accepted}
    for name in ("socket_timeout", "socket_connect_timeout"):
        kwargs[name] = min(kwargs.get(name) or _SOCKET_BOUND, _SOCKET_BOUND)
    kwargs["retry"] = redis.retry.Retry(NoBackoff(), 0)  # the listener retries by itself
    kwargs["decode_responses"] = False
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs)
    )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class SentinelWatch:
    """One daemon thread per sentinel feeds `state` with what it publishes.

    Started with the store, and again by a call in a forked child (whose threads
    are gone); stopped by `close`, or when nothing refers to its guard any more.
    """

    def __init__(self, service: str, sentinels: list[Any], state: FailoverState) -> None:
        self.service = service
        self.state = state
        self._sentinels = [(_address(sentinel), sentinel) for sentinel in sentinels]
        self._pid: int | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid() or self._stop.is_set():
                return
            self.state.reset()
            self._threads = [
                threading.Thread(
                    target=self._listen,
                    args=(name, sentinel),
                    name=f"sessionhub-sentinel-watch-{name}",
                    daemon=True,
                )
                for name, sentinel in self._sentinels
            ]
            for thread in self._threads:
                thread.start()
            self._pid = os.getpid()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(2 * _TICK + _SOCKET_BOUND)

    def _listen(self, name: str, sentinel: Any) -> None:
        while not self._stop.is_set():
            client = _listening_client(sentinel)
            try:
                self._subscribe_and_follow(name, client)
            except (redis_errors.RedisError, OSError):
                logger.debug("sentinel watch: lost %s", name, exc_info=True)
            except Exception:  # an answer not as expected: listen again, and say so
                logger.warning("sentinel watch: %s answered unexpectedly", name, exc_info=True)
            finally:
                self.state.lost(name, time.monotonic())
                with contextlib.suppress(Exception):
                    client.close()
            self._stop.wait(RETRY)

    def _subscribe_and_follow(self, name: str, client: redis.Redis) -> None:
        with client.pubsub() as pubsub:  # type: ignore[no-untyped-call]
            pubsub.psubscribe(*PATTERNS)
            # Subscribed before asking: whatever happens after the answer is heard.
            confirmed = 0
            while confirmed < len(PATTERNS):
                message = pubsub.get_message(timeout=_SOCKET_BOUND)
                if message is None:
                    raise redis_errors.TimeoutError("no PSUBSCRIBE confirmation")
                confirmed += message["type"] == "psubscribe"
            master: Any = client.sentinel_master(self.service)
            self.state.subscribed(
                name,
                (str(master["ip"]), int(master["port"])),
                "failover_in_progress" in str(master.get("flags", "")).split(","),
                float(master.get("failover-timeout") or _FAILOVER_TIMEOUT * 1000) / 1000,
                time.monotonic(),
            )
            heard_at, pinged_at = time.monotonic(), None
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=_TICK)
                now = time.monotonic()
                if message is not None:
                    heard_at, pinged_at = now, None
                    if message["type"] == "pmessage":
                        event = sentinel_event(
                            _text(message["channel"]), _text(message["data"]), self.service
                        )
                        if event is not None:
                            self.state.heard(name, event, now)
                elif pinged_at is not None and now - pinged_at >= HEARTBEAT:
                    raise redis_errors.TimeoutError(f"sentinel {name} stopped answering PING")
                elif pinged_at is None and now - heard_at >= HEARTBEAT:
                    pubsub.ping()
                    pinged_at = now


# -- Checking a new connection --------------------------------------------------------------


def _role(reply: Any) -> str:
    """The role in a HELLO reply (RESP2: a flat list; RESP3: a map)."""
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if not isinstance(reply, dict):
        return "unknown"
    role = reply.get(b"role", reply.get("role"))
    return _text(role) if role is not None else "unknown"


def _not_primary(connection: Any, role: str) -> redis_errors.ConnectionError:
    return redis_errors.ConnectionError(
        f"{connection.host}:{connection.port} answers as {role}, not as the primary: "
        "the sentinels have not caught up with a failover yet"
    )


def _moved_on(connection: Any, named: Any) -> redis_errors.ConnectionError | None:
    if tuple(named) == (connection.host, connection.port):
        return None
    return redis_errors.ConnectionError(
        f"{connection.host}:{connection.port} stopped being the primary while this "
        "connection was opened: the sentinels now name another"
    )


def _sentinel_pool(connection: Any) -> Any:
    """The Sentinel pool a connection was made for (redis-py's Sentinel connections), if any."""
    pool = getattr(connection, "connection_pool", None)
    return pool if hasattr(pool, "get_master_address") else None


# HELLO, not ROLE: any user may send HELLO, while ROLE is an @admin command that
# restricted ACL users (and managed services) refuse. Without arguments HELLO keeps
# the connection's protocol and says the server's role (Redis 6.2+).
#
# Then the sentinels are asked again: a connection whose address was looked up just
# before a switch, and that was still opening when the store dropped the pool (there
# was nothing to close yet), would otherwise reach the old primary, which still
# answers as one until Sentinel demotes it, and keep writing there.
def check_primary(connection: Any) -> None:
    """redis-py's ``redis_connect_func``: set the connection up, then refuse a non-primary.

    A ConnectionError here makes redis-py ask the sentinels again (within the
    client's retry budget).
    """
    connection.on_connect()
    connection.send_command("HELLO")
    role = _role(connection.read_response())
    if role != "master":
        raise _not_primary(connection, role)
    pool = _sentinel_pool(connection)
    if pool is not None and (error := _moved_on(connection, pool.get_master_address())):
        raise error


async def acheck_primary(connection: Any) -> None:
    """The asyncio twin of `check_primary`."""
    await connection.on_connect()
    await connection.send_command("HELLO")
    role = _role(await connection.read_response())
    if role != "master":
        raise _not_primary(connection, role)
    pool = _sentinel_pool(connection)
    if pool is not None and (error := _moved_on(connection, await pool.get_master_address())):
        raise error


# -- The stores' side ------------------------------------------------------------------------


class _Guard:
    """What the sync and asyncio guards share: the state, the watch, the bound."""

    #: The connection check for the client's kind (sync or asyncio).
    check: Callable[[Any], Any]

    def __init__(self, client: Any, wait: float) -> None:
        if not wait >= 0:
            raise ValueError("failover_wait is a number of seconds, 0 or more")
        pool = client.connection_pool
        # A client built elsewhere (redis-py's own master_for) gets the check of
        # new connections too, unless it has a connect function of its own.
        pool.connection_kwargs.setdefault("redis_connect_func", type(self).check)
        self.wait = wait
        self.state = FailoverState(settle=wait)
        self.watch = SentinelWatch(pool.service_name, pool.sentinel_manager.sentinels, self.state)
        self._pool = pool
        self._dropped = 0
        # The threads refer to the watch, not to the guard: a store dropped without
        # close() still stops them.
        self._finalizer = weakref.finalize(self, self.watch.close)
        self._finalizer.atexit = False  # daemon threads: nothing to wait for at exit
        # Listening from now on, not from the first call: a failover started meanwhile
        # is heard from its first step.
        self.watch.start()

    def close(self) -> None:
        self._finalizer()


# No call may go out on a pooled connection until the drop that follows a switch is
# done: the old primary would still take (and later lose) its write. So the count
# of drops done moves on only once the drop is over, and a call meanwhile waits.


class FailoverGuard(_Guard):
    """The sync store's guard: `before` each call."""

    check = staticmethod(check_primary)

    def __init__(self, client: Any, wait: float) -> None:
        super().__init__(client, wait)
        self._lock = threading.Lock()

    def before(self, write: bool) -> bool:
        """Hold a write while a failover runs, drop the pool after a switch: True if the
        primary changed (not at the first agreement, when the store starts)."""
        self.watch.start()
        deadline = time.monotonic() + self.wait
        if self.state.pause(write, deadline, time.monotonic()) is not None:
            woken = threading.Event()
            with self.state.watching(woken.set):
                while (pause := self.state.pause(write, deadline, time.monotonic())) is not None:
                    woken.wait(pause)
                    woken.clear()
        if self.state.switches == self._dropped:
            return False
        with self._lock:
            switches = self.state.switches
            if switches == self._dropped:
                return False  # another thread dropped it while this one waited
            # In-use connections too: a read under way on the old primary is retried.
            self._pool.disconnect()
            self._dropped = switches
        return switches > 1


class AsyncFailoverGuard(_Guard):
    """The asyncio store's guard: `before` each call, in whichever event loop makes it."""

    check = staticmethod(acheck_primary)

    def __init__(self, client: Any, wait: float) -> None:
        super().__init__(client, wait)
        self._dropping: asyncio.Future[None] | None = None

    async def before(self, write: bool) -> bool:
        self.watch.start()
        deadline = time.monotonic() + self.wait
        loop = asyncio.get_running_loop()
        if self.state.pause(write, deadline, time.monotonic()) is not None:
            woken = asyncio.Event()

            def wake() -> None:
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(woken.set)

            with self.state.watching(wake):
                while (pause := self.state.pause(write, deadline, time.monotonic())) is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), pause)
                    woken.clear()
        switches = self.state.switches
        if switches == self._dropped:
            return False
        dropping = self._dropping
        if dropping is not None and dropping.get_loop() is loop:
            await asyncio.shield(dropping)  # another task drops the pool: wait for it
            return False
        self._dropping = done = loop.create_future()
        try:
            await self._pool.disconnect()
        except Exception:  # a connection of a closed event loop; the others are closed
            logger.debug("sentinel watch: dropping the pool", exc_info=True)
        finally:
            self._dropped = switches
            self._dropping = None
            done.set_result(None)
        return switches > 1

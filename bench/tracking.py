"""Server-assisted client-side caching (CLIENT TRACKING): the bound and the gain.

First on bare connections (what tracking itself allows), with two connections
standing for two app instances:

* **staleness**: instance A has read (and so tracks) a session key;
  instance B deletes it (a logout). How long after B's DEL has returned does
  A's connection hold the invalidation? Until then, a cache on A would still
  serve the ended session. A polls its socket without blocking, as a cache
  must before it answers from memory.
* **cost of a cached read**: that non-blocking poll plus a dict lookup, next
  to one real GET on the same connection.

Then through sessionhub's own cache (`RedisStore(client, cache=True)`), two
stores standing for two instances: instance B has read a session (it is in
B's cache); instance A ends it (a `Delete`, as a logout does). **Store
staleness**: B reads in a loop; how long after A's `Delete` has returned the
last read that still served the session returned (0 when none did). And a
cached `Read` next to an uncached one through the same store (sync redis-py).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import redis

from sessionhub import RedisStore
from sessionhub.record import Meta, Record
from sessionhub.stores.base import Create, Delete, Read

__all__ = ["evaluate", "store_staleness"]


def _tracked_connection(port: int, invalidated: list[int]) -> Any:
    connection: Any = redis.Connection(port=port, protocol=3)  # type: ignore[no-untyped-call]
    connection.connect()
    connection.send_command("CLIENT", "TRACKING", "ON")
    connection.read_response()

    def on_invalidation(message: Any) -> None:
        invalidated.append(time.perf_counter_ns())

    connection._parser.set_invalidation_push_handler(on_invalidation)
    return connection


def evaluate(port: int, trials: int = 500) -> dict[str, float]:
    invalidated: list[int] = []
    reader = _tracked_connection(port, invalidated)
    writer = redis.Redis(port=port)
    staleness, cached, fetched = [], [], []
    cache: dict[bytes, Any] = {}
    clock = time.perf_counter_ns
    for number in range(trials):
        key = f"bench:tracked:{number}".encode()
        writer.set(key, b"record")
        start = clock()
        reader.send_command("GET", key)
        cache[key] = reader.read_response()
        fetched.append(clock() - start)
        start = clock()
        if not reader.can_read(0):
            _ = cache.get(key)
        cached.append(clock() - start)
        invalidated.clear()
        writer.delete(key)  # instance B logs the user out
        deleted = clock()
        deadline = deleted + 1_000_000_000
        while not invalidated and clock() < deadline:
            if reader.can_read(0):
                reader.read_response(push_request=True)
        if not invalidated:
            raise RuntimeError("no invalidation within a second")
        staleness.append(invalidated[0] - deleted)
    reader.disconnect()
    writer.close()
    return {
        **_spread("staleness", staleness),
        "cached_read_us": statistics.median(cached) / 1000,
        "round_trip_us": statistics.median(fetched) / 1000,
        **store_staleness(port, trials),
    }


def _spread(name: str, samples_ns: list[int]) -> dict[str, float]:
    """Median, p99 and worst of `samples_ns`, in µs, as `<name>_median_us` and so on."""
    ordered = sorted(samples_ns)
    return {
        f"{name}_median_us": statistics.median(ordered) / 1000,
        f"{name}_p99_us": ordered[int(len(ordered) * 0.99)] / 1000,
        f"{name}_max_us": ordered[-1] / 1000,
    }


def store_staleness(port: int, trials: int = 500) -> dict[str, float]:
    """Instance A's logout against instance B's cached reads, through `RedisStore`."""
    a = RedisStore(redis.Redis(port=port), namespace="bench-cache")
    b = RedisStore(redis.Redis(port=port), namespace="bench-cache", cache=True)
    clock = time.perf_counter_ns
    now = int(time.time() * 1000)
    record = Record(Meta(now, now, 3_600_000, now + 3_600_000, 1), {b"user_id": b"12345"})
    staleness, cached, fetched = [], [], []
    try:
        for number in range(trials):
            handle = "A" + f"{number:022d}"
            a.execute(Create(handle, record))
            read = Read(handle, now, 0.1)
            start = clock()
            b.execute(read)  # a GET: B caches the session
            fetched.append(clock() - start)
            start = clock()
            served = b.execute(read)  # from B's cache
            cached.append(clock() - start)
            if served is None:
                raise RuntimeError("the cached read found nothing")
            a.execute(Delete(handle, now))  # instance A logs the user out
            deleted = clock()
            # The window: until the last read that still served the session returned.
            served_until = deleted
            while b.execute(read) is not None:
                served_until = clock()
                if served_until - deleted > 1_000_000_000:
                    raise RuntimeError("instance B served an ended session for a second")
            staleness.append(served_until - deleted)
    finally:
        b.close()
        a.client.close()
        b.client.close()
    return {
        **_spread("store_staleness", staleness),
        "store_cached_read_us": statistics.median(cached) / 1000,
        "store_read_us": statistics.median(fetched) / 1000,
    }

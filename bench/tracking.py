"""Server-assisted client-side caching (RESP3 CLIENT TRACKING): what it would buy.

An evaluation, not a sessionhub feature. Two measurements on the benchmark's
Redis, with two connections standing for two app instances:

* **staleness**: instance A has read (and so tracks) a session key;
  instance B deletes it (a logout). How long after B's DEL has returned does
  A's connection hold the invalidation? Until then, a cache on A would still
  serve the ended session. A polls its socket without blocking, as a cache
  must before it answers from memory.
* **cost of a cached read**: that non-blocking poll plus a dict lookup, next
  to one real GET on the same connection.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import redis

__all__ = ["evaluate"]


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
    staleness.sort()
    return {
        "staleness_median_us": statistics.median(staleness) / 1000,
        "staleness_p99_us": staleness[int(len(staleness) * 0.99)] / 1000,
        "staleness_max_us": staleness[-1] / 1000,
        "cached_read_us": statistics.median(cached) / 1000,
        "round_trip_us": statistics.median(fetched) / 1000,
    }

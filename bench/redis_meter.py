"""What Redis says each request cost: commands and bytes.

Commands are read with MONITOR, which tells the commands a client sent from
those a Lua script ran (INFO commandstats counts both). Bytes are the deltas of
Redis's network byte counters (in + out) over a batch run without MONITOR;
the meter's own INFO reads, measured by reading the counters twice in a row,
are subtracted.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis

__all__ = ["Meter", "Usage"]


@dataclass(frozen=True)
class Usage:
    """Per request, over a batch."""

    commands: float
    bytes: float
    names: dict[str, float]  # command name -> calls per request
    server_us: float  # Redis's own time running those commands (scripts included)

    def label(self) -> str:
        if not self.names:
            return "0"
        parts = [f"{n:g}×{name}" if n != 1 else name for name, n in sorted(self.names.items())]
        return " + ".join(parts)


_END = "bench-monitor-end"


class Meter:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        # Its own connection, opened now: a connection opened during a batch
        # would show its set-up commands (HELLO, CLIENT SETINFO) in the counts.
        self._signal = redis.Redis(
            connection_pool=client.connection_pool, single_connection_client=True
        )
        self._signal.ping()

    def _bytes(self) -> int:
        stats = self.client.info("stats")
        return int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])

    def _usec(self) -> Counter[str]:
        commands = self.client.info("commandstats")
        return Counter(
            {key.removeprefix("cmdstat_"): int(v["usec"]) for key, v in commands.items()}
        )

    async def usage(self, batch: Callable[[int], Awaitable[object]], requests: int) -> Usage:
        """What `batch(requests)` cost Redis, per request."""
        calls = await self._commands(batch, requests)
        usec = self._usec()
        before = self._bytes()
        own = self._bytes() - before
        await batch(requests)
        spent = max(0, self._bytes() - before - 2 * own)
        # Redis time of the commands the clients sent; a script's time holds
        # that of the commands it ran, which are therefore not added again.
        usec = self._usec() - usec
        server = sum(usec[name] for name in calls) / requests
        # hundredths: a connection set-up spread over a batch is noise
        names = {name: round(n / requests, 2) for name, n in calls.items()}
        names = {name: n for name, n in names.items() if n >= 0.01}
        return Usage(sum(names.values()), spent / requests, names, server)

    async def _commands(
        self, batch: Callable[[int], Awaitable[object]], requests: int
    ) -> Counter[str]:
        calls: Counter[str] = Counter()
        ready = threading.Event()

        def watch() -> None:
            with self.client.monitor() as monitor:  # type: ignore[no-untyped-call]
                ready.set()
                while True:
                    line = monitor.connection.read_response()
                    if isinstance(line, bytes):
                        line = line.decode("utf-8", "replace")
                    # '<time> [<db> <client>] "<command>" "<arg>"...'
                    client, _, command = line.partition(" [")[2].partition("] ")
                    name = command.split(" ", 1)[0].strip('"').lower()
                    if _END in command:
                        return
                    if not client.endswith(" lua") and name not in ("info", "echo"):
                        calls[name] += 1

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        ready.wait(5)
        await batch(requests)
        self._signal.echo(_END)
        thread.join(10)
        return calls

    def memory_per_session(self) -> tuple[int, int]:
        """(bytes, keys) of everything stored: call on a Redis holding one session."""
        keys = list(self.client.scan_iter(count=1000))
        return sum(int(self.client.memory_usage(key, samples=0) or 0) for key in keys), len(keys)

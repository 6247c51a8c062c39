"""The in-process measurements: latency, Redis usage, concurrent writes, memory.

Latency samples are taken in rounds: each round runs every contender of a
family, then that family's raw Redis round trip, one batch per request kind.
The contenders so share whatever the (busy, 2-core) machine does meanwhile,
and the ratios the targets are about compare numbers taken side by side.
The first round only warms up.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
import redis.asyncio

from bench import scenario
from bench.contenders import Contender
from bench.drivers import Driver, Reply, cookie_value
from bench.redis_meter import Meter, Usage

__all__ = ["Results", "Suite"]

FLOOR_KEY = "bench:floor"
#: What a bare app gets where a session app gets its session cookie.
_DUMMY_ID = "A" * 44


Step = Callable[[], Awaitable[Any]]


def sync_step(call: Callable[[], Any]) -> Step:
    """A synchronous call as a step of `alternate`."""

    async def step() -> Any:
        return call()

    return step


async def alternate(
    steps: dict[str, Step], rounds: int, count: int
) -> dict[str, tuple[list[int], list[int]]]:
    """Each step `count` times a round, the steps in turn, for `rounds` rounds
    after one of warm-up; the wall times and the CPU times of every call."""
    times: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in steps}
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for number in range(rounds + 1):
        for name, step in steps.items():
            wall, cpu = times[name]
            for _ in range(count):
                start, cpu_start = clock(), cpu_clock()
                await step()
                if number:
                    cpu.append(cpu_clock() - cpu_start)
                    wall.append(clock() - start)
    return times


def median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


def p99_us(samples: list[int]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000


@dataclass
class Results:
    samples: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (name, kind)
    cpu: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # same, CPU time
    usage: dict[tuple[str, str], Usage] = field(default_factory=dict)
    floors: dict[str, list[int]] = field(default_factory=dict)  # family -> round trips
    floors_cpu: dict[str, list[int]] = field(default_factory=dict)
    survivors: dict[str, int] = field(default_factory=dict)
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (bytes, keys)

    def median(self, name: str, kind: str) -> float:
        return median_us(self.samples[(name, kind)])

    def p99(self, name: str, kind: str) -> float:
        return p99_us(self.samples[(name, kind)])

    def floor(self, family: str) -> float:
        return median_us(self.floors[family])


class _Runner:
    """One contender's app with its cookies, callable the same way sync or async."""

    def __init__(self, contender: Contender, driver: Driver) -> None:
        self.contender = contender
        self.driver = driver
        self.cookies: dict[str, str | None] = {}

    async def call(self, path: str, cookie: str | None) -> Reply:
        request = self.driver.prepare(path, cookie)
        if self.driver.is_async:
            reply: Reply = await self.driver.call(request)  # type: ignore[misc]
        else:
            reply = self.driver.call(request)  # type: ignore[assignment]
        if reply.status != 200:
            raise RuntimeError(f"{self.contender.name} {path}: HTTP {reply.status}")
        return reply

    async def new_session(self) -> str:
        """A cookie header naming a new session that holds the payload."""
        if self.contender.bare:
            return f"{self.contender.cookie}={_DUMMY_ID}"
        reply = await self.call("/new", None)
        value = cookie_value(reply, self.contender.cookie)
        if not value:
            raise RuntimeError(f"{self.contender.name}: /new set no session cookie")
        return f"{self.contender.cookie}={value}"

    async def batch(self, kind: str, count: int) -> list[Reply]:
        cookie = self.cookies[kind]
        path = f"/{kind}"
        return [await self.call(path, cookie) for _ in range(count)]


class Suite:
    def __init__(self, contenders: list[Contender], redis_url: str, port: int) -> None:
        self.contenders = contenders
        self.redis_url = redis_url
        self.admin = redis.Redis(port=port)
        self.meter = Meter(self.admin)
        self.results = Results()
        self.runners: list[_Runner] = []

    async def start(self) -> None:
        for contender in self.contenders:
            driver = contender.build(self.redis_url)
            if driver.is_async:
                await driver.start()  # type: ignore[union-attr]
            self.runners.append(_Runner(contender, driver))

    async def stop(self) -> None:
        for runner in self.runners:
            if runner.driver.is_async:
                await runner.driver.stop()  # type: ignore[union-attr]

    # -- Redis bytes per session --------------------------------------------------

    async def memory(self) -> None:
        """Store the payload through each library alone in Redis; measure it."""
        for runner in self.runners:
            if runner.contender.bare:
                continue
            self.admin.flushall()
            await runner.new_session()
            self.results.memory[runner.contender.name] = self.meter.memory_per_session()
        self.admin.flushall()

    # -- latency -----------------------------------------------------------------

    async def prepare_cookies(self) -> None:
        for runner in self.runners:
            runner.cookies = {
                "anon": None,
                "new": None,
                "read": await runner.new_session(),
                "write": await runner.new_session(),
            }

    async def latency(self, rounds: int, per_batch: int, log: Callable[[str], None]) -> None:
        self.admin.set(FLOOR_KEY, b"x" * 16)
        sync_client = redis.Redis.from_url(self.redis_url)
        async_client = redis.asyncio.Redis.from_url(self.redis_url)
        families = sorted({c.family for c in self.contenders})
        # The benchmark holds every app at once: keep that heap out of the
        # collector's full passes, whose pauses would land on whoever runs then.
        gc.collect()
        gc.freeze()
        for number in range(rounds + 1):
            warmup = number == 0
            count = max(20, per_batch // 4) if warmup else per_batch
            for family in families:
                runners = [r for r in self.runners if r.contender.family == family]
                # rotate the order so that no contender always runs right after the GC of another
                shift = number % len(runners)
                for runner in runners[shift:] + runners[:shift]:
                    for kind in scenario.KINDS:
                        replies = await runner.batch(kind, count)
                        if not warmup:
                            key = (runner.contender.name, kind)
                            self.results.samples.setdefault(key, []).extend(
                                r.elapsed_ns for r in replies
                            )
                            self.results.cpu.setdefault(key, []).extend(r.cpu_ns for r in replies)
                wall, cpu = await _floor_batch(family, sync_client, async_client, count)
                if not warmup:
                    self.results.floors.setdefault(family, []).extend(wall)
                    self.results.floors_cpu.setdefault(family, []).extend(cpu)
            log(f"latency round {number}/{rounds} done")
        sync_client.close()
        await async_client.aclose()

    # -- Redis commands and bytes per request ---------------------------------------

    async def usage(self, requests: int) -> None:
        for runner in self.runners:
            for kind in scenario.KINDS:
                await runner.batch(kind, 3)  # connections are open, scripts are cached
                usage = await self.meter.usage(partial(runner.batch, kind), requests)
                self.results.usage[(runner.contender.name, kind)] = usage

    # -- concurrent writes to one session --------------------------------------------

    async def concurrent_writes(self) -> None:
        for runner in self.runners:
            if runner.contender.bare:
                continue
            cookie = await runner.new_session()
            paths = [
                f"/set/{scenario.CONCURRENT_PREFIX}{i}" for i in range(scenario.CONCURRENT_WRITES)
            ]
            if runner.driver.is_async:
                await asyncio.gather(*(runner.call(path, cookie) for path in paths))
            else:
                _in_threads(runner, paths, cookie)
            reply = await runner.call("/count", cookie)
            self.results.survivors[runner.contender.name] = int(reply.body)


def _in_threads(runner: _Runner, paths: list[str], cookie: str) -> None:
    """Each request in its own thread, released together (a threaded WSGI server)."""
    barrier = threading.Barrier(len(paths))
    errors: list[BaseException] = []

    def one(path: str) -> None:
        request = runner.driver.prepare(path, cookie)
        barrier.wait()
        try:
            reply: Any = runner.driver.call(request)
            if reply.status != 200:
                raise RuntimeError(f"HTTP {reply.status}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{runner.contender.name}: concurrent write failed") from errors[0]


async def _floor_batch(
    family: str, sync_client: redis.Redis, async_client: redis.asyncio.Redis, count: int
) -> tuple[list[int], list[int]]:
    """One raw GET through redis-py, of the client kind the family's libraries use.

    Returns the wall times and the CPU times, as the drivers measure them.
    """
    wall, cpu = [], []
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for _ in range(count):
        start, cpu_start = clock(), cpu_clock()
        if family.startswith("sync"):
            sync_client.get(FLOOR_KEY)
        else:
            await async_client.get(FLOOR_KEY)
        cpu.append(cpu_clock() - cpu_start)
        wall.append(clock() - start)
    return wall, cpu

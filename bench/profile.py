"""Where a sessionhub request's time goes: `python -m bench.profile [kind]`.

Two views of the same in-process request (default: a read):

* a ladder of medians taken in alternation -- the bare framework, one raw
  GET through the same client, the manager alone (load, and commit for a
  write) with no framework, and the whole request -- so the steps between
  them are the costs of the framework, the round trip, sessionhub's store and
  lifecycle, and the web layer. Each step is timed twice: wall time, and the
  CPU time of this thread (what the Python side spends, syscalls included;
  it leaves out the wait for Redis and for a busy machine's scheduler, so it
  is the steadier number on a shared machine);
* cProfile of many whole requests, own time summed by area (sessionhub,
  redis-py, the framework, asyncio, socket calls), then the top functions.
  A deterministic profiler inflates call-heavy Python; read its shares, not
  its absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
from collections import Counter
from typing import Any

import redis
import redis.asyncio
from tests.servers import RedisServer

from bench import scenario
from bench.apps.sessionhub_web import settings as sessionhub_settings
from bench.contenders import CONTENDERS, Contender, bare_of
from bench.measure import FLOOR_KEY, Step, Suite, alternate, median_us, sync_step

_AREAS = [
    ("/sessionhub/", "sessionhub"),
    ("/redis/", "redis-py"),
    ("/hiredis", "redis-py"),
    ("/starlette/", "framework"),
    ("/flask/", "framework"),
    ("/werkzeug/", "framework"),
    ("/asyncio/", "asyncio"),
    ("_socket", "socket calls"),
    ("select", "socket calls"),
    ("/bench/", "bench driver"),
]


def _area(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    return next((area for marker, area in _AREAS if marker in where), "other")


async def _ladder(
    steps: dict[str, Step], rounds: int, count: int
) -> dict[str, tuple[float, float]]:
    """Median wall time and median CPU time of this thread, per step."""
    times = await alternate(steps, rounds, count)
    return {name: (median_us(wall), median_us(cpu)) for name, (wall, cpu) in times.items()}


async def _manager_step(ours: Contender, server: RedisServer, kind: str, cookie: str) -> Step:
    """The lifecycle and store alone: what the web layer calls, without the web
    (a manager built from the app's settings, so with the same Redis client)."""
    session_id = cookie.split("=", 1)[1]
    settings = sessionhub_settings(server.url)
    if ours.family.startswith("sync"):
        manager = settings.session_manager()

        def run() -> None:
            session = manager.load(session_id)
            getattr(scenario, kind)(session)
            manager.commit(session)

        return sync_step(run)
    async_manager = settings.async_session_manager()

    async def arun() -> None:
        session = await async_manager.load(session_id)
        getattr(scenario, kind)(session)
        await async_manager.commit(session)

    return arun


BARE, FLOOR, MANAGER, WHOLE = (
    "the bare framework",
    "one raw GET, same client",
    "manager alone (load + commit)",
    "the whole request",
)


async def _steps(suite: Suite, server: RedisServer, kind: str) -> dict[str, Step]:
    bare_runner, our_runner = suite.runners
    cookie = our_runner.cookies[kind]
    suite.admin.set(FLOOR_KEY, b"x" * 16)
    if our_runner.contender.family.startswith("sync"):
        client = redis.Redis(port=server.port)
        floor: Step = sync_step(lambda: client.get(FLOOR_KEY))
    else:
        async_client = redis.asyncio.Redis(port=server.port)

        async def floor() -> Any:
            return await async_client.get(FLOOR_KEY)

    steps: dict[str, Step] = {
        BARE: lambda: bare_runner.call(f"/{kind}", bare_runner.cookies[kind]),
        FLOOR: floor,
    }
    if cookie is not None:
        steps[MANAGER] = await _manager_step(our_runner.contender, server, kind, cookie)
    steps[WHOLE] = lambda: our_runner.call(f"/{kind}", cookie)
    return steps


async def ladder(
    server: RedisServer, ours: Contender, kind: str, rounds: int = 16, count: int = 150
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) µs of each step, for one sessionhub contender and request kind."""
    suite = Suite([bare_of(ours), ours], server.url, server.port)
    await suite.start()
    try:
        await suite.prepare_cookies()
        return await _ladder(await _steps(suite, server, kind), rounds, count)
    finally:
        await suite.stop()


async def profile(kind: str, family: str, requests: int) -> None:
    ours = next(c for c in CONTENDERS if c.is_sessionhub and c.family.startswith(family))
    server = RedisServer().start()
    try:
        print(f"\n{ours.name} {kind}, in alternation: median µs of wall time and of CPU")
        for name, (wall, cpu) in (await ladder(server, ours, kind)).items():
            print(f"  {wall:8.1f}  {cpu:8.1f}  {name}")
        suite = Suite([bare_of(ours), ours], server.url, server.port)
        await suite.start()
        await suite.prepare_cookies()
        profiler = cProfile.Profile()
        profiler.enable()
        await suite.runners[1].batch(kind, requests)
        profiler.disable()
        await suite.stop()
        stats = pstats.Stats(profiler)
        table: Any = stats.stats  # type: ignore[attr-defined]
        by_area: Counter[str] = Counter()
        for (filename, _, name), (_, _, own, _, _) in table.items():
            by_area[_area(filename, name)] += own
        total = sum(by_area.values())
        print(f"\ncProfile, {requests} whole requests: share of own time by area")
        for area, own in by_area.most_common():
            print(f"  {100 * own / total:5.1f} %  {area}")
        print()
        stats.sort_stats("tottime").print_stats(15)
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("kind", nargs="?", default="read", choices=scenario.KINDS)
    parser.add_argument("--family", default="async", choices=["async", "sync"])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(profile(args.kind, args.family, args.requests))


if __name__ == "__main__":
    main()

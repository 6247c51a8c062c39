"""Run the whole benchmark and write the report: `python -m bench` (see run.sh).

Phases, in order: Redis bytes per session; per-request latency (in rounds,
with the raw round trips); Redis commands and bytes per request; 50
concurrent writes; the client floors; the invalidation delay of client-side
caching; cost at 1 k / 100 k / 1 M live sessions; end-to-end throughput
under wrk. Raw results go to .bench/results.json, the
report into docs/benchmarks.md (between its result markers) and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from tests.servers import RedisServer

from bench import e2e, floor, profile, scale, scenario, tracking
from bench.contenders import CONTENDERS
from bench.measure import FLOOR_KEY, Suite, median_us, p99_us

T = TypeVar("T")
#: the sessionhub contenders profiled and timed at scale (one per client kind)
PROFILED = ("sessionhub · Starlette", "sessionhub · Flask")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".bench" / "results.json"
PACKAGES = [
    "sessionhub", "redis", "hiredis", "starlette", "starsessions", "litestar", "aiohttp",
    "aiohttp-session", "flask", "flask-session", "django", "uvicorn", "coredis", "uvloop",
]  # fmt: skip


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
        "load_before": os.getloadavg(),
    }


async def _in_process(server: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    suite = Suite(CONTENDERS, server.url, server.port)
    await suite.start()
    try:
        _log("Redis bytes per session")
        await suite.memory()
        await suite.prepare_cookies()
        _log(f"latency: {args.rounds} rounds of {args.batch} requests per contender and kind")
        await suite.latency(args.rounds, args.batch, _log)
        _log("Redis commands and bytes per request")
        await suite.usage(args.usage_requests)
        _log("50 concurrent writes")
        await suite.concurrent_writes()
    finally:
        await suite.stop()
    results = suite.results
    return {
        "latency": _by_name(
            results.samples,
            lambda s: {"median": median_us(s), "p99": p99_us(s), "n": len(s)},
        ),
        "cpu": _by_name(results.cpu, median_us),
        "usage": _by_name(
            results.usage,
            lambda u: {
                "commands": u.commands,
                "bytes": u.bytes,
                "label": u.label(),
                "server_us": u.server_us,
            },
        ),
        "floors": {
            family: {
                "median": median_us(s),
                "p99": p99_us(s),
                "cpu": median_us(results.floors_cpu[family]),
            }
            for family, s in results.floors.items()
        },
        "survivors": results.survivors,
        "memory": results.memory,
    }


def _by_name(by_pair: dict[tuple[str, str], T], summary: Callable[[T], Any]) -> dict[str, Any]:
    """{(name, kind): x} as {name: {kind: summary(x)}}."""
    nested: dict[str, dict[str, Any]] = {}
    for (name, kind), value in by_pair.items():
        nested.setdefault(name, {})[kind] = summary(value)
    return nested


async def _at_scale(server: RedisServer, args: argparse.Namespace) -> list[dict[str, Any]]:
    contenders = [c for c in CONTENDERS if c.name in PROFILED]
    suite = Suite(contenders, server.url, server.port)
    await suite.start()
    rows = []
    try:
        suite.admin.flushall()
        await suite.prepare_cookies()
        key = next(iter(suite.admin.scan_iter(match="sh:s:*")))
        record = suite.admin.get(key)
        assert isinstance(record, bytes)
        for live in args.scale:
            have = scale.fill(suite.admin, live, record)
            _log(f"scale: {have:,} live sessions")
            suite.results = type(suite.results)()
            await suite.latency(args.scale_rounds, args.batch, lambda _: None)
            memory = suite.admin.info("memory")
            rows.append(
                {
                    "live": have,
                    "used_memory": int(memory["used_memory"]),
                    "latency": _by_name(suite.results.samples, median_us),
                    "floors": {f: median_us(s) for f, s in suite.results.floors.items()},
                }
            )
    finally:
        await suite.stop()
    suite.admin.flushall()
    return rows


async def _ladders(server: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    """The cost ladder of bench.profile, for sessionhub on Starlette and on Flask."""
    found: dict[str, Any] = {}
    for name in PROFILED:
        ours = next(c for c in CONTENDERS if c.name == name)
        for kind in ("read", "write"):
            steps = await profile.ladder(server, ours, kind, args.ladder_rounds, 100)
            found[f"{name} {kind}"] = {step: list(times) for step, times in steps.items()}
    return found


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run to check the harness")
    parser.add_argument("--no-docs", action="store_true", help="only write .bench/results.json")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the docs from .bench/results.json"
    )
    args = parser.parse_args()
    quick = args.quick
    # many short batches: each contender's samples spread over the whole run
    args.rounds = 2 if quick else 40
    args.batch = 100
    args.usage_requests = 50 if quick else 200
    args.scale = [1_000, 20_000] if quick else [1_000, 100_000, 1_000_000]
    args.scale_rounds = 1 if quick else 6
    args.e2e_seconds = 2 if quick else 8
    args.e2e_warmup = 1 if quick else 2
    args.floor_rounds = 2 if quick else 6
    args.ladder_rounds = 2 if quick else 10
    return args


def main() -> None:
    args = _parse()
    from bench import report

    if args.report_only:
        report.write(json.loads(RESULTS.read_text()), ROOT / "docs")
        return
    # Litestar configures logging at import; keep sessionhub's INFO lines out of the timings.
    logging.getLogger("sessionhub").setLevel(logging.WARNING)
    started = time.monotonic()
    data: dict[str, Any] = {"machine": _machine(), "quick": args.quick}
    data["machine"]["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    server = RedisServer("--maxmemory-policy", "noeviction").start()
    try:
        data["machine"]["redis"] = server.client().info("server")["redis_version"]
        data.update(asyncio.run(_in_process(server, args)))
        _log("client floors")
        server.client().set(FLOOR_KEY, b"x" * 16)
        data["clients"] = floor.client_floors(server.port, args.floor_rounds)
        _log("client-side caching: invalidation delay")
        data["tracking"] = tracking.evaluate(server.port, 100 if args.quick else 1000)
        _log("where sessionhub's time goes")
        data["ladder"] = asyncio.run(_ladders(server, args))
        data["scale"] = asyncio.run(_at_scale(server, args))
        if e2e.available():
            _log("end-to-end throughput (uvicorn + wrk)")
            runs = e2e.run(server.url, args.e2e_seconds, args.e2e_warmup)
            data["e2e"] = [asdict(run) for run in runs]
        else:
            _log("wrk not found: end-to-end throughput skipped")
            data["e2e"] = []
    finally:
        server.cleanup()
    data["machine"]["load_after"] = os.getloadavg()
    data["machine"]["seconds"] = round(time.monotonic() - started)
    data["payload"] = scenario.PAYLOAD
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1))
    _log(f"results in {RESULTS.relative_to(ROOT)} ({data['machine']['seconds']} s)")
    if not args.no_docs:
        report.write(data, ROOT / "docs")
        _log("report written to docs/benchmarks.md and docs/benchmarks.png")


if __name__ == "__main__":
    main()

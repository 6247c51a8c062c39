"""A bounded soak run: a real server under mixed traffic, its memory and Redis's keys watched.

A uvicorn process serves tests/soak_app.py (Starlette, the ASGI middleware,
Redis, the expiry worker) against a redis-server of its own. This process is
the load: virtual users, each a browser with its own cookie jar, and
anonymous visitors, at a fixed overall request rate:

=========  ======  ==============================================================
action     weight  what is checked
=========  ======  ==============================================================
anon         15    an anonymous GET that does not touch the session: no cookie
anon-read    10    an anonymous look at the (empty) session: no cookie
read         35    the user's counter and principal are what the user last saw
write        20    the counter goes up by one
login         8    the principal is bound, the id changed, the data kept (but
                   for a login as another user: a clean session)
logout        6    the cookie is cleared
leave         6    no request: the user drops the cookie (the session is
                   abandoned and must expire after the idle timeout)
=========  ======  ==============================================================

Every `sample` seconds it records the app process's resident memory and
Redis's keys. After the warm-up, three things must hold: no error at all,
the key count within what the live sessions explain (`SoakReport.key_bound`),
and the memory flat (growth under a bound).

    python -m bench.soak --minutes 10     # the full run; --help for the knobs

tests/test_soak.py runs it for under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio

from sessionhub.stores.base import FORWARD_WINDOW
from tests.servers import RedisServer
from tests.web_apps import AppServer, server_env

__all__ = ["SoakConfig", "SoakReport", "main", "run_soak"]

ACTIONS = ["anon", "anon-read", "read", "write", "login", "logout", "leave"]
WEIGHTS = [15, 10, 35, 20, 8, 6, 6]
#: Keys that do not grow with sessions: 64 expiry schedules, 64 event streams, 1 lease.
FIXED_KEYS = 64 + 64 + 1
#: How long Redis may take to reclaim a key after its TTL, and the share of
#: expired keys its active expiry cycle may leave for later.
RECLAIM_SECONDS = 2.0
RECLAIM_SHARE = 0.1


@dataclass(frozen=True)
class SoakConfig:
    seconds: float
    warmup: float  # seconds before the checks start; longer than `idle`
    users: int = 32  # virtual users, each holding at most one session
    rate: float = 300.0  # requests per second, all users together
    idle: float = 10.0  # the sessions' idle timeout
    principals: int = 200  # how many distinct users log in
    sample: float = 5.0  # seconds between samples
    stream_length: int = 500  # events kept per event stream (64 streams)
    seed: int = 1

    def __post_init__(self) -> None:
        if self.warmup <= self.idle:
            raise ValueError("the warm-up must last longer than the idle timeout")
        if self.seconds <= self.warmup + 2 * self.sample:
            raise ValueError("the run must last a few samples longer than the warm-up")


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load started
    rss: int  # the app process's resident memory, bytes
    keys: int  # every key in Redis
    session_keys: int
    user_keys: int
    redis_memory: int  # INFO used_memory
    stream_entries: int  # events held by the 64 event streams (capped: `stream_length` each)
    held: int  # sessions the virtual users hold now
    abandoned: int  # sessions left in the last idle + RECLAIM_SECONDS seconds
    logins: int  # in the last FORWARD_WINDOW + RECLAIM_SECONDS: each may leave a forward
    requests: int  # so far
    errors: int  # so far


@dataclass
class SoakReport:
    config: SoakConfig
    samples: list[Sample] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    leaves: int = 0  # times a user dropped its cookie
    errors: list[str] = field(default_factory=list)  # the first few
    error_count: int = 0

    def key_bound(self, sample: Sample) -> int:
        """The most keys the live sessions explain.

        Live sessions S: those the users hold, plus those they abandoned within
        the idle timeout (an abandoned session is gone `idle` seconds later).
        Each may have its user's index key (at most one per principal); each
        recent login may have left a forward at the old id (for a minute); the
        rest is fixed. Redis reclaims expired keys a little late: 10% + 10 more.
        """
        live = sample.held + sample.abandoned
        explained = live + min(self.config.principals, live) + sample.logins + FIXED_KEYS
        return int(explained * (1 + RECLAIM_SHARE)) + 10

    def steady(self) -> list[Sample]:
        return [s for s in self.samples if s.at >= self.config.warmup]

    def summary(self) -> dict[str, Any]:
        steady = self.steady()
        first, last = steady[0], steady[-1]
        return {
            "seconds": round(self.samples[-1].at, 1),
            "requests": sum(self.requests.values()),
            "requests_by_action": dict(sorted(self.requests.items())),
            "requests_per_second": round(sum(self.requests.values()) / self.samples[-1].at, 1),
            "sessions_abandoned": self.leaves,
            "errors": self.error_count,
            "rss_start_mb": round(first.rss / 2**20, 1),
            "rss_end_mb": round(last.rss / 2**20, 1),
            "rss_max_mb": round(max(s.rss for s in steady) / 2**20, 1),
            "keys_start": first.keys,
            "keys_end": last.keys,
            "keys_max": max(s.keys for s in steady),
            "session_keys_start": first.session_keys,
            "session_keys_end": last.session_keys,
            "key_bound_min": min(self.key_bound(s) for s in steady),
            "redis_memory_start_mb": round(first.redis_memory / 2**20, 1),
            "redis_memory_end_mb": round(last.redis_memory / 2**20, 1),
            "stream_entries_start": first.stream_entries,
            "stream_entries_end": last.stream_entries,
        }

    def problems(self, rss_growth_mb: float) -> list[str]:
        """What went wrong, in words; empty when the run passed."""
        found = []
        if self.error_count:
            found.append(f"{self.error_count} errors, e.g. {self.errors[:3]}")
        steady = self.steady()
        for sample in steady:
            if sample.keys > self.key_bound(sample):
                bound = self.key_bound(sample)
                found.append(f"{sample.keys} keys at {sample.at:.0f} s, more than {bound}")
        growth = _rss_growth(steady)
        if growth > rss_growth_mb * 2**20:
            found.append(f"the app's memory grew by {growth / 2**20:.1f} MB after the warm-up")
        return found


def _rss_growth(steady: list[Sample]) -> float:
    """Median of the last three samples' memory minus that of the first three."""
    head = statistics.median(s.rss for s in steady[:3])
    tail = statistics.median(s.rss for s in steady[-3:])
    return tail - head


# -- the load ---------------------------------------------------------------------------


class Pace:
    """Hands out request slots at `rate` per second, shared by every user."""

    def __init__(self, rate: float) -> None:
        self.gap = 1 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        if not self.gap:
            return
        now = time.monotonic()
        slot = max(now, self.next)
        self.next = slot + self.gap
        await asyncio.sleep(slot - now)


class Load:
    """The virtual users and what they saw; checks every answer."""

    def __init__(self, url: str, config: SoakConfig, report: SoakReport) -> None:
        self.url = url
        self.config = config
        self.report = report
        self.rng = random.Random(config.seed)
        self.pace = Pace(config.rate)
        self.held: set[int] = set()
        self.abandoned: list[float] = []  # when each session was left, ascending
        self.logins: list[float] = []  # when each login was sent, ascending
        self.started = time.monotonic()
        self.stopping = False

    def recently_abandoned(self, now: float) -> int:
        since = now - self.config.idle - RECLAIM_SECONDS
        return len(self.abandoned) - bisect.bisect_left(self.abandoned, since)

    def recent_logins(self, now: float) -> int:
        since = now - FORWARD_WINDOW / 1000 - RECLAIM_SECONDS
        return len(self.logins) - bisect.bisect_left(self.logins, since)

    def fail(self, message: str) -> None:
        self.report.error_count += 1
        if len(self.report.errors) < 20:
            self.report.errors.append(message)

    def client(self) -> httpx.AsyncClient:
        # Idle connections are dropped well before uvicorn's own 5 s keep-alive
        # timeout: a request sent as the server closes the connection would fail.
        limits = httpx.Limits(keepalive_expiry=2.0)
        return httpx.AsyncClient(base_url=self.url, timeout=10, limits=limits)

    async def run(self, until: float) -> None:
        async with self.client() as anonymous:
            # Every virtual user's anonymous visits go through this one client: its jar
            # keeps nothing, or a cookie wrongly set on one would go out with the others.
            anonymous.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            users = [self.user(number, anonymous, until) for number in range(self.config.users)]
            await asyncio.gather(*users)

    async def user(self, number: int, anonymous: httpx.AsyncClient, until: float) -> None:
        state = UserState()
        async with self.client() as browser:
            while time.monotonic() < until:
                action = self.rng.choices(ACTIONS, WEIGHTS)[0]
                if action == "leave":
                    self.report.leaves += 1
                else:
                    await self.pace.wait()
                    self.report.requests[action] += 1
                try:
                    await self.act(action, browser, anonymous, state)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.fail(f"{action}: {type(exc).__name__}: {exc}")
                if browser.cookies.get("session"):
                    self.held.add(number)
                else:
                    self.held.discard(number)

    async def act(
        self,
        action: str,
        browser: httpx.AsyncClient,
        anonymous: httpx.AsyncClient,
        state: UserState,
    ) -> None:
        if action in ("anon", "anon-read"):
            reply = await anonymous.get("/anon" if action == "anon" else "/read")
            expected: Any = "anon" if action == "anon" else {"cart": 0, "user": None}
            got = reply.text if action == "anon" else reply.json()
            self.expect(action, reply, got, expected)
            if reply.headers.get("set-cookie"):
                self.fail(f"{action}: a cookie for an anonymous request")
        elif action == "read":
            reply = await browser.get("/read")
            self.expect(action, reply, reply.json(), state.seen())
        elif action == "write":
            reply = await browser.post("/write")
            state.cart += 1
            self.expect(action, reply, reply.json(), state.seen())
        elif action == "login":
            before = browser.cookies.get("session")
            user = f"user-{self.rng.randrange(self.config.principals)}"
            self.logins.append(time.monotonic() - self.started)
            reply = await browser.post("/login", params={"user": user})
            if state.user not in (None, user):
                state.reset()  # another user's session is not inherited
            state.user = user
            self.expect(action, reply, reply.json(), state.seen())
            if browser.cookies.get("session") in (None, before):
                self.fail("login: the id did not change")
        elif action == "logout":
            reply = await browser.post("/logout")
            self.expect(action, reply, reply.text, "out")
            if browser.cookies.get("session"):
                self.fail("logout: the cookie was not cleared")
            state.reset()
        elif browser.cookies.get("session"):  # leave
            self.abandoned.append(time.monotonic() - self.started)
            browser.cookies.clear()
            state.reset()

    def expect(self, action: str, reply: httpx.Response, got: Any, expected: Any) -> None:
        if reply.status_code != 200:
            self.fail(f"{action}: status {reply.status_code}: {reply.text[:200]}")
        elif got != expected:
            self.fail(f"{action}: got {got!r}, expected {expected!r}")


@dataclass
class UserState:
    """What one user's session should hold."""

    cart: int = 0
    user: str | None = None

    def seen(self) -> dict[str, Any]:
        return {"cart": self.cart, "user": self.user}

    def reset(self) -> None:
        self.cart, self.user = 0, None


# -- the measurements -------------------------------------------------------------------


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def count_keys(client: redis.asyncio.Redis) -> tuple[Counter[str], int]:
    """Keys by kind (the part of the name after the namespace: "s", "u", "x", "e",
    "lease"), and the entries of the event streams."""
    kinds: Counter[str] = Counter()
    entries = 0
    async for key in client.scan_iter(count=1000):
        kind = key.split(b":")[1].decode()
        kinds[kind] += 1
        if kind == "e":
            entries += await client.xlen(key)
    return kinds, entries


async def sample(load: Load, client: redis.asyncio.Redis, pid: int, report: SoakReport) -> Sample:
    at = time.monotonic() - load.started
    kinds, entries = await count_keys(client)
    memory = await client.info("memory")
    return Sample(
        at=round(at, 1),
        rss=rss_of(pid),
        keys=sum(kinds.values()),
        session_keys=kinds["s"],
        user_keys=kinds["u"],
        redis_memory=int(memory["used_memory"]),
        stream_entries=entries,
        held=len(load.held),
        abandoned=load.recently_abandoned(at),
        logins=load.recent_logins(at),
        requests=sum(report.requests.values()),
        errors=report.error_count,
    )


# -- the run ----------------------------------------------------------------------------


Progress = Callable[[Sample], None]


def run_soak(config: SoakConfig, progress: Progress | None = None) -> SoakReport:
    """Start Redis and the app, load them for `config.seconds`, stop them; the report."""
    report = SoakReport(config)
    redis_server = RedisServer().start()
    log = Path(tempfile.mkdtemp(prefix="sessionhub-soak-")) / "uvicorn.log"
    env = server_env(
        store="redis",
        redis__url=redis_server.url,
        timeouts__idle=str(config.idle),
        timeouts__absolute=str(24 * 3600),
    )
    env["SOAK_STREAM_LENGTH"] = str(config.stream_length)
    server = AppServer.uvicorn("tests.soak_app:create_app", env, log)
    try:
        server.wait_ready()
        asyncio.run(_drive(server, redis_server, config, report, progress))
        if server.process.poll() is not None:
            report.error_count += 1
            report.errors.append(f"the app server died: {log.read_text()[-2000:]}")
        errors_logged = [line for line in log.read_text().splitlines() if "ERROR" in line]
        for line in errors_logged:
            report.error_count += 1
            report.errors.append(f"app server log: {line}")
    finally:
        server.stop()
        redis_server.cleanup()
    return report


async def _drive(
    server: AppServer,
    redis_server: RedisServer,
    config: SoakConfig,
    report: SoakReport,
    progress: Progress | None,
) -> None:
    load = Load(server.url, config, report)
    until = load.started + config.seconds
    client = redis.asyncio.Redis(port=redis_server.port)
    users = asyncio.create_task(load.run(until))
    try:
        while (remaining := until - time.monotonic()) > 0 and not users.done():
            await asyncio.wait([users], timeout=min(config.sample, remaining))
            if users.done() or time.monotonic() >= until:
                break
            taken = await sample(load, client, server.process.pid, report)
            report.samples.append(taken)
            if progress is not None:
                progress(taken)
        await users
        last = await sample(load, client, server.process.pid, report)
        report.samples.append(last)
        if progress is not None:
            progress(last)
    finally:
        await client.aclose()


# -- the command line ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--idle", type=float, default=10.0, help="idle timeout, seconds")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--stream-length", type=int, default=500, help="events per stream")
    parser.add_argument("--rss-growth-mb", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    config = SoakConfig(
        seconds=args.minutes * 60,
        warmup=args.warmup,
        users=args.users,
        rate=args.rate,
        idle=args.idle,
        sample=args.sample,
        stream_length=args.stream_length,
    )

    def show(s: Sample) -> None:
        print(
            f"{s.at:7.1f} s  {s.requests:8d} requests  {s.errors} errors  "
            f"rss {s.rss / 2**20:6.1f} MB  keys {s.keys:5d} (sessions {s.session_keys}, "
            f"users {s.user_keys}; bound {report_bound(s)})  redis {s.redis_memory / 2**20:.1f} MB "
            f"({s.stream_entries} events)",
            flush=True,
        )

    report_bound = SoakReport(config).key_bound
    report = run_soak(config, show)
    summary = report.summary()
    problems = report.problems(args.rss_growth_mb)
    print(json.dumps(summary, indent=2))
    if args.json:
        document = {
            "config": asdict(config),
            "summary": summary,
            "samples": [asdict(s) for s in report.samples],
            "errors": report.errors,
            "problems": problems,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0

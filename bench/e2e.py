"""End-to-end throughput: a real uvicorn (one worker) under wrk, on loopback.

Each configuration gets a fresh server process; a few seconds of warm-up
load, then `duration` seconds measured. wrk, uvicorn and redis-server share
the machine's cores, as they would on a small host.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port

__all__ = ["CONFIGS", "Throughput", "run"]

#: (contender, path, sends a session cookie)
CONFIGS = [
    ("Starlette (bare)", "/read", False),
    ("sessionhub · Starlette", "/anon", False),
    ("sessionhub · Starlette", "/read", True),
    ("sessionhub · Starlette", "/write", True),
    ("starsessions · Starlette", "/read", True),
    ("starsessions · Starlette", "/write", True),
]
CONNECTIONS = 16


@dataclass(frozen=True)
class Throughput:
    contender: str
    path: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _wait_up(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/anon")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("uvicorn did not start")


def _session_cookie(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/new")
    response = connection.getresponse()
    response.read()
    header = response.getheader("set-cookie")
    if not header:
        raise RuntimeError("/new set no cookie")
    return header.split(";", 1)[0]


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _wrk(url: str, cookie: str | None, seconds: int) -> tuple[float, float, float, int]:
    args = [shutil.which("wrk") or "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if cookie:
        args += ["-H", f"Cookie: {cookie}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    broken = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(bad.group(1)) if bad else 0
    return rate, p50, p99, failed + (sum(map(int, broken.groups())) if broken else 0)


def available() -> bool:
    return shutil.which("wrk") is not None


def run(redis_url: str, seconds: int, warmup: int) -> list[Throughput]:
    results = []
    root = Path(__file__).resolve().parent.parent
    for contender, path, with_cookie in CONFIGS:
        port = free_port()
        env = dict(os.environ, BENCH_APP=contender, BENCH_REDIS_URL=redis_url)
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.e2e_app:app", "--port", str(port),
             "--workers", "1", "--log-level", "warning", "--no-access-log"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _wait_up(port)
            cookie = _session_cookie(port) if with_cookie else None
            url = f"http://127.0.0.1:{port}{path}"
            _wrk(url, cookie, warmup)
            rate, p50, p99, errors = _wrk(url, cookie, seconds)
            results.append(Throughput(contender, path, rate, p50, p99, errors))
        finally:
            server.terminate()
            server.wait(10)
    return results

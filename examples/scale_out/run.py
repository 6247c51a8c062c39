"""In-app sessions against distributed sessions, side by side.

    .venv/bin/python examples/scale_out/run.py

Runs app.py as two instances behind a round-robin load balancer, twice: with
the memory store (each instance has its own sessions: the user is signed out
and the count starts over whenever the balancer switches instance), then with
Redis (one store for every instance: nothing is lost). A scripted user signs
in and visits the page ten times. Exits non-zero if either run does not show
what it should.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx

from sessionhub.demo.instances import Instance, behind_balancer
from sessionhub.demo.redis import RedisProcess

HERE = Path(__file__).resolve().parent
VISITS = 10


def instances(store: str, redis_url: str) -> list[Instance]:
    command = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(HERE)]
    command += ["--port", "{port}", "--log-level", "warning"]
    env = {
        "SESSIONHUB_STORE": store,
        "SESSIONHUB_REDIS__URL": redis_url,
        "SESSIONHUB_NAMESPACE": "example",
    }
    return [Instance(name, command, env={**env, "INSTANCE": name}) for name in "AB"]


async def one_user(store: str, redis_url: str) -> list[dict[str, Any]]:
    """What a user sees: signing in, then VISITS page views, through the balancer."""
    async with (
        behind_balancer(instances(store, redis_url)) as cluster,
        httpx.AsyncClient(base_url=cluster.url, timeout=30) as client,
    ):
        signed_in = (await client.post("/login", json={"user": "alice"})).json()
        print(f"  signed in as alice on instance {signed_in['instance']}")
        return [(await client.get("/")).json() for _ in range(VISITS)]


def report(store: str, views: list[dict[str, Any]]) -> int:
    """Print the views; the number of times the session was lost."""
    lost = 0
    for number, view in enumerate(views, 1):
        fine = view["user"] == "alice" and view["visits"] == number
        lost += not fine
        note = "" if fine else "   <- session lost: signed out, count started over"
        user = view["user"] or "(nobody)"
        seen = f"instance {view['instance']}, user {user:8} visits {view['visits']:2}"
        print(f"  visit {number:2}: {seen}{note}")
    print(f"  {store} store: the session was lost {lost} times in {len(views)} visits\n")
    return lost


async def main() -> int:
    with RedisProcess() as redis:
        print("1. memory store: each instance keeps its own sessions")
        lost_in_memory = report("memory", await one_user("memory", redis.url))
        print("2. redis store: every instance shares one store")
        lost_in_redis = report("redis", await one_user("redis", redis.url))
    if lost_in_memory == 0 or lost_in_redis != 0:
        print("unexpected: the memory store should lose sessions and Redis none")
        return 1
    print("In-app sessions break as soon as there are two instances; Redis fixes it.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""A rolling restart under load: every instance replaced, nobody signed out.

    .venv/bin/python examples/rolling_restart/run.py

Runs the app of examples/scale_out as three instances behind a round-robin
load balancer, with Redis. Five scripted users sign in and keep visiting;
meanwhile the instances are restarted one by one, as a deploy does (each is
taken out of the rotation, stopped, started again and put back). Every visit
must answer, signed in, with the visit count one higher than the last: no
session lost, no login prompt. Exits non-zero otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sessionhub.demo.instances import Cluster, Instance, behind_balancer
from sessionhub.demo.redis import RedisProcess

APP = Path(__file__).resolve().parent.parent / "scale_out"
USERS = ["alice", "bob", "carol", "dave", "erin"]


@dataclass
class Tally:
    visits: int = 0
    failures: list[str] = field(default_factory=list)
    served_by: set[tuple[str, int]] = field(default_factory=set)  # (instance, pid)


def instances(redis_url: str) -> list[Instance]:
    command = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(APP)]
    command += ["--port", "{port}", "--log-level", "warning"]
    env = {
        "SESSIONHUB_STORE": "redis",
        "SESSIONHUB_REDIS__URL": redis_url,
        "SESSIONHUB_NAMESPACE": "example",
    }
    return [Instance(name, command, env={**env, "INSTANCE": name}) for name in "ABC"]


async def user(name: str, cluster: Cluster, deploying: asyncio.Event, tally: Tally) -> None:
    """Sign in, then visit until the deploy is over; note anything that goes wrong."""
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
        await client.post("/login", json={"user": name})
        expected = 1
        while deploying.is_set() or expected == 1:
            try:
                response = await client.get("/")
            except httpx.HTTPError as exc:
                tally.failures.append(f"{name}: {type(exc).__name__}")
                continue
            if response.status_code != 200:
                tally.failures.append(f"{name}: HTTP {response.status_code}")
                continue
            view = response.json()
            tally.visits += 1
            tally.served_by.add((view["instance"], view["pid"]))
            if view["user"] != name:
                tally.failures.append(f"{name}: signed out on {view['instance']}")
            elif view["visits"] != expected:
                tally.failures.append(f"{name}: visit {view['visits']}, expected {expected}")
            expected = view["visits"] + 1


async def deploy(cluster: Cluster, deploying: asyncio.Event) -> None:
    await asyncio.sleep(0.5)  # the users are busy by now
    for instance in cluster.instances:
        before = instance.pid
        await cluster.restart(instance.name)
        print(f"  restarted {instance.name}: pid {before} -> {instance.pid}")
        await asyncio.sleep(0.3)
    deploying.clear()


async def main() -> int:
    tally = Tally()
    with RedisProcess() as redis:
        async with behind_balancer(instances(redis.url)) as cluster:
            print(f"3 instances behind a balancer, {len(USERS)} users visiting; rolling restart:")
            deploying = asyncio.Event()
            deploying.set()
            await asyncio.gather(
                deploy(cluster, deploying),
                *(user(name, cluster, deploying, tally) for name in USERS),
            )
    processes = len(tally.served_by)
    print(f"{tally.visits} visits by {len(USERS)} users, served by {processes} processes")
    if tally.failures or processes < 6:
        print("unexpected:", *tally.failures[:20], sep="\n  ")
        return 1
    print("No visit failed, nobody was signed out, no visit was lost.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

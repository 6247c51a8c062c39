"""A gateway and an orders service sharing one login, through propagation.

    .venv/bin/python examples/microservices/run.py

Starts Redis, the orders service (Flask, under gunicorn) and the gateway
(FastAPI, under uvicorn). A scripted user signs in at the gateway and places
two orders through it; the gateway passes the session on to the orders
service, which sees the same user and the same session. Exits non-zero if it
does not.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from sessionhub.demo.instances import Instance, running
from sessionhub.demo.redis import RedisProcess

HERE = Path(__file__).resolve().parent


def services(redis_url: str) -> tuple[Instance, Instance]:
    env = {
        "SESSIONHUB_STORE": "redis",
        "SESSIONHUB_REDIS__URL": redis_url,
        "SESSIONHUB_NAMESPACE": "example",
    }
    orders = Instance(
        "orders",
        [sys.executable, "-m", "gunicorn", "--chdir", str(HERE), "-b", "127.0.0.1:{port}",
         "--log-level", "warning", "orders:app"],
        env=env,
    )  # fmt: skip
    gateway = Instance(
        "gateway",
        [sys.executable, "-m", "uvicorn", "gateway:app", "--app-dir", str(HERE),
         "--port", "{port}", "--log-level", "warning"],
        env={**env, "ORDERS_URL": orders.url},
    )  # fmt: skip
    return gateway, orders


def show(step: str, response: httpx.Response) -> Any:
    body = response.json()
    print(f"{step}\n  -> {response.status_code} {json.dumps(body)}")
    return body


async def main() -> int:
    with RedisProcess() as redis:
        gateway, orders = services(redis.url)
        async with (
            running([orders, gateway]),
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as user,
            httpx.AsyncClient(base_url=orders.url, timeout=30) as stranger,
        ):
            refused = show("GET /orders at the gateway, not signed in", await user.get("/orders"))
            signing_in = await user.post("/login", json={"user": "alice"})
            show("POST /login at the gateway as alice", signing_in)
            for item in ("coffee", "bagel"):
                placed = await user.post("/orders", json={"item": item})
                show(
                    f"POST /orders {item!r} at the gateway, which calls the orders service", placed
                )
            both = show("GET /orders at the gateway", await user.get("/orders"))
            direct = show(
                "GET /orders at the orders service, no header", await stranger.get("/orders")
            )
    gateway_view, orders_view = both["gateway"], both["orders service"]
    same = (
        "detail" in refused
        and gateway_view["user"] == orders_view["user"] == "alice"
        and gateway_view["handle"] == orders_view["handle"]
        and gateway_view["orders"] == orders_view["orders"] == ["coffee", "bagel"]
        and "error" in direct
    )
    if not same:
        print("unexpected: the two services should see one user and one session")
        return 1
    print("\nBoth services see alice in one session; the orders service never got a cookie.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

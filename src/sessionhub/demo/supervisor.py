"""`sessionhub demo`: Redis, app instances and a load balancer, started and stopped together.

Everything runs on loopback. The supervisor (this process) serves the load
balancer itself and owns every other process; it stops them all -- balancer,
instances, then Redis -- on Ctrl-C or SIGTERM, or when starting fails half way.
`POST /_demo/restart` (the page's restart buttons) restarts one instance the
way a rolling deploy does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from .instances import Cluster, Instance, behind_balancer
from .redis import RedisProcess
from .serving import check_address

__all__ = ["DemoOptions", "run"]

INSTANCE_NAMES = "ABCDEFGHI"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    instances: int = 2


def _instances(count: int, redis_url: str, logs: Path) -> list[Instance]:
    names = INSTANCE_NAMES[:count]
    return [
        Instance(
            name,
            [sys.executable, "-m", "sessionhub.demo.instance"],
            env={
                "DEMO_INSTANCE": name,
                "DEMO_INSTANCES": names,
                "DEMO_PORT": "{port}",
                "DEMO_REDIS_URL": redis_url,
            },
            log=logs / f"instance-{name}.log",
        )
        for name in names
    ]


def _with_controls(cluster: Cluster) -> Starlette:
    """The balancer, plus the restart endpoint behind the page's buttons."""

    async def restart(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("instance", ""))
        if name not in {instance.name for instance in cluster.instances}:
            return PlainTextResponse(f"no instance named {name!r}", status_code=400)
        await cluster.restart(name)
        return RedirectResponse("/", status_code=303)

    return Starlette(
        routes=[
            Route("/_demo/restart", restart, methods=["POST"]),
            Mount("/", app=cluster.balancer),
        ]
    )


def _check_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise OSError(f"Redis at {url} does not answer: {exc}") from None
    finally:
        client.close()


async def _main(options: DemoOptions) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    check_address(options.host, options.port)  # before starting anything
    with contextlib.ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sessionhub-demo-")))
        if options.redis_url is None:
            own = stack.enter_context(RedisProcess())
            redis_url, where = own.url, f"{Path(own.binary).name} on port {own.port}, its own"
        else:
            redis_url, where = options.redis_url, "the one given by --redis-url"
        _check_redis(redis_url)
        instances = _instances(options.instances, redis_url, logs)
        async with behind_balancer(
            instances, host=options.host, port=options.port, wrap=_with_controls
        ):
            names = ", ".join(f"{i.name} (port {i.port})" for i in instances)
            shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(options.host, options.host)
            shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
            print(f"sessionhub demo: instances {names}; Redis: {where}", flush=True)
            print(f"Open http://{shown}:{options.port}/  (Ctrl-C stops everything)", flush=True)
            await stopping.wait()
    print("sessionhub demo: stopped", flush=True)


def run(options: DemoOptions) -> None:
    asyncio.run(_main(options))

"""`sessionhub demo`: two app instances, a load balancer and Redis, on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["demo"]


def demo(
    port: Annotated[int, typer.Option(help="Port of the load balancer (the URL to open).")] = 8000,
    host: Annotated[str, typer.Option(help="Interface the load balancer listens on.")] = (
        "127.0.0.1"
    ),
    redis_url: Annotated[
        str | None,
        typer.Option(
            help="A Redis to use instead of starting one (keys go to the 'demo' namespace).",
            envvar="SESSIONHUB_REDIS__URL",
        ),
    ] = None,
    instances: Annotated[int, typer.Option(min=1, max=9, help="App instances to run.")] = 2,
) -> None:
    """Run the demo: app instances behind a round-robin balancer, sharing sessions in Redis.

    Starts a private Redis when none is given, prints the URL, and stops
    everything it started on Ctrl-C or SIGTERM.
    """
    # Imported here: the demo needs the `demo` extra (uvicorn, httpx), other commands do not.
    try:
        from ..demo.redis import NoRedisServer
        from ..demo.supervisor import DemoOptions, run
    except ModuleNotFoundError as exc:
        typer.echo(f"error: the demo needs {exc.name}: pip install 'sessionhub[demo]'", err=True)
        raise typer.Exit(2) from None

    try:
        run(DemoOptions(host=host, port=port, redis_url=redis_url, instances=instances))
    except NoRedisServer as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (OSError, RuntimeError) as exc:  # a busy port, an unreachable Redis, a failed start
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None

"""App instances behind the balancer: processes that can be restarted as a deploy does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .balancer import Backend, Balancer
from .processes import Child, free_port
from .serving import check_address, serving

__all__ = ["Cluster", "Instance", "behind_balancer", "running"]


class Instance:
    """One app server process on its own loopback port.

    `command` and `env` values may hold ``{port}``, replaced by the port chosen
    for it (kept across restarts, so the balancer's backends never change).
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.env = {
            key: value.replace("{port}", str(self.port)) for key, value in (env or {}).items()
        }
        self.log = log
        self.child: Child | None = None
        self.restarts = 0
        self._lock: asyncio.Lock | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend(self) -> Backend:
        return Backend(self.name, self.url)

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    @property
    def lock(self) -> asyncio.Lock:
        """Held while the instance restarts: one restart at a time."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def start(self) -> Instance:
        """Start the process (from the main thread); `ready` waits for it to listen."""
        self.child = Child(f"instance {self.name}", self.command, env=self.env, log=self.log)
        self.child.start()
        return self

    async def ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.child is None or not self.child.running:
                raise RuntimeError(f"instance {self.name} exited at start{self._log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise RuntimeError(f"instance {self.name} did not answer within {timeout:g} s")

    async def stop(self) -> None:
        """SIGTERM: the server finishes the requests it has, then exits."""
        if self.child is not None:
            await asyncio.to_thread(self.child.stop)
            self.child = None

    def _log_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return ":\n" + self.log.read_text(errors="replace")[-2000:]


@dataclass
class Cluster:
    """Instances behind a balancer, served at `url`."""

    instances: list[Instance]
    balancer: Balancer
    url: str

    def instance(self, name: str) -> Instance:
        for instance in self.instances:
            if instance.name == name:
                return instance
        raise KeyError(f"no instance named {name!r}")

    async def restart(self, name: str) -> None:
        """Restart one instance without failing a request, as a rolling deploy does:
        out of the rotation, stopped, started, back in once it listens."""
        instance = self.instance(name)
        async with instance.lock:
            self.balancer.drain(name)
            try:
                await instance.stop()
                instance.start()
                await instance.ready()
                instance.restarts += 1
            finally:
                self.balancer.restore(name)


@contextlib.asynccontextmanager
async def behind_balancer(
    instances: Sequence[Instance],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    wrap: Callable[[Cluster], Any] | None = None,
) -> AsyncIterator[Cluster]:
    """Start `instances` and serve a round-robin balancer in front of them.

    `wrap` builds the ASGI app actually served around the cluster (the demo
    adds its restart endpoint). Everything is stopped when the block ends,
    or when starting fails half way.
    """
    port = port or free_port()
    check_address(host, port)  # before starting anything
    balancer = Balancer([instance.backend for instance in instances])
    try:
        async with running(instances):
            cluster = Cluster(list(instances), balancer, f"http://{host}:{port}")
            async with serving(wrap(cluster) if wrap else balancer, host, port):
                yield cluster
    finally:
        await balancer.aclose()


@contextlib.asynccontextmanager
async def running(instances: Sequence[Instance]) -> AsyncIterator[None]:
    """`instances` started and listening for the block; all stopped after, whatever happens."""
    try:
        for instance in instances:
            instance.start()
        await asyncio.gather(*(instance.ready() for instance in instances))
        yield
    finally:
        await asyncio.gather(*(instance.stop() for instance in instances))

"""In-process callers: one request to an app, no HTTP client, no socket.

Each driver turns (path, cookie) into a call of the app's own interface and
returns a `Reply`. What is timed is that call and nothing else: building the
request (scope, environ, aiohttp's request object) happens before the clock
starts, the same way for the app with sessions and the bare one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["AiohttpDriver", "AsgiDriver", "Reply", "WsgiDriver"]


@dataclass
class Reply:
    status: int
    set_cookie: list[str]
    body: bytes
    elapsed_ns: int
    #: CPU time of this thread during the call: the Python side's own work
    #: (syscalls included), without the waits for Redis or for the scheduler
    cpu_ns: int


def cookie_value(reply: Reply, name: str) -> str | None:
    """The value the reply sets for cookie `name` (None if it does not set it)."""
    for header in reply.set_cookie:
        first = header.split(";", 1)[0]
        key, _, value = first.partition("=")
        if key.strip() == name:
            return value.strip().strip('"')
    return None


class AsgiDriver:
    """Calls an ASGI app; runs its lifespan first (Litestar needs it)."""

    is_async = True

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lifespan: asyncio.Task[None] | None = None
        self._lifespan_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def start(self) -> None:
        started = asyncio.get_running_loop().create_future()

        async def receive() -> dict[str, Any]:
            return await self._lifespan_queue.get()

        async def send(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.startup") and not started.done():
                started.set_result(message["type"])

        async def run() -> None:
            try:
                await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
            finally:
                if not started.done():
                    started.set_result("lifespan.unsupported")

        self._lifespan = asyncio.get_running_loop().create_task(run())
        await self._lifespan_queue.put({"type": "lifespan.startup"})
        outcome = await started
        if outcome == "lifespan.startup.failed":
            raise RuntimeError("the app failed to start")

    async def stop(self) -> None:
        if self._lifespan is not None:
            await self._lifespan_queue.put({"type": "lifespan.shutdown"})
            # an app without lifespan support ends it with an error: nothing to stop
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._lifespan, 5)

    def prepare(self, path: str, cookie: str | None) -> dict[str, Any]:
        headers = [(b"host", b"bench.local"), (b"user-agent", b"bench")]
        if cookie is not None:
            headers.append((b"cookie", cookie.encode()))
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }

    async def call(self, request: dict[str, Any]) -> Reply:
        status = 0
        set_cookie: list[str] = []
        body = bytearray()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                set_cookie.extend(
                    v.decode() for k, v in message.get("headers", ()) if k.lower() == b"set-cookie"
                )
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
        await self.app(request, receive, send)
        cpu, elapsed = time.thread_time_ns() - cpu_start, time.perf_counter_ns() - start
        return Reply(status, set_cookie, bytes(body), elapsed, cpu)


class AiohttpDriver:
    """Calls an aiohttp `Application`'s request handling (middlewares included)."""

    is_async = True

    def __init__(self, app: Any) -> None:
        self.app = app

    async def start(self) -> None:
        self.app.freeze()
        await self.app.startup()

    async def stop(self) -> None:
        await self.app.shutdown()
        await self.app.cleanup()

    def prepare(self, path: str, cookie: str | None) -> Any:
        from aiohttp.test_utils import make_mocked_request

        headers = {"Host": "bench.local", "User-Agent": "bench"}
        if cookie is not None:
            headers["Cookie"] = cookie
        return make_mocked_request("GET", path, headers=headers, app=self.app)

    async def call(self, request: Any) -> Reply:
        start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
        response = await self.app._handle(request)
        cpu, elapsed = time.thread_time_ns() - cpu_start, time.perf_counter_ns() - start
        cookies = [morsel.OutputString() for morsel in response.cookies.values()]
        return Reply(response.status, cookies, response.body or b"", elapsed, cpu)


class WsgiDriver:
    """Calls a WSGI app and drains its body."""

    is_async = False

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def prepare(self, path: str, cookie: str | None) -> dict[str, Any]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "bench.local",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "bench.local",
            "HTTP_USER_AGENT": "bench",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if cookie is not None:
            environ["HTTP_COOKIE"] = cookie
        return environ

    def call(self, environ: dict[str, Any]) -> Reply:
        environ = dict(environ, **{"wsgi.input": io.BytesIO(b"")})
        captured: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            captured[:] = [status, headers]
            return None

        start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        cpu, elapsed = time.thread_time_ns() - cpu_start, time.perf_counter_ns() - start
        status, headers = captured
        cookies = [v for k, v in headers if k.lower() == "set-cookie"]
        return Reply(int(status.split()[0]), cookies, body, elapsed, cpu)


Driver = AsgiDriver | AiohttpDriver | WsgiDriver
AsyncCall = Callable[[Any], Awaitable[Reply]]

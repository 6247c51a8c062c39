"""The floor: what one round trip to Redis costs, by client and settings.

Answers "could another client, or other redis-py settings, make the async
round trip cheaper?". Every variant does the same GET of a 16-byte value, one
at a time, on an open connection; variants run in alternation, in rounds.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import redis
import redis.asyncio
from redis._parsers import _AsyncRESP2Parser, _RESP2Parser

from bench.measure import FLOOR_KEY, alternate, median_us, sync_step
from sessionhub.connect import RedisSettings, async_redis_client

__all__ = ["client_floors"]

SyncCall = Callable[[], Any]
AsyncCall = Callable[[], Awaitable[Any]]
# the sync variants run in the same rounds, as steps that never await

_GET = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(FLOOR_KEY), FLOOR_KEY.encode())


def _raw_socket(port: int) -> SyncCall:
    """A blocking socket sending a pre-built GET: no client library at all."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get() -> bytes:
        sock.sendall(_GET)
        return sock.recv(65536)

    return get


class _RawProtocol(asyncio.Protocol):
    """asyncio's transport with no client library: the least an event loop can do."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def data_received(self, data: bytes) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def _raw_asyncio(port: int) -> AsyncCall:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_RawProtocol, "127.0.0.1", port)

    async def get() -> bytes:
        protocol.waiter = loop.create_future()
        transport.write(_GET)
        return await protocol.waiter

    return get


def _sessionhub_client(port: int) -> AsyncCall:
    """The asyncio client sessionhub builds: its timeouts, its retry, its lean connection."""
    client = async_redis_client(RedisSettings(port=port))
    return lambda: client.get(FLOOR_KEY)


async def _single_connection(port: int) -> AsyncCall:
    """redis.asyncio's Connection used directly: no pool checkout per command."""
    connection = redis.asyncio.Connection(port=port)
    await connection.connect()  # type: ignore[no-untyped-call]

    async def get() -> Any:
        await connection.send_command("GET", FLOOR_KEY)
        return await connection.read_response()

    return get


async def _coredis(port: int, stack: AsyncExitStack) -> AsyncCall | None:
    try:
        import coredis
    except ImportError:
        return None
    client: Any = await stack.enter_async_context(coredis.Redis(port=port))  # its pool runs inside

    async def get() -> Any:
        return await client.get(FLOOR_KEY)

    return get


def _sync_variants(port: int) -> dict[str, SyncCall]:
    python_parser = redis.Redis(
        connection_pool=redis.ConnectionPool(port=port, parser_class=_RESP2Parser)
    )
    return {
        "sync redis-py (hiredis)": partial(redis.Redis(port=port).get, FLOOR_KEY),
        "sync redis-py, pure-Python parser": partial(python_parser.get, FLOOR_KEY),
        "sync raw socket (no client)": _raw_socket(port),
    }


async def _async_variants(port: int, stack: AsyncExitStack) -> dict[str, AsyncCall]:
    hiredis_client = redis.asyncio.Redis(port=port)
    python_client = redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool(port=port, parser_class=_AsyncRESP2Parser)
    )
    variants: dict[str, AsyncCall] = {
        "redis.asyncio (hiredis)": lambda: hiredis_client.get(FLOOR_KEY),
        "redis.asyncio, pure-Python parser": lambda: python_client.get(FLOOR_KEY),
        "redis.asyncio, sessionhub's connection": _sessionhub_client(port),
        "redis.asyncio Connection, no pool": await _single_connection(port),
        "asyncio raw protocol (no client)": await _raw_asyncio(port),
    }
    coredis_get = await _coredis(port, stack)
    if coredis_get is not None:
        variants["coredis"] = coredis_get
    return variants


def client_floors(port: int, rounds: int = 5, count: int = 400) -> dict[str, float]:
    """Median microseconds per GET, by client variant."""

    async def on_loop() -> dict[str, tuple[list[int], list[int]]]:
        steps = {name: sync_step(call) for name, call in _sync_variants(port).items()}
        async with AsyncExitStack() as stack:
            steps.update(await _async_variants(port, stack))
            return await alternate(steps, rounds, count)

    results = {name: median_us(wall) for name, (wall, _) in asyncio.run(on_loop()).items()}
    try:
        import uvloop
    except ImportError:
        return results

    async def uvloop_variants() -> dict[str, tuple[list[int], list[int]]]:
        client = redis.asyncio.Redis(port=port)
        raw = await _raw_asyncio(port)
        variants: dict[str, AsyncCall] = {
            "redis.asyncio (hiredis) on uvloop": lambda: client.get(FLOOR_KEY),
            "redis.asyncio, sessionhub's connection on uvloop": _sessionhub_client(port),
            "asyncio raw protocol on uvloop": raw,
        }
        return await alternate(variants, rounds, count)

    for name, (wall, _) in uvloop.run(uvloop_variants()).items():
        results[name] = median_us(wall)
    return results

"""Clients of one integration's test app (tests/web_apps.py), opened and closed per test.

In a test module, ``kind, open_client = fixtures()`` gives the tests a
``kind`` (every integration in turn; parametrize ``kind`` to pick some) and an
``open_client(**settings)`` on the test Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers import RedisServer
from tests.web_apps import KINDS, Client


class Clients:
    """Opens clients of `kind`'s app, each on the Redis at `redis_url` unless told otherwise.

    Django's settings are global, so one Django app at a time: `close` one
    before opening the next, and `close_all` undoes them last first.
    """

    def __init__(self, kind: str, redis_url: str) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.open: list[Client] = []

    def __call__(self, **settings: Any) -> Client:
        conf = {"store": "redis", "redis": {"url": self.redis_url}, **settings}
        client = Client(self.kind, conf)
        self.open.append(client)
        return client

    def close(self, client: Client) -> None:
        self.open.remove(client)
        client.close()

    def close_all(self) -> None:
        for client in reversed(self.open):
            self.close(client)


def fixtures() -> tuple[Any, Any]:
    """The ``kind`` and ``open_client`` fixtures, for a module to bind to those names."""

    @pytest.fixture(params=KINDS)
    def kind(request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def open_client(kind: str, redis_server: RedisServer) -> Iterator[Clients]:
        clients = Clients(kind, redis_server.url)
        yield clients
        clients.close_all()

    return kind, open_client

"""One way to drive every store, sync or asyncio, from a plain test function."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import redis
import redis.asyncio

from sessionhub import (
    AsyncRedisStore,
    AsyncSessionManager,
    MemoryStore,
    Outcome,
    RedisStore,
    Session,
    SessionManager,
)
from tests.conftest import (
    AsyncCountingConnection,
    CountingConnection,
    async_counting_client,
    counting_client,
)

T = TypeVar("T")


def session_records(client: Any, namespace: str = "sh") -> list[bytes]:
    """The keys of the session records in a Redis (a client of a server or a Cluster).

    A rotation leaves a short-lived forward at the old key, and an end may
    leave a short-lived marker: their values start with "!", and they are
    not sessions.
    """
    keys: list[bytes] = client.keys(f"{namespace}:s:*")
    return [key for key in keys if not (client.get(key) or b"!").startswith(b"!")]


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingMemoryStore(MemoryStore):
    operations = 0

    def execute(self, operation: Any) -> Any:
        self.operations += 1
        return super().execute(operation)


class Harness:
    """A manager on one kind of store, with sync methods whatever its kind."""

    kind: str
    redis_port: int

    def __init__(self, kind: str, redis_port: int, **options: Any) -> None:
        self.kind = kind
        self.redis_port = redis_port
        self.options = options
        self.loop = asyncio.new_event_loop() if kind.endswith("async") else None
        self.memory = CountingMemoryStore()
        self.sync_client: redis.Redis | None = None
        self.async_client: redis.asyncio.Redis | None = None
        self.manager: SessionManager | AsyncSessionManager
        if kind == "memory-sync":
            self.manager = SessionManager(self.memory, **options)
        elif kind == "memory-async":
            self.manager = AsyncSessionManager(self.memory, **options)
        elif kind == "redis-sync":
            self.sync_client = counting_client(redis_port)
            self.manager = SessionManager(RedisStore(self.sync_client), **options)
        else:
            self.async_client = async_counting_client(redis_port)
            self.manager = AsyncSessionManager(AsyncRedisStore(self.async_client), **options)

    @property
    def is_redis(self) -> bool:
        return self.kind.startswith("redis")

    def run(self, value: Any) -> Any:
        """The value, or the coroutine's result on this harness's loop."""
        if self.loop is not None:
            return self.loop.run_until_complete(value)
        return value

    def load(self, session_id: str | None) -> Session:
        session: Session = self.run(self.manager.load(session_id))
        return session

    def commit(self, session: Session) -> Outcome:
        outcome: Outcome = self.run(self.manager.commit(session))
        return outcome

    def store(self, **values: Any) -> str:
        """A stored session holding `values`; its id."""
        session = self.load(None)
        session.update(values)
        outcome = self.commit(session)
        assert outcome.id is not None
        return outcome.id

    def round_trips(self) -> int:
        if self.kind == "redis-sync":
            return CountingConnection.sent
        if self.kind == "redis-async":
            return AsyncCountingConnection.sent
        return self.memory.operations

    def keys(self) -> list[bytes]:
        if not self.is_redis:
            return [h.encode() for h in self.memory._records]
        keys: list[bytes] = redis.Redis(port=self.redis_port).keys("*")  # type: ignore[assignment]
        return keys

    def records(self) -> list[bytes]:
        """The stored sessions (not forwards, markers or books)."""
        if not self.is_redis:
            return [h.encode() for h in self.memory._records]
        return session_records(redis.Redis(port=self.redis_port))

    def close(self) -> None:
        if self.sync_client is not None:
            self.sync_client.close()
        if self.async_client is not None:
            self.run(self.async_client.aclose())
        if self.loop is not None:
            self.loop.close()

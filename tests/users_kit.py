"""A manager on any kind of store -- memory, Redis or Redis Cluster, sync or
asyncio -- with sync methods, for the tests of users, limits and events."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from sessionhub import (
    AsyncRedisStore,
    AsyncSessionManager,
    MemoryStore,
    RedisStore,
    Session,
    SessionManager,
)
from sessionhub.events import Event
from sessionhub.expiry import AsyncExpiryWorker, ExpiryWorker
from sessionhub.stores.redis.consumer import AsyncEventConsumer, EventConsumer
from sessionhub.users import SessionInfo
from tests.servers import RedisCluster, RedisServer

T = TypeVar("T")

KINDS = [
    "memory-sync",
    "memory-async",
    "redis-sync",
    "redis-async",
    "cluster-sync",
    "cluster-async",
]
REDIS_KINDS = [kind for kind in KINDS if not kind.startswith("memory")]


def flush(server: RedisServer | RedisCluster) -> None:
    nodes = server.nodes if isinstance(server, RedisCluster) else [server]
    for node in nodes:
        node.client().flushall()


def sync_client(server: RedisServer | RedisCluster, **options: Any) -> Any:
    if isinstance(server, RedisCluster):
        return redis.cluster.RedisCluster(host="127.0.0.1", port=server.ports[0], **options)
    return redis.Redis(port=server.port, **options)


def async_client(server: RedisServer | RedisCluster, **options: Any) -> Any:
    if isinstance(server, RedisCluster):
        return redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=server.ports[0], **options)
    return redis.asyncio.Redis(port=server.port, **options)


class Kit:
    """One manager (and its store) of `kind`; every method is sync."""

    def __init__(
        self,
        kind: str,
        server: RedisServer | RedisCluster | None = None,
        *,
        anonymous_events: bool = False,
        stream_length: int = 10_000,
        client: Any = None,
        **options: Any,
    ) -> None:
        self.kind = kind
        self.server = server
        self.loop = asyncio.new_event_loop() if kind.endswith("async") else None
        self.store: Any
        if kind.startswith("memory"):
            self.store = MemoryStore(anonymous_events=anonymous_events)
        else:
            assert server is not None
            if self.loop is None:
                self.store = RedisStore(
                    client or sync_client(server),
                    anonymous_events=anonymous_events,
                    stream_length=stream_length,
                )
            else:
                self.store = AsyncRedisStore(
                    client or async_client(server),
                    anonymous_events=anonymous_events,
                    stream_length=stream_length,
                )
        self.manager: SessionManager | AsyncSessionManager
        if self.loop is None:
            self.manager = SessionManager(self.store, **options)
        else:
            self.manager = AsyncSessionManager(self.store, **options)
        self.events: list[Event] = []
        self.store.listeners.add(self.events.append)

    @property
    def is_redis(self) -> bool:
        return not self.kind.startswith("memory")

    def run(self, value: Any) -> Any:
        if self.loop is not None:
            return self.loop.run_until_complete(value)
        return value

    def load(self, session_id: str | None) -> Session:
        session: Session = self.run(self.manager.load(session_id))
        return session

    def commit(self, session: Session) -> str | None:
        outcome = self.run(self.manager.commit(session))
        return outcome.id  # type: ignore[no-any-return]

    def login(self, principal: str, *, from_id: str | None = None, **client_info: Any) -> str:
        """A session of `principal` (logged in from the session `from_id`); its id."""
        session = self.load(from_id)
        if from_id is None:
            session["cart"] = []
        self.manager.login(session, principal)
        if client_info:
            session.client_info = client_info
        session_id = self.commit(session)
        assert session_id is not None
        return session_id

    def anonymous(self) -> str:
        session = self.load(None)
        session["visits"] = 1
        session_id = self.commit(session)
        assert session_id is not None
        return session_id

    def sessions_of(self, principal: str) -> list[SessionInfo]:
        found: list[SessionInfo] = self.run(self.manager.sessions_of(principal))
        return found

    def end_sessions(self, principal: str, **options: Any) -> list[str]:
        ended: list[str] = self.run(self.manager.end_sessions(principal, **options))
        return ended

    def end_session(self, handle: str, **options: Any) -> bool:
        ended: bool = self.run(self.manager.end_session(handle, **options))
        return ended

    def execute(self, operation: Any) -> Any:
        """One store operation, behind the manager's back."""
        if self.loop is None:
            return self.store.execute(operation)
        return self.run(self.store.aexecute(operation))

    def handle(self, session_id: str) -> str:
        ref = self.manager.lifecycle.ids.parse(session_id)
        assert ref is not None
        return ref.handle

    def alive(self, session_id: str) -> bool:
        return not self.load(session_id).is_new

    def worker(self, **options: Any) -> Worker:
        return Worker(self, **options)

    def consumer(self, group: str, name: str, **options: Any) -> Consumer:
        return Consumer(self, group, name, **options)

    def keys(self, pattern: str = "*") -> list[bytes]:
        """Every key of the Redis (all primaries of a Cluster)."""
        assert self.server is not None
        nodes = self.server.nodes if isinstance(self.server, RedisCluster) else [self.server]
        found: list[bytes] = []
        for node in nodes:
            found += node.client().keys(pattern)  # type: ignore[arg-type]
        return found

    def close(self) -> None:
        client = getattr(self.store, "client", None)
        if client is not None and self.loop is None:
            client.close()
        elif client is not None:
            self.run(client.aclose())
        if self.loop is not None:
            self.loop.close()


class Kits:
    """Builds kits of one kind on a server (flushed first); closes them all at the end."""

    def __init__(self, kind: str, server: RedisServer | RedisCluster | None) -> None:
        self.kind = kind
        self.server = server
        self.kits: list[Kit] = []
        if server is not None:
            flush(server)

    def __call__(self, **options: Any) -> Kit:
        self.kits.append(Kit(self.kind, self.server, **options))
        return self.kits[-1]

    def __enter__(self) -> Kits:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for kit in self.kits:
            kit.close()


class Worker:
    """An expiry worker of the kit's kind, ticked by hand."""

    def __init__(self, kit: Kit, **options: Any) -> None:
        self.kit = kit
        self.worker: ExpiryWorker | AsyncExpiryWorker
        if kit.loop is None:
            self.worker = ExpiryWorker(kit.store, **options)
        else:
            self.worker = AsyncExpiryWorker(kit.store, **options)

    def tick(self) -> int:
        expired: int = self.kit.run(self.worker.tick())
        return expired

    @property
    def leading(self) -> bool:
        return self.worker.sweep.leading


class Consumer:
    """A stream consumer of the kit's kind, with sync methods."""

    def __init__(self, kit: Kit, group: str, name: str, **options: Any) -> None:
        self.kit = kit
        self.consumer: EventConsumer | AsyncEventConsumer
        if kit.loop is None:
            self.consumer = EventConsumer(kit.store, group, name, **options)
        else:
            self.consumer = AsyncEventConsumer(kit.store, group, name, **options)

    def read(self, count: int = 100, block: float = 0.05) -> list[Event]:
        events: list[Event] = self.kit.run(self.consumer.read(count, block))
        return events

    def read_all(self, count: int = 100) -> list[Event]:
        """Everything there is to read now."""
        found: list[Event] = []
        while batch := self.read(count, block=0):
            found += batch
        return found

    def ack(self, events: list[Event]) -> None:
        self.kit.run(self.consumer.ack(events))

    def claim(self, min_idle: float, count: int = 100) -> list[Event]:
        events: list[Event] = self.kit.run(self.consumer.claim(min_idle, count))
        return events

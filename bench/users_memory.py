"""What the per-user index and the expiry schedule cost in Redis memory.

    .venv/bin/python -m bench.users_memory [sessions]

Stores `sessions` sessions (a user id and a 10-item cart, as the record size
test does) three ways -- anonymous, anonymous with `anonymous_events=True`,
logged in (one session per user, with client info) -- on a redis-server of
its own, and prints `MEMORY USAGE` per session for each kind of key. The
default, 20,000, is past the size where Redis turns small sorted sets
(compact listpacks) into skiplists, as real deployments are.
"""

from __future__ import annotations

import re
import sys

import redis
from tests.servers import RedisServer
from tests.test_redis_store import PAYLOAD

from sessionhub import RedisStore, SessionManager

KINDS = {
    "records": "sh:s:*",
    "user indexes": "sh:u:*",
    "expiry schedules": "sh:x:*",
}


def _usage(client: redis.Redis, pattern: str) -> int:
    keys: list[bytes] = client.keys(pattern)  # type: ignore[assignment]
    return sum(int(client.memory_usage(key, samples=0) or 0) for key in keys)


def _fill(client: redis.Redis, sessions: int, *, login: bool, tracked: bool) -> None:
    manager = SessionManager(RedisStore(client, anonymous_events=tracked, stream_length=0))
    for n in range(sessions):
        session = manager.load(None)
        session.update(PAYLOAD)
        if login:
            manager.login(session, f"user-{n}@example.com")
            session.client_info = {"agent": "Mozilla/5.0 (X11; Linux x86_64)", "ip": "192.0.2.7"}
        manager.commit(session)


def _user_field_cost(client: redis.Redis, sample: int = 500) -> float:
    """What the `!u` field adds to a record (allocator size classes included)."""
    keys: list[bytes] = client.keys("sh:s:*")[:sample]  # type: ignore[index]
    before = sum(int(client.memory_usage(key, samples=0) or 0) for key in keys)
    for key in keys:
        blob = client.get(key)
        assert isinstance(blob, bytes)
        client.set(key, re.sub(rb"\n!u\t[^\n]*", b"", blob), keepttl=True)
    after = sum(int(client.memory_usage(key, samples=0) or 0) for key in keys)
    return (before - after) / len(keys)


def main(sessions: int = 20_000) -> None:
    server = RedisServer().start()
    try:
        client = server.client()
        cases = [
            ("anonymous", False, False),
            ("anonymous, anonymous_events=True", False, True),
            ("logged in, one session per user", True, False),
        ]
        for label, login, tracked in cases:
            client.flushall()
            _fill(client, sessions, login=login, tracked=tracked)
            parts = [f"{name} {_usage(client, p) / sessions:.0f}" for name, p in KINDS.items()]
            if login:
                parts.append(f"of which `!u` {_user_field_cost(client):.0f}")
            print(f"{label}: bytes per session: " + ", ".join(parts))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)

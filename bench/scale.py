"""Cost per request as the number of live sessions grows.

Redis is filled with real records (the payload session's own bytes) under
session-shaped keys by a Lua loop, 100,000 keys per call, then sessionhub's
requests are timed again. Nothing on sessionhub's request path scans or
depends on the key count, so the numbers must stay flat.
"""

from __future__ import annotations

import redis

__all__ = ["fill"]

_FILL = """
local prefix, blob, ttl = ARGV[1], ARGV[2], ARGV[3]
for i = tonumber(ARGV[4]), tonumber(ARGV[5]) do
  redis.call('SET', prefix .. string.format('%022d', i), blob, 'PX', ttl)
end
return redis.call('DBSIZE')
"""
_CHUNK = 100_000


def fill(client: redis.Redis, live: int, record: bytes, *, prefix: str = "sh:s:{fill}") -> int:
    """Add filler sessions until Redis holds about `live` keys; returns the key count."""
    have = int(client.dbsize())
    first = have
    while have < live:
        last = min(live, first + _CHUNK) - 1
        have = int(client.eval(_FILL, 0, prefix, record, 3_600_000, first, last))
        first = last + 1
    return have

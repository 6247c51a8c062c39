"""Durable ends: a logout is acknowledged only once a replica has it.

Redis replicates asynchronously: a write is acknowledged as soon as the
primary has it. If the primary is lost before a replica has it too, the
promoted replica never saw it, and for an end of a session (a logout, "log
out everywhere", a login whose session limit pushes older sessions out) that
means a session the user ended comes back. So a store with ``durable_ends=n``
sends each write of an end as a pipeline of the write and ``WAIT n timeout``
on the same connection: WAIT answers how many replicas have acknowledged
everything this connection wrote, and with fewer than `n` in time the end is
answered `NotReplicated` (HTTP 503), never a success.

The write has then been applied on the primary (it cannot be taken back) but
not confirmed: a failover may still undo it, and the user is told to try again.
Other writes (a cart, a login) are not waited for: losing the last of those
in a failover costs the user a retry, not their security.

Redis Cluster: WAIT must reach the node that took the write, on the same
connection, and redis-py's Cluster client routes a keyless WAIT to any node
and gives pipelines no connection of their own; durable ends are refused
there (use ``min-replicas-to-write`` on the primaries instead).

`refusal` names the errors that mean "the primary refuses to promise this
write now" (these, a held write in a failover, and Redis's own NOREPLICAS of
``min-replicas-to-write``), which stores answer as ``StoreUnavailable``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio.sentinel
import redis.sentinel
from redis import exceptions as redis_errors

from ..base import Create, Delete, EndSessions, Operation, Rotate

__all__ = [
    "DEFAULT_TIMEOUT",
    "NotReplicated",
    "WriteRefused",
    "attempts",
    "durable_replicas",
    "ends_sessions",
    "refusal",
    "replicated",
    "sentinel_managed",
    "socket_timeout_of",
    "wait_args",
]

#: Seconds a durable end waits for its replicas (WAIT's timeout).
DEFAULT_TIMEOUT = 0.25


class WriteRefused(redis_errors.RedisError):
    """The store will not acknowledge this write now; `reason` says why (for the 503)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotReplicated(WriteRefused):
    def __init__(self, acknowledged: int, wanted: int, timeout: float) -> None:
        super().__init__(
            f"session store: the end of the session reached {acknowledged} of the {wanted} "
            f"replica(s) it needs within {timeout:g} s (durable_ends), so a failover could "
            "undo it; try again"
        )


def sentinel_managed(client: Any) -> bool:
    """Whether `client` writes to a Sentinel-managed primary (redis-py's `master_for`)."""
    pool = getattr(client, "connection_pool", None)
    sentinel_pools = (
        redis.sentinel.SentinelConnectionPool,
        redis.asyncio.sentinel.SentinelConnectionPool,
    )
    return isinstance(pool, sentinel_pools) and bool(pool.is_master)


def ends_sessions(operation: Operation) -> bool:
    """Whether `operation` ends sessions (so must survive a failover)."""
    match operation:
        case Delete() | EndSessions():
            return True
        case Create(limit=limit) | Rotate(limit=limit):
            return limit is not None  # a login at the session limit ends older sessions
    return False


def durable_replicas(
    replicas: int | None, *, sentinel: bool, cluster: bool, timeout: float, socket_timeout: Any
) -> int:
    """How many replicas each end waits for: by default 1 with Sentinel, else 0."""
    if replicas is None:
        replicas = 1 if sentinel else 0
    if replicas < 0:
        raise ValueError("durable_ends is a number of replicas, 0 or more")
    if replicas and cluster:
        raise ValueError(
            "durable_ends needs WAIT on the connection that wrote, which redis-py's Cluster "
            "client cannot give: set durable_ends=0 and min-replicas-to-write on the primaries"
        )
    if replicas and not 0 < timeout < (socket_timeout or float("inf")):
        raise ValueError(
            f"durable_ends_timeout ({timeout} s) must be above 0 and below the client's "
            f"socket_timeout ({socket_timeout} s): the answer to WAIT must come in time"
        )
    return replicas


def socket_timeout_of(client: Any) -> Any:
    """The socket timeout a (non-Cluster) client's connections are made with, if any."""
    pool = getattr(client, "connection_pool", None)
    return getattr(pool, "connection_kwargs", {}).get("socket_timeout")


def attempts(call: Any) -> list[tuple[Any, ...]]:
    """The commands that carry a store call, in order: EVALSHA, then EVAL if not loaded."""
    if call.script is None:
        return [call.args]
    return [("EVALSHA", call.script.sha, *call.args), ("EVAL", call.script.source, *call.args)]


def wait_args(replicas: int, timeout: float) -> tuple[Any, ...]:
    # WAIT's timeout is in ms, and 0 would block for ever.
    return ("WAIT", replicas, max(1, round(timeout * 1000)))


def replicated(reply: Any, acknowledged: Any, wanted: int, timeout: float) -> Any:
    """The write's reply, once WAIT says enough replicas have it (errors raised)."""
    if isinstance(reply, Exception):
        raise reply
    if isinstance(acknowledged, Exception):
        raise acknowledged
    if int(acknowledged) < wanted:
        raise NotReplicated(int(acknowledged), wanted, timeout)
    return reply


def refusal(exc: Exception) -> str | None:
    """The 503 reason if `exc` means the primary will not promise a write now, else None."""
    if isinstance(exc, WriteRefused):
        return exc.reason
    # min-replicas-to-write: redis-py has no class of its own for it (a script's too).
    if isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("NOREPLICAS"):
        return "session store: the primary has no replica in sync (min-replicas-to-write)"
    return None

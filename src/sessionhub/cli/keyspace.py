"""Walking the session keys of every primary with SCAN (never KEYS), for operators.

The request path never scans; these commands may, because an operator asked
and sees the progress. Each primary is scanned on its own (a Cluster's keys
are spread over them), in batches of `BATCH` keys, with one pipelined round
trip per batch for what is read about the keys.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..events import decode_principal
from ..record import AUTH_TIME, CLIENT_INFO, PRINCIPAL, RecordError, parse_record
from ..stores.redis.store import SLOT_TAGS
from ..users import SessionInfo, session_info
from .common import Deployment

__all__ = ["BATCH", "KeyspaceStats", "NodeStats", "newest_sessions", "primaries", "survey_keys"]

BATCH = 1000
_SHARD_OF_TAG = {tag: shard for shard, tag in SLOT_TAGS.items()}
#: What a record key starts with for a few seconds after its session was ended
#: young or moved to another Cluster slot (see lua/track.lua): not a session.
_ENDED = b"!"


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    client: redis.Redis


def primaries(deployment: Deployment) -> list[Node]:
    """A plain client per primary: the server itself, the one the sentinels name, or each
    Cluster primary; each named by its own address."""
    client: Any = deployment.client
    if isinstance(client, redis.cluster.RedisCluster):
        nodes = client.get_primaries()  # type: ignore[no-untyped-call]
        return [Node(node.name, node.redis_connection) for node in nodes]
    target = deployment.settings.redis.target()
    if target.kind == "sentinel":
        # The settings hold the sentinels' addresses, not the primary's: ask them.
        host, port = client.connection_pool.get_master_address()
        return [Node(f"{host}:{port}", client)]
    name = target.unix_socket or ",".join(f"{host}:{port}" for host, port in target.addresses)
    return [Node(name, client)]


def _progress(console: Console, description: str) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _batches(node: Node, match: str, progress: Progress, task: Any) -> Iterator[list[bytes]]:
    cursor = 0
    client: Any = node.client  # bytes replies: the stores refuse decode_responses
    while True:
        cursor, keys = client.scan(cursor, match=match, count=BATCH)
        progress.advance(task, len(keys))
        if keys:
            yield keys
        if cursor == 0:
            return


def _handle(namespace: str, key: bytes) -> str:
    """The handle of a record key: ns:s:{tag}digest -> shard + digest."""
    tag, _, digest = key.decode()[len(namespace) + 4 :].partition("}")
    return str(_SHARD_OF_TAG[tag]) + digest


def _info(handle: str, blob: bytes) -> SessionInfo | None:
    try:
        record = parse_record(blob)
    except RecordError:
        return None
    fields = record.fields
    principal = decode_principal(fields.get(PRINCIPAL)) or ""
    return session_info(
        handle, principal, record.meta, fields.get(AUTH_TIME), fields.get(CLIENT_INFO)
    )


def newest_sessions(deployment: Deployment, limit: int, console: Console) -> list[SessionInfo]:
    """The `limit` most recently used sessions of the whole keyspace."""
    namespace = deployment.settings.namespace
    newest: list[tuple[float, str, SessionInfo]] = []
    nodes = primaries(deployment)
    with _progress(console, "scanning") as progress:
        for node in nodes:
            task = progress.add_task(f"scanning {node.name}", total=node.client.dbsize())
            for keys in _batches(node, f"{namespace}:s:*", progress, task):
                pipe = node.client.pipeline(transaction=False)
                for key in keys:
                    pipe.get(key)
                for key, blob in zip(keys, pipe.execute(), strict=True):
                    if blob is None or blob[:1] == _ENDED:
                        continue
                    info = _info(_handle(namespace, key), blob)
                    if info is None:
                        continue
                    entry = (info.accessed_at, info.handle, info)
                    if len(newest) < limit:
                        heapq.heappush(newest, entry)
                    elif entry > newest[0]:
                        heapq.heapreplace(newest, entry)
    return [info for _, _, info in sorted(newest, reverse=True)]


@dataclass
class NodeStats:
    """What one primary holds of the namespace. Memory is MEMORY USAGE's bytes."""

    node: str
    sessions: int = 0
    users: int = 0
    memory: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("records", "indexes", "schedules", "streams", "other"), 0
        )
    )


@dataclass
class KeyspaceStats:
    nodes: list[NodeStats]

    @property
    def sessions(self) -> int:
        return sum(node.sessions for node in self.nodes)

    @property
    def users(self) -> int:
        return sum(node.users for node in self.nodes)

    def memory(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for node in self.nodes:
            for kind, size in node.memory.items():
                total[kind] = total.get(kind, 0) + size
        return total


_KINDS = {"s": "records", "u": "indexes", "x": "schedules", "e": "streams"}


def survey_keys(deployment: Deployment, console: Console) -> KeyspaceStats:
    """Sessions, logged-in users (their indexes) and memory, per primary."""
    namespace = deployment.settings.namespace
    prefix = len(namespace) + 1
    found = []
    with _progress(console, "scanning") as progress:
        for node in primaries(deployment):
            stats = NodeStats(node.name)
            task = progress.add_task(f"scanning {node.name}", total=node.client.dbsize())
            for keys in _batches(node, f"{namespace}:*", progress, task):
                pipe = node.client.pipeline(transaction=False)
                kinds = []
                for key in keys:
                    kind = key[prefix : prefix + 2].decode(errors="replace")
                    kinds.append(_KINDS.get(kind[0], "other") if kind[1:] == ":" else "other")
                    pipe.memory_usage(key, samples=0)
                    if kinds[-1] == "records":
                        pipe.getrange(key, 0, 0)
                replies = iter(pipe.execute())
                for kind in kinds:
                    stats.memory[kind] += int(next(replies) or 0)
                    if kind == "records":
                        first = next(replies)
                        stats.sessions += bool(first) and first != _ENDED
                    elif kind == "indexes":
                        stats.users += 1
            found.append(stats)
    return KeyspaceStats(found)

"""`sessionhub stats`: how many sessions and users, how fast they come and go, and
what they cost in memory.

Two sources, said apart in the output:

* the books (no scan): *tracked* sessions from the expiry schedules, and
  events per minute from the event streams over `--window` minutes;
* a SCAN of every primary (with progress; ``--no-scan`` skips it): every
  session record, logged-in users (their indexes), and ``MEMORY USAGE`` of
  each key of the namespace.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..events import EventType
from ..stores.redis.survey import Window, events_since, live_sessions
from .common import (
    ConfigOption,
    Deployment,
    JsonOption,
    NamespaceOption,
    UrlOption,
    connect,
    print_json,
)
from .keyspace import KeyspaceStats, survey_keys
from .sessions import stderr, stdout

__all__ = ["rates", "stats"]

#: Most events read per shard stream for the rates (the streams hold ~10,000 each).
STREAM_LIMIT = 10_000


def rates(window: Window, minutes: float) -> dict[str, float]:
    """Events per minute over the window, by type."""
    counts = dict.fromkeys((kind.value for kind in EventType), 0)
    for event in window.events:
        counts[event.type.value] += 1
    return {kind: round(count / minutes, 2) for kind, count in counts.items()}


def _tracked_by_node(deployment: Deployment, counts: dict[str, int]) -> dict[str, int]:
    """Tracked sessions per Cluster primary (from the shard each schedule lives in)."""
    client: Any = deployment.client
    commands = deployment.store.commands
    by_node: dict[str, int] = {}
    for shard, count in counts.items():
        node = client.get_node_from_key(commands.schedule_key(shard))
        by_node[node.name] = by_node.get(node.name, 0) + count
    return by_node


def _mib(size: int) -> str:
    return f"{size / 1048576:.2f} MiB" if size >= 104858 else f"{size / 1024:.1f} KiB"


def stats(
    window: Annotated[
        int, typer.Option(min=1, max=1440, help="Minutes of events the rates are taken over.")
    ] = 5,
    scan: Annotated[
        bool, typer.Option(help="Scan every primary for exact counts and memory.")
    ] = True,
    json: JsonOption = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
) -> None:
    """Live sessions (total and per primary), logged-in users, events per minute, memory."""
    with connect(url, namespace, config) as deployment:
        store = deployment.store
        now = int(time.time() * 1000)
        tracked = store.run(live_sessions(store.commands, now))
        recent = store.run(events_since(store.commands, now - window * 60_000, STREAM_LIMIT))
        per_node = _tracked_by_node(deployment, tracked) if store.commands.cluster else {}
        keyspace = survey_keys(deployment, stderr()) if scan else None
        where = deployment.where
    report: dict[str, Any] = {
        "target": where,
        "namespace": deployment.settings.namespace,
        "tracked_sessions": sum(tracked.values()),
        "window_minutes": window,
        "per_minute": rates(recent, window),
        "rates_complete": recent.complete_from <= recent.since,
    }
    if keyspace is not None:
        report |= _scanned(keyspace, per_node)
    if json:
        print_json(report)
    else:
        _print(stdout(), report)


def _scanned(keyspace: KeyspaceStats, tracked_per_node: dict[str, int]) -> dict[str, Any]:
    memory = keyspace.memory()
    return {
        "sessions": keyspace.sessions,
        "users": keyspace.users,
        "memory_bytes": {"total": sum(memory.values()), **memory},
        "nodes": [
            {
                "node": node.node,
                "sessions": node.sessions,
                "tracked_sessions": tracked_per_node.get(node.node),
                "users": node.users,
                "memory_bytes": sum(node.memory.values()),
            }
            for node in keyspace.nodes
        ],
    }


def _print(console: Console, report: dict[str, Any]) -> None:
    table = Table(
        show_header=False,
        title=f"{report['target']}, namespace {report['namespace']!r}",
        title_justify="left",
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    if "sessions" in report:
        table.add_row("sessions (records, scanned)", f"{report['sessions']:,}")
    table.add_row("tracked sessions (logged in)", f"{report['tracked_sessions']:,}")
    if "users" in report:
        table.add_row("logged-in users", f"{report['users']:,}")
    note = "" if report["rates_complete"] else " (streams cut short: low)"
    for kind, rate in report["per_minute"].items():
        table.add_row(f"{kind} / min, last {report['window_minutes']} min{note}", f"{rate:g}")
    if "memory_bytes" in report:
        for kind, size in report["memory_bytes"].items():
            table.add_row(f"memory: {kind}", _mib(size))
    console.print(table)
    nodes = report.get("nodes", [])
    if len(nodes) > 1:
        per_node = Table(title="per primary", title_justify="left")
        for name in ("node", "sessions", "tracked", "users", "memory"):
            per_node.add_column(name, justify="left" if name == "node" else "right")
        for node in nodes:
            per_node.add_row(
                node["node"],
                f"{node['sessions']:,}",
                f"{node['tracked_sessions'] or 0:,}",
                f"{node['users']:,}",
                _mib(node["memory_bytes"]),
            )
        console.print(per_node)

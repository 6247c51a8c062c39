"""The doctor: what in a Redis deployment puts sessions at risk, and what to change.

`diagnose(settings)` looks at the deployment the settings name (one server,
a Sentinel set with its servers, or every node of a Cluster) and returns a
`Report` of `Finding`s; each finding that is not "ok" says what to fix.

It reads `INFO` and, when the server allows it, `CONFIG GET`. Managed Redis
services often forbid `CONFIG`: the doctor then says so once and works from
`INFO` alone, marking what it could not see. It changes nothing.
"""

from __future__ import annotations

import enum
import statistics
import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from .connect import RedisSettings, node_client, redis_client

__all__ = ["Finding", "Level", "Report", "diagnose"]

#: Oldest server version the stores are tested with.
MINIMUM_VERSION = (6, 2)
#: Median round trip above which the doctor warns (seconds).
SLOW_ROUND_TRIP = 0.005


class Level(enum.IntEnum):
    OK = 0
    INFO = 1
    WARNING = 2
    ERROR = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # connectivity, version, eviction, persistence, replication, sentinel, ...
    level: Level
    message: str  # what was seen
    fix: str = ""  # what to change; empty when nothing needs to
    node: str | None = None  # "host:port", when about one server

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "level": str(self.level),
            "message": self.message,
            "fix": self.fix,
            "node": self.node,
        }


@dataclass(frozen=True, slots=True)
class Report:
    target: str  # what was examined, without credentials
    findings: tuple[Finding, ...]

    @property
    def worst(self) -> Level:
        return max((f.level for f in self.findings), default=Level.OK)

    @property
    def healthy(self) -> bool:
        """No warning and no error."""
        return self.worst <= Level.INFO

    def of(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "worst": str(self.worst),
            "findings": [f.to_dict() for f in self.findings],
        }


def diagnose(settings: RedisSettings, *, latency_samples: int = 20) -> Report:
    """Examine the deployment `settings` name; never raises for an unreachable one."""
    target = settings.target()
    doctor = _Doctor(settings, latency_samples)
    try:
        if target.kind == "sentinel":
            doctor.sentinel_set()
        elif target.kind == "cluster":
            doctor.cluster()
        else:
            doctor.standalone()
    finally:
        for client in doctor.clients:
            client.close()
    return Report(target.describe(), tuple(doctor.findings))


class _Node:
    """One server as the doctor sees it: its INFO, and CONFIG GET when allowed."""

    def __init__(self, name: str, client: redis.Redis | Any) -> None:
        self.name = name
        self.client = client
        self.info: dict[str, Any] = client.info()
        self.config_error: str | None = None

    def config(self, parameter: str) -> str | None:
        """The parameter's value, or None when CONFIG is not permitted."""
        if self.config_error is not None:
            return None
        try:
            values: dict[Any, Any] = self.client.config_get(parameter)
        except ResponseError as exc:  # renamed, disabled, or not allowed for this user
            self.config_error = str(exc).split(",")[0]
            return None
        value = values.get(parameter)
        return None if value is None else str(value)

    @property
    def is_primary(self) -> bool:
        return self.info.get("role") == "master"


class _Doctor:
    def __init__(self, settings: RedisSettings, latency_samples: int) -> None:
        self.settings = settings
        self.latency_samples = latency_samples
        self.findings: list[Finding] = []
        self.clients: list[Any] = []
        self._config_reported = False

    def add(
        self, check: str, level: Level, message: str, fix: str = "", node: str | None = None
    ) -> None:
        self.findings.append(Finding(check, level, message, fix, node))

    # -- the three deployments -------------------------------------------------------

    def standalone(self) -> None:
        target = self.settings.target()
        name = target.unix_socket or "{}:{}".format(*target.addresses[0])
        node = self.connect(name, redis_client(self.settings))
        if node is None:
            return
        self.examine(node)
        if not node.is_primary:
            self.add(
                "replication",
                Level.ERROR,
                "this server is a replica: writes fail with READONLY",
                "point sessionhub at the primary, or at the sentinels (redis+sentinel://)",
                name,
            )
            return
        if int(node.info.get("connected_slaves", 0)) == 0:
            self.add(
                "replication",
                Level.INFO,
                "no replica: if this server is lost, so are all sessions, and nothing takes over",
                "for failover, run replicas under Sentinel (redis+sentinel://) or use Cluster",
                name,
            )
        else:
            self.replication(node)

    def sentinel_set(self) -> None:
        target = self.settings.target()
        service = target.service or ""
        answering = []
        master: dict[str, Any] | None = None
        replicas: list[dict[str, Any]] = []
        quorum: str | None = None
        for address in target.addresses:
            name = "{}:{}".format(*address)
            try:
                with node_client(self.settings, address, sentinel=True) as sentinel:
                    master = sentinel.sentinel_master(service)
                    replicas = sentinel.sentinel_slaves(service)
                    quorum = _quorum(sentinel, service)
                answering.append(name)
            except ResponseError as exc:
                self.add(
                    "sentinel",
                    Level.ERROR,
                    f"sentinel does not know service {service!r}: {exc}",
                    "check service_name against `sentinel monitor <name> ...` in sentinel.conf",
                    name,
                )
            except RedisError as exc:
                self.unreachable(name, exc, what="sentinel")
        if not answering or master is None:
            return
        count = len(target.addresses)
        if count < 3:
            self.add(
                "sentinel",
                Level.WARNING,
                f"only {count} sentinel address(es) configured: losing one can stop failover",
                "run at least three sentinels on separate machines and list them all",
            )
        if quorum is not None:
            self.add(
                "sentinel",
                Level.ERROR,
                f"quorum not reachable: {quorum}",
                "start the missing sentinels; they must reach each other",
            )
        if master.get("is_sdown") or master.get("is_odown"):
            self.add(
                "sentinel",
                Level.ERROR,
                "the sentinels see the primary as down",
                "wait for the failover, or check the primary and the replicas",
            )
        self.add(
            "sentinel",
            Level.OK,
            f"{len(answering)}/{count} sentinels answer; primary {master['ip']}:{master['port']}, "
            f"{len(replicas)} replica(s) known",
        )
        primary = self.connect(
            f"{master['ip']}:{master['port']}",
            node_client(self.settings, (master["ip"], int(master["port"]))),
        )
        if primary is not None:
            self.examine(primary)
            down_after = int(master.get("down-after-milliseconds") or 30_000)
            self.replication(primary, sentinel_down_after=down_after)
        if len(replicas) == 1:
            self.add(
                "replication",
                Level.INFO,
                "one replica: after a graceful failover (SENTINEL FAILOVER) the new primary "
                "has none until Sentinel makes the old primary its replica, about 10 s later; "
                "meanwhile logouts (durable ends) and, with min-replicas-to-write, all writes "
                "answer 503",
                "run a second replica: Sentinel moves it to the new primary before it "
                "announces the switch",
            )
        if not replicas:
            self.add(
                "replication",
                Level.ERROR,
                "the primary has no replica: Sentinel has nothing to fail over to",
                "add a replica (replicaof <primary> <port>); Sentinel finds it by itself",
            )
        for replica in replicas:
            name = f"{replica['ip']}:{replica['port']}"
            if replica.get("is_sdown") or replica.get("is_odown"):
                self.add("replication", Level.WARNING, "replica is down", "restart it", name)

    def cluster(self) -> None:
        table = self.cluster_table()
        if table is None:
            return
        primaries = [n for n in table if "master" in n["flags"]]
        failed = [n for n in table if {"fail", "fail?"} & set(n["flags"])]
        covered = {
            slot
            for n in primaries
            if not {"fail", "fail?"} & set(n["flags"])
            for slot in n["slots"]
        }
        for node in failed:
            self.add(
                "cluster",
                Level.ERROR,
                f"node is {'failing' if 'fail' in node['flags'] else 'suspected down'} "
                f"({', '.join(node['flags'])})",
                "restart it, or fail over to one of its replicas (CLUSTER FAILOVER on the replica)",
                node["address"],
            )
        missing = 16384 - len(covered)
        if missing:
            self.add(
                "cluster",
                Level.ERROR,
                f"{missing} of 16384 hash slots have no working primary: "
                "sessions in them cannot be read or written",
                "bring the failed primaries back, or give their slots to others "
                "(redis-cli --cluster fix)",
            )
        else:
            self.add(
                "cluster",
                Level.OK,
                f"all 16384 slots served by {len(primaries)} primaries",
            )
        replicas_of: dict[str, int] = {}
        for node in table:
            if "slave" in node["flags"]:
                replicas_of[node["master"]] = replicas_of.get(node["master"], 0) + 1
        lonely = [n["address"] for n in primaries if not replicas_of.get(n["id"])]
        if lonely:
            self.add(
                "replication",
                Level.INFO,
                f"{len(lonely)} primaries without a replica ({', '.join(lonely)}): "
                "losing one loses its sessions and, with cluster-require-full-coverage, "
                "stops the Cluster",
                "add a replica per primary (redis-cli --cluster add-node --cluster-slave)",
            )
        for node in primaries:
            if node in failed:
                continue
            address = node["address"]
            host, _, port = address.rpartition(":")
            examined = self.connect(address, node_client(self.settings, (host, int(port))))
            if examined is not None:
                self.examine(examined)
                if replicas_of.get(node["id"]):
                    self.replication(examined)

    def cluster_table(self) -> list[dict[str, Any]] | None:
        """The Cluster's nodes as the first seed that answers sees them."""
        for address in self.settings.target().addresses:
            try:
                with node_client(self.settings, address) as seed:
                    # redis-py parses the reply: {"host:port@bus": {...}}
                    nodes: dict[str, dict[str, Any]] = seed.execute_command("CLUSTER NODES")
            except RedisError as exc:
                self.unreachable("{}:{}".format(*address), exc)
                continue
            return [_cluster_node(name, node) for name, node in nodes.items()]
        return None

    # -- one server --------------------------------------------------------------------

    def connect(self, name: str, client: Any) -> _Node | None:
        self.clients.append(client)
        try:
            return _Node(name, client)
        except RedisError as exc:
            self.unreachable(name, exc)
            return None

    def unreachable(self, name: str, exc: Exception, what: str = "server") -> None:
        if isinstance(exc, AuthenticationError):
            fix = "check the username and password (ACL) sessionhub uses"
        elif isinstance(exc, ResponseError):
            fix = "check that this user may run INFO and PING"
        else:
            fix = "check the address, that it is running, the firewall, and the TLS settings"
        self.add(
            "connectivity",
            Level.ERROR,
            f"{what} unreachable: {type(exc).__name__}: {exc}",
            fix,
            name,
        )

    def examine(self, node: _Node) -> None:
        self.add("connectivity", Level.OK, "reachable", node=node.name)
        self.version(node)
        self.latency(node)
        if node.is_primary:
            self.eviction(node)
            self.persistence(node)
        if node.config_error and not self._config_reported:
            self._config_reported = True
            self.add(
                "config",
                Level.INFO,
                f"CONFIG GET is not available ({node.config_error}); "
                "checks used INFO only and some settings could not be seen",
                "nothing to fix on managed Redis; check the provider's settings instead",
                node.name,
            )

    def version(self, node: _Node) -> None:
        product = "valkey" if "valkey_version" in node.info else "redis"
        text = str(node.info.get(f"{product}_version", node.info.get("redis_version", "0")))
        parts = tuple(int(p) for p in text.split(".")[:2] if p.isdigit())
        if parts < MINIMUM_VERSION:
            self.add(
                "version",
                Level.ERROR,
                f"{product} {text} is older than {'.'.join(map(str, MINIMUM_VERSION))}",
                "upgrade the server",
                node.name,
            )
        else:
            self.add("version", Level.OK, f"{product} {text}", node=node.name)

    def latency(self, node: _Node) -> None:
        samples = []
        for _ in range(self.latency_samples):
            started = time.perf_counter()
            node.client.ping()
            samples.append(time.perf_counter() - started)
        median, worst = statistics.median(samples), max(samples)
        message = f"round trip median {median * 1000:.2f} ms, max {worst * 1000:.2f} ms"
        if worst > self.settings.socket_timeout / 2:
            self.add(
                "latency",
                Level.WARNING,
                f"{message}: near socket_timeout ({self.settings.socket_timeout} s)",
                "find the slow link or busy server (redis-cli --latency, SLOWLOG), "
                "or raise socket_timeout and timeout",
                node.name,
            )
        elif median > SLOW_ROUND_TRIP:
            self.add(
                "latency",
                Level.WARNING,
                f"{message}: every request pays it",
                "run Redis close to the application (same zone)",
                node.name,
            )
        else:
            self.add("latency", Level.OK, message, node=node.name)

    def eviction(self, node: _Node) -> None:
        policy = str(node.info.get("maxmemory_policy") or node.config("maxmemory-policy"))
        limit = int(node.info.get("maxmemory", 0) or 0)
        if policy.startswith("allkeys-"):
            self.add(
                "eviction",
                Level.WARNING,
                f"maxmemory-policy {policy}: when memory is full Redis evicts live sessions "
                "(users are logged out at random)",
                "use noeviction (writes fail, sessions stay) or volatile-ttl, "
                "and size maxmemory with headroom",
                node.name,
            )
        elif policy.startswith("volatile-"):
            self.add(
                "eviction",
                Level.INFO,
                f"maxmemory-policy {policy}: sessions all carry a TTL, so when memory is full "
                "they are evicted too"
                + (" (those closest to expiry first)" if policy == "volatile-ttl" else ""),
                "" if policy == "volatile-ttl" else "prefer noeviction or volatile-ttl",
                node.name,
            )
        else:
            headroom = "no maxmemory limit" if not limit else f"maxmemory {limit} bytes"
            self.add("eviction", Level.OK, f"maxmemory-policy {policy}, {headroom}", node=node.name)

    def persistence(self, node: _Node) -> None:
        aof = bool(int(node.info.get("aof_enabled", 0)))
        save = node.config("save")
        if aof:
            self.add("persistence", Level.OK, "append-only file on", node=node.name)
        elif save:
            self.add(
                "persistence",
                Level.OK,
                f"RDB snapshots ({save}), no append-only file",
                node=node.name,
            )
        elif save is None:
            self.add(
                "persistence",
                Level.INFO,
                "no append-only file; RDB snapshot schedule unknown (CONFIG not available)",
                "make sure the provider persists data, or a restart logs everyone out",
                node.name,
            )
        else:
            self.add(
                "persistence",
                Level.WARNING,
                "persistence off (no append-only file, no RDB snapshots): "
                "a restart logs everyone out",
                "appendonly yes (appendfsync everysec), or at least a save schedule",
                node.name,
            )

    def replication(self, node: _Node, sentinel_down_after: int | None = None) -> None:
        """Replicas, lag and min-replicas-to-write; `sentinel_down_after` (ms): under Sentinel."""
        replicas = int(node.info.get("connected_slaves", 0))
        minimum = node.config("min-replicas-to-write")
        # Without CONFIG: INFO shows the count of good replicas only when it is set.
        configured = "min_slaves_good_slaves" in node.info if minimum is None else int(minimum) > 0
        lags = [
            int(value.get("lag", 0))
            for key, value in node.info.items()
            if key.startswith("slave") and isinstance(value, dict)
        ]
        if lags and max(lags) > 10:
            self.add(
                "replication",
                Level.WARNING,
                f"a replica lags {max(lags)} s behind",
                "check the replica and the link",
                node.name,
            )
        if sentinel_down_after is not None:
            self.sentinel_replication(node, configured, sentinel_down_after)
        elif configured:
            self.add(
                "replication",
                Level.OK,
                f"{replicas} replica(s); writes need a replica in sync (min-replicas-to-write)",
                node=node.name,
            )
        else:
            self.add(
                "replication",
                Level.INFO,
                f"{replicas} replica(s); replication is asynchronous, so a failover can lose "
                "the last writes (a logout, a login) made before it",
                "min-replicas-to-write 1 and min-replicas-max-lag 10 narrow that window "
                "(writes then fail, 503, when no replica keeps up)",
                node.name,
            )

    def sentinel_replication(self, node: _Node, configured: bool, down_after: int) -> None:
        """min-replicas-to-write under Sentinel, where a partition makes it matter most.

        A primary cut off from the sentinels (and its replicas) but not from some
        clients is failed over, yet goes on acknowledging those clients' writes,
        logouts included, until it learns it was replaced; the failover then throws
        them away. With min-replicas-to-write it refuses writes once no replica has
        acknowledged for min-replicas-max-lag seconds: kept below the sentinels'
        down-after-milliseconds, it stops before the replica is promoted.
        """
        bound = max(1, down_after // 1000)
        fix = (
            f"min-replicas-to-write 1 and min-replicas-max-lag {min(bound, 10)} on every "
            "server (a replica may become the primary); writes then fail (503) while no "
            "replica keeps up, instead of being lost"
        )
        if not configured:
            self.add(
                "replication",
                Level.WARNING,
                "no min-replicas-to-write: a primary cut off from the sentinels but not from "
                "some clients keeps acknowledging their writes and logouts, which the "
                "failover then throws away",
                fix,
                node.name,
            )
            return
        lag = node.config("min-replicas-max-lag")
        if lag is not None and int(lag) > bound:
            self.add(
                "replication",
                Level.WARNING,
                f"min-replicas-max-lag {lag} s is longer than the sentinels' "
                f"down-after-milliseconds ({down_after} ms): a primary cut off from them "
                "acknowledges writes until after its replica was promoted",
                fix,
                node.name,
            )
            return
        self.add(
            "replication",
            Level.OK,
            "writes need a replica in sync (min-replicas-to-write"
            + (f", max lag {lag} s)" if lag is not None else ")"),
            node=node.name,
        )


def _cluster_node(address: str, node: dict[str, Any]) -> dict[str, Any]:
    """One node of CLUSTER NODES (as redis-py parses it): id, flags, primary, slots."""
    slots: set[int] = set()
    for first, *last in node["slots"]:
        slots.update(range(int(first), int(last[0] if last else first) + 1))
    return {
        "id": node["node_id"],
        "address": address.split("@")[0],
        "flags": [flag for flag in node["flags"].split(",") if flag != "myself"],
        "master": node["master_id"],
        "slots": slots,
    }


def _quorum(sentinel: redis.Redis, service: str) -> str | None:
    """None if the sentinels can agree on a failover, else why not."""
    try:
        sentinel.execute_command("SENTINEL CKQUORUM", service)  # type: ignore[no-untyped-call]
    except ResponseError as exc:
        return str(exc)
    return None

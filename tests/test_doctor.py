"""The doctor, on real deployments: healthy, risky, managed (no CONFIG), broken."""

from __future__ import annotations

import time

from sessionhub.connect import RedisSettings
from sessionhub.doctor import Finding, Level, Report, diagnose
from tests.servers import RedisCluster, RedisSentinelSet, RedisServer, free_port


def _levels(report: Report, check: str) -> set[Level]:
    return {f.level for f in report.of(check)}


def _settings(port: int) -> RedisSettings:
    return RedisSettings(port=port)


def _replicated(primary: RedisServer, replica: RedisServer) -> None:
    """Wait until the replica is attached (the doctor reports what it sees now)."""
    deadline = time.monotonic() + 10
    with primary.client() as client:
        while client.info("replication")["connected_slaves"] < 1:
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)


def _only(report: Report, check: str) -> Finding:
    [finding] = report.of(check)
    return finding


def test_a_healthy_server() -> None:
    server = RedisServer("--appendonly", "yes", "--maxmemory", "100mb").start()
    try:
        report = diagnose(_settings(server.port))
    finally:
        server.cleanup()
    assert report.target == f"redis 127.0.0.1:{server.port} db 0"
    assert report.healthy, report.to_dict()
    assert _only(report, "connectivity").level is Level.OK
    assert _only(report, "version").message.startswith("redis 7.")
    assert (
        _only(report, "eviction").message
        == "maxmemory-policy noeviction, maxmemory 104857600 bytes"
    )
    assert _only(report, "persistence").level is Level.OK
    assert "median" in _only(report, "latency").message
    # One server alone is fine to run, but the doctor says what it does not protect from.
    replication = _only(report, "replication")
    assert (replication.level, "no replica") == (Level.INFO, replication.message[:10])
    assert replication.fix
    assert report.to_dict()["worst"] == "info"


def test_allkeys_eviction_and_no_persistence_are_warned_about() -> None:
    server = RedisServer("--maxmemory-policy", "allkeys-lru").start()  # and --save ""
    try:
        report = diagnose(_settings(server.port))
    finally:
        server.cleanup()
    assert not report.healthy
    eviction = _only(report, "eviction")
    assert eviction.level is Level.WARNING
    assert "evicts live sessions" in eviction.message
    assert "noeviction" in eviction.fix
    persistence = _only(report, "persistence")
    assert persistence.level is Level.WARNING
    assert "appendonly yes" in persistence.fix
    assert report.worst is Level.WARNING


def test_volatile_ttl_is_a_note_not_a_warning() -> None:
    server = RedisServer("--maxmemory-policy", "volatile-ttl", "--save", "900 1").start()
    try:
        report = diagnose(_settings(server.port))
    finally:
        server.cleanup()
    assert _only(report, "eviction").level is Level.INFO
    assert _only(report, "persistence").message == "RDB snapshots (900 1), no append-only file"


def test_without_config_the_doctor_works_from_info() -> None:
    """Managed Redis: CONFIG renamed away. The doctor says so, once, and goes on."""
    server = RedisServer("--rename-command", "CONFIG", "", "--maxmemory-policy", "allkeys-lfu")
    server.start()
    try:
        report = diagnose(_settings(server.port))
    finally:
        server.cleanup()
    config = _only(report, "config")
    assert config.level is Level.INFO
    assert "CONFIG GET is not available" in config.message
    assert _only(report, "eviction").level is Level.WARNING  # INFO still shows the policy
    persistence = _only(report, "persistence")
    assert persistence.level is Level.INFO
    assert "schedule unknown" in persistence.message
    assert _only(report, "connectivity").level is Level.OK


def test_an_unreachable_server_is_an_error_not_an_exception() -> None:
    started = time.monotonic()
    report = diagnose(_settings(free_port()))
    assert time.monotonic() - started < 2
    connectivity = _only(report, "connectivity")
    assert connectivity.level is Level.ERROR
    assert "ConnectionError" in connectivity.message
    assert "running" in connectivity.fix
    assert report.worst is Level.ERROR
    assert [f.check for f in report.findings] == ["connectivity"]


def test_a_wrong_password_is_named() -> None:
    server = RedisServer().start()
    server.client().config_set("requirepass", "right")
    try:
        report = diagnose(RedisSettings(url=f"redis://:wrong@127.0.0.1:{server.port}"))
        good = diagnose(RedisSettings(url=f"redis://:right@127.0.0.1:{server.port}"))
    finally:
        server.cleanup()
    assert "password" in _only(report, "connectivity").fix
    assert "wrong" not in str(report.to_dict())
    assert _only(good, "connectivity").level is Level.OK


def test_a_replica_given_as_the_server_is_an_error() -> None:
    primary = RedisServer().start()
    replica = RedisServer("--replicaof", "127.0.0.1", str(primary.port)).start()
    try:
        _replicated(primary, replica)
        report = diagnose(_settings(replica.port))
        with_replica = diagnose(_settings(primary.port))
    finally:
        replica.cleanup()
        primary.cleanup()
    assert any(f.level is Level.ERROR and "READONLY" in f.message for f in report.of("replication"))
    # The primary has a replica but no min-replicas-to-write: the failover window is named.
    [note] = with_replica.of("replication")
    assert note.level is Level.INFO
    assert "asynchronous" in note.message
    assert "min-replicas-to-write 1" in note.fix


def test_min_replicas_to_write_is_recognised() -> None:
    primary = RedisServer("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10").start()
    replica = RedisServer("--replicaof", "127.0.0.1", str(primary.port)).start()
    try:
        _replicated(primary, replica)
        report = diagnose(_settings(primary.port))
    finally:
        replica.cleanup()
        primary.cleanup()
    [finding] = report.of("replication")
    assert finding.level is Level.OK
    assert "min-replicas-to-write" in finding.message


def test_sentinel_set() -> None:
    servers = RedisSentinelSet(replicas=1).start()
    try:
        sentinels = ",".join(f"{h}:{p}" for h, p in servers.sentinel_addresses)
        report = diagnose(RedisSettings(url=f"redis+sentinel://{sentinels}/{servers.service}"))
        unknown = diagnose(RedisSettings(url=f"redis+sentinel://{sentinels}/nosuch"))
    finally:
        servers.cleanup()
    [summary] = [f for f in report.of("sentinel") if f.level is Level.OK]
    assert summary.message.startswith("3/3 sentinels answer")
    assert f"primary 127.0.0.1:{servers.primary.port}" in summary.message
    assert _levels(report, "connectivity") == {Level.OK}
    assert Level.ERROR not in _levels(report, "sentinel")
    # Warned: no persistence on the test servers, and no min-replicas-to-write.
    assert report.worst is Level.WARNING
    checks = {f.check for f in report.findings if f.level is Level.WARNING}
    assert checks == {"persistence", "replication"}
    assert _levels(unknown, "sentinel") == {Level.ERROR}
    assert "service_name" in unknown.of("sentinel")[0].fix


def test_sentinel_primaries_should_refuse_writes_no_replica_has() -> None:
    """Under Sentinel the doctor asks for min-replicas-to-write, with a lag below down-after."""
    servers = RedisSentinelSet(replicas=1, down_after_ms=5000).start()
    try:
        settings = RedisSettings(url=servers.url)
        unset = diagnose(settings).of("replication")
        with servers.primary.client() as primary:
            primary.config_set("min-replicas-to-write", 1)
            primary.config_set("min-replicas-max-lag", 10)
            too_late = diagnose(settings).of("replication")
            primary.config_set("min-replicas-max-lag", 5)
            kept = diagnose(settings).of("replication")
    finally:
        servers.cleanup()
    [warning] = [f for f in unset if f.level is Level.WARNING]
    assert "cut off from the sentinels" in warning.message
    assert "min-replicas-to-write 1 and min-replicas-max-lag 5" in warning.fix
    assert warning.node == f"127.0.0.1:{servers.primary.port}"
    [lag] = [f for f in too_late if f.level is Level.WARNING]
    assert "min-replicas-max-lag 10 s is longer than" in lag.message
    assert "5000 ms" in lag.message
    assert Level.WARNING not in {f.level for f in kept}
    assert any(f.level is Level.OK and "max lag 5 s" in f.message for f in kept)
    # One replica: the window after a graceful failover is named, with the fix.
    [one] = [f for f in unset if "one replica" in f.message]
    assert one.level is Level.INFO
    assert "second replica" in one.fix


def test_cluster_coverage_then_a_dead_primary() -> None:
    cluster = RedisCluster(primaries=3).start()
    try:
        settings = RedisSettings(url=f"redis+cluster://127.0.0.1:{cluster.ports[0]}")
        healthy = diagnose(settings)
        cluster.nodes[2].kill()
        time.sleep(0.5)
        right_away = diagnose(settings)
        # Once the others agree it is down (node timeout 2 s), its slots are uncovered.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            broken = diagnose(settings)
            if any("hash slots have no working primary" in f.message for f in broken.findings):
                break
            time.sleep(0.5)
    finally:
        cluster.cleanup()

    [coverage] = healthy.of("cluster")
    assert (coverage.level, coverage.message) == (
        Level.OK,
        "all 16384 slots served by 3 primaries",
    )
    assert len(healthy.of("connectivity")) == 3  # every primary was examined
    assert _levels(healthy, "connectivity") == {Level.OK}
    assert {f.level for f in healthy.of("replication")} == {Level.INFO}  # no replicas

    dead = f"127.0.0.1:{cluster.nodes[2].port}"
    # Even before the Cluster marks it failed, the doctor cannot reach it.
    assert any(f.level is Level.ERROR and f.node == dead for f in right_away.findings)
    errors = [f for f in broken.findings if f.level is Level.ERROR]
    assert any(f.node == dead and f.check == "cluster" for f in errors), errors
    [uncovered] = [f for f in errors if "hash slots" in f.message]
    missing = int(uncovered.message.split()[0])
    assert 5000 < missing < 6000  # about a third of 16384
    assert "--cluster fix" in uncovered.fix

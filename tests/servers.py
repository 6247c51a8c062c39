"""Real `redis-server` processes for the tests, on free loopback ports.

Nothing here touches a Redis the suite did not start itself.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from tests.waiting import eventually

__all__ = ["RedisServer", "TlsRedisServer", "free_port", "redis_server_binary"]


def redis_server_binary() -> str:
    path = os.environ.get("SESSIONHUB_REDIS_SERVER") or shutil.which("redis-server")
    if not path:
        raise RuntimeError(
            "redis-server not found: run ./scripts/test.sh (it installs it) "
            "or set SESSIONHUB_REDIS_SERVER"
        )
    return path


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A free loopback port whose Cluster bus port (+10000) is free too."""
    for _ in range(1000):
        port = random.randrange(20_000, 55_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port found")


class RedisServer:
    """One redis-server process. `extra` are extra config directives."""

    def __init__(self, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"sessionhub-redis-{self.port}-"))
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> RedisServer:
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (
                    (self.dir / "redis.log").read_text()
                    if (self.dir / "redis.log").exists()
                    else ""
                )
                raise RuntimeError(f"redis-server exited at start: {log[-2000:]}")
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer")

    def client(self, **options: object) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, **options)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Stop at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class TlsRedisServer(RedisServer):
    """A redis-server that speaks only TLS, with a throwaway CA (`ca_file`) and certificate."""

    def __init__(self, *extra: str) -> None:
        super().__init__()
        self.ca_file, cert, key = _throwaway_certificates(self.dir)
        self.extra = (
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(cert),
            "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "no",
            *extra,
        )  # fmt: skip

    def client(self, **options: object) -> redis.Redis:
        tls: dict[str, object] = {"ssl": True, "ssl_ca_certs": str(self.ca_file)}
        return super().client(**tls, **options)


def _throwaway_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost, signed by it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sessionhub test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class RedisCluster:
    """A Cluster of `primaries` primaries (and `replicas` replicas each) on loopback."""

    def __init__(self, primaries: int = 3, replicas: int = 0) -> None:
        self.nodes = [
            RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
            for _ in range(primaries * (1 + replicas))
        ]
        self.replicas = replicas

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def node_ids(self) -> dict[int, str]:
        """Each node's Cluster id, by port."""
        ids = {}
        for node in self.nodes:
            client: Any = node.client()
            ids[node.port] = client.execute_command("CLUSTER", "MYID").decode()
            client.close()
        return ids

    def start(self, timeout: float = 30) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [node.client().cluster("info") for node in self.nodes]
            if all(info.get("cluster_state") == "ok" for info in infos):
                return self
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach state ok")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class RedisSentinelSet:
    """One primary, `replicas` replicas and three sentinels watching them."""

    service = "sessionhub"

    def __init__(self, replicas: int = 1, down_after_ms: int = 1000) -> None:
        # Redis waits 5 s before a diskless full sync by default; tests cannot.
        fast_sync = ("--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(*fast_sync)
        self.replicas = [
            RedisServer(*fast_sync, "--replicaof", "127.0.0.1", str(self.primary.port))
            for _ in range(replicas)
        ]
        self.sentinels: list[RedisServer] = []
        self.down_after_ms = down_after_ms

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        """The deployment as sessionhub names it (every sentinel, then the service)."""
        where = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        return f"redis+sentinel://{where}/{self.service}"

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def server(self, port: int) -> RedisServer:
        [found] = [server for server in self.servers if server.port == port]
        return found

    def named_primaries(self) -> set[int]:
        """The port each sentinel that answers names as the primary."""
        named = set()
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    address = client.sentinel_get_master_addr_by_name(self.service)
            except redis.ConnectionError:
                continue  # a killed sentinel names nothing
            assert isinstance(address, tuple)
            named.add(int(address[1]))
        return named

    def agreed_primary(self) -> int | None:
        """The primary's port, once every sentinel names the same one."""
        named = self.named_primaries()
        return next(iter(named)) if len(named) == 1 else None

    def is_replica_of(self, server: RedisServer, primary: int) -> bool:
        """Whether `server` replicates `primary` and has caught up (its link is up)."""
        with server.client() as client:
            info: dict[str, Any] = client.info("replication")
        return bool(
            info.get("role") == "slave"
            and info.get("master_port") == primary
            and info.get("master_link_status") == "up"
        )

    def failover(self) -> None:
        """SENTINEL FAILOVER (graceful: the primary is up), as an operator starts it.

        Just after a previous failover a sentinel may not yet have seen a replica
        fit to promote (NOGOODSLAVE): asked again until one accepts.
        """

        def started() -> bool:
            with self.sentinels[0].client() as client:
                return bool(client.execute_command("SENTINEL FAILOVER", self.service))

        eventually(started, 30, "a sentinel to accept SENTINEL FAILOVER")

    def start(self, timeout: float = 30) -> RedisSentinelSet:
        self.primary.start()
        for replica in self.replicas:
            replica.start()
        for _ in range(3):
            port = free_port()
            directory = Path(tempfile.mkdtemp(prefix=f"sessionhub-sentinel-{port}-"))
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} 5000\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            sentinel = _SentinelProcess(config, port)
            sentinel.start()
            self.sentinels.append(sentinel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready():
                return self
            time.sleep(0.1)
        raise RuntimeError("replicas or sentinels did not find each other")

    def _ready(self) -> bool:
        """Replicas connected, and every sentinel knows the others and the replicas.

        Until sentinels have heard of each other (hello messages, every 2 s) they
        cannot reach a quorum: a primary killed before then is never failed over.
        """
        with self.primary.client() as primary:
            info = primary.info("replication")
        states = [
            v["state"] for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
        ]
        if states.count("online") < len(self.replicas):
            return False
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                master = client.sentinel_master(self.service)
            assert isinstance(master, dict)
            if master["num-other-sentinels"] < len(self.sentinels) - 1:
                return False
            if master["num-slaves"] < len(self.replicas):
                return False
        return True

    def cleanup(self) -> None:
        for server in [*self.sentinels, self.primary, *self.replicas]:
            server.cleanup()


class _SentinelProcess(RedisServer):
    def __init__(self, config: Path, port: int) -> None:
        super().__init__(port=port)
        self.config = config

    def start(self, timeout: float = 10) -> RedisServer:
        self.process = subprocess.Popen(
            [redis_server_binary(), str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"sentinel on port {self.port} did not answer")

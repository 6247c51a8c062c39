"""Sentinel failovers under load through two real app servers: nothing acknowledged is undone.

Two uvicorn instances of a Starlette app (``SESSIONHUB_STORE=redis``, a
``redis+sentinel://`` URL, the defaults: durable ends, failover watch), one
primary, two replicas, three sentinels. Logged-in visitors write their
counters and log out while (tests/failover_load.py):

* an operator fails the primary over gracefully (``SENTINEL FAILOVER``), twice
  in a row: no acknowledged write is lost and no acknowledged logout undone,
  checked on the final primary once each old primary has been made a replica
  (when it would have thrown its writes away);
* the primary is killed (SIGKILL) while the link to its replicas is stalled
  (a congested network, through a proxy): every logout acknowledged before
  the kill is there after the failover (writes may be lost: only ends wait
  for a replica).

Every answer is a 200 or a 503 (never a 500). The counts and the longest
request are printed (docs/operating.md quotes them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionhub import RedisStore, SessionManager
from tests.failover_load import FailoverLoad
from tests.proxy import Proxy
from tests.servers import RedisSentinelSet
from tests.waiting import eventually
from tests.web_apps import AppServer, server_env


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[RedisSentinelSet, list[str]]]:
    servers = RedisSentinelSet(replicas=2).start()
    env = server_env(store="redis", redis__url=servers.url)
    apps = [
        AppServer.uvicorn("tests.web_apps:starlette_from_env", env, tmp_path / f"uv{i}.log")
        for i in range(2)
    ]
    try:
        for app in apps:
            app.wait_ready()
        yield servers, [app.url for app in apps]
    finally:
        for app in apps:
            app.stop()
        servers.cleanup()


def _final(servers: RedisSentinelSet, port: int) -> SessionManager:
    """A plain manager on one server: what it holds, not what the apps say."""
    return SessionManager(RedisStore(servers.server(port).client()))


def _new_primary(servers: RedisSentinelSet, old: int) -> int:
    port: int = eventually(
        lambda: (agreed := servers.agreed_primary()) != old and agreed,
        30,
        "every sentinel to name a new primary",
    )
    return port


def _summary(load: FailoverLoad, since: float) -> str:
    answers = load.since(since)
    slowest = max((a.duration for a in answers if a.status == 200), default=0.0)
    span = max(a.started for a in answers) - min(a.started for a in answers)
    return (
        f"{dict(load.statuses(answers))} ({len(answers) / span:.0f}/s), slowest 200 {slowest:.2f} s"
    )


def test_a_graceful_failover_twice_under_load(
    deployment: tuple[RedisSentinelSet, list[str]],
) -> None:
    servers, urls = deployment
    load = FailoverLoad(urls)
    load.start()
    primary = servers.primary.port
    try:
        for round_ in (1, 2):
            settled = time.monotonic()
            eventually(
                lambda: len(load.since(settled)) >= 200,  # noqa: B023
                30,
                "requests before the failover",
            )
            started = time.monotonic()
            servers.failover()
            new = _new_primary(servers, primary)
            # The old primary throws away what it took since the promotion once it
            # is a replica: only then can anything lost show.
            eventually(
                lambda: servers.is_replica_of(servers.server(primary), new),  # noqa: B023
                30,
                "the old primary to be made a replica",
            )
            print(f"\nround {round_}: since the failover began {_summary(load, started)}")
            primary = new
        done = time.monotonic()
        eventually(lambda: len(load.since(done)) >= 100, 30, "requests after the failovers")
    finally:
        load.stop()
    found = load.check(_final(servers, primary))
    print(f"whole run: {_summary(load, 0)}; {found}")
    assert set(load.statuses()) <= {200, 503}, load.statuses()
    assert found.acknowledged_logouts > 0
    assert found.acknowledged_writes > 0
    assert found.undone_logouts == 0
    assert found.lost_writes == 0
    assert not found.beyond_sent


def test_a_killed_primary_keeps_every_acknowledged_logout(
    deployment: tuple[RedisSentinelSet, list[str]],
) -> None:
    servers, urls = deployment
    load = FailoverLoad(urls, logout_share=0.3)
    load.start()
    old = servers.primary
    # The replicas replicate through a link the test can stall (a congested network).
    link = Proxy(old.port).start()
    try:
        for replica in servers.replicas:
            replica.client().replicaof("127.0.0.1", link.port)
        eventually(
            lambda: all(servers.is_replica_of(r, link.port) for r in servers.replicas),
            10,
            "the replicas to replicate through the link",
        )
        eventually(lambda: len(load.since(0, "logout")) >= 50, 30, "logouts before the kill")
        link.stall()
        stalled = time.monotonic()
        try:
            # Ends answered while no replica can receive them: with asynchronous
            # replication alone they would be acknowledged, then lost with the primary.
            eventually(
                lambda: len(load.since(stalled, "logout")) >= 5,
                0.8,  # before the sentinels see the replicas' link down for long
                "logouts answered while the replicas are cut off",
                interval=0.01,
            )
        finally:
            old.kill()
            link.cut()
        killed = time.monotonic()
        new = _new_primary(servers, old.port)
        switched = time.monotonic()
        eventually(lambda: len(load.since(switched)) >= 100, 30, "requests after the failover")
    finally:
        load.stop()
        link.close()
    found = load.check(_final(servers, new))
    print(
        f"\nkill -9: new primary named {switched - killed:.2f} s after the kill; answers "
        f"while the replicas were cut off "
        f"{dict(load.statuses([a for a in load.since(stalled) if a.started < killed]))}; "
        f"since the kill {_summary(load, killed)}; {found}"
    )
    assert set(load.statuses()) <= {200, 503}, load.statuses()
    assert found.acknowledged_logouts > 0
    assert found.undone_logouts == 0
    assert not found.beyond_sent

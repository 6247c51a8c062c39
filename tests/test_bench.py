"""The benchmark's own instruments: they must count what they claim to count.

Fast checks of bench/ (the numbers themselves are never asserted here).
"""

from __future__ import annotations

import copy
from typing import Any

import redis
from bench import report, scale
from bench.contenders import ASYNC, CONTENDERS, SYNC
from bench.drivers import AsgiDriver, WsgiDriver, cookie_value
from bench.redis_meter import Meter

from tests.servers import RedisServer


def _resp_size(*items: bytes) -> int:
    """Bytes of a RESP array of bulk strings (what a client sends)."""
    size = len(b"*%d\r\n" % len(items))
    return size + sum(len(b"$%d\r\n" % len(item)) + len(item) + 2 for item in items)


async def test_meter_counts_commands_sent_not_those_a_script_runs(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    client.flushall()
    worker = redis.Redis(port=redis_server.port)
    worker.set("k", b"v" * 10)
    script = "redis.call('SET', KEYS[1], 'x'); redis.call('GET', KEYS[1]); return 1"

    async def batch(requests: int) -> None:
        for _ in range(requests):
            worker.get("k")
            worker.eval(script, 1, "other")

    usage = await Meter(client).usage(batch, 20)

    assert usage.names == {"get": 1, "eval": 1}
    assert usage.commands == 2
    get_bytes = _resp_size(b"GET", b"k") + len(b"$10\r\n" + b"v" * 10 + b"\r\n")
    eval_bytes = _resp_size(b"EVAL", script.encode(), b"1", b"other") + len(b":1\r\n")
    assert abs(usage.bytes - (get_bytes + eval_bytes)) <= 2
    assert usage.server_us > 0  # the script's two inner commands are inside EVAL's time


async def test_meter_sees_nothing_when_nothing_is_sent(redis_server: RedisServer) -> None:
    async def batch(requests: int) -> None:
        return None

    usage = await Meter(redis_server.client()).usage(batch, 10)
    assert (usage.commands, usage.names, usage.label(), usage.server_us) == (0, {}, "0", 0)
    assert usage.bytes <= 1


def test_fill_reaches_the_count_with_expiring_session_shaped_keys(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    client.flushall()
    client.set("already", b"there")
    assert scale.fill(client, 2_500, b"record") == 2_500
    assert client.dbsize() == 2_500
    key = next(iter(client.scan_iter(match="sh:s:{fill}*")))
    assert client.get(key) == b"record"
    assert 0 < client.pttl(key) <= 3_600_000
    assert scale.fill(client, 2_000, b"record") == 2_500  # never removes


async def test_asgi_driver_calls_the_app_and_reads_its_cookie() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            return
        seen.append(scope)
        headers = [(b"set-cookie", b"sid=abc; Path=/; HttpOnly")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})

    driver = AsgiDriver(app)
    await driver.start()
    reply = await driver.call(driver.prepare("/read", "sid=old"))
    await driver.stop()
    assert (reply.status, reply.body) == (200, b"hello")
    assert cookie_value(reply, "sid") == "abc"
    assert cookie_value(reply, "other") is None
    assert reply.elapsed_ns > 0
    assert seen[0]["path"] == "/read"
    assert (b"cookie", b"sid=old") in seen[0]["headers"]


def test_wsgi_driver_calls_the_app_and_drains_the_body() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Set-Cookie", f"sid={environ['HTTP_COOKIE']}")])
        return [b"a", b"b"]

    driver = WsgiDriver(app)
    reply = driver.call(driver.prepare("/new", "x1"))
    assert (reply.status, reply.body, cookie_value(reply, "sid")) == (201, b"ab", "x1")


def _results(read_extra: float, anon_commands: float) -> dict[str, Any]:
    """Synthetic results: every bare app 10 µs, every peer 10 + 300 µs, floors 100 µs."""
    latency: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    for contender in CONTENDERS:
        base = 10.0 if contender.bare else 310.0
        latency[contender.name] = {
            kind: {"median": base, "p99": base * 2, "n": 1}
            for kind in ("anon", "read", "write", "new")
        }
        usage[contender.name] = {
            kind: {"commands": 1.0, "bytes": 100.0, "label": "get"} for kind in ("anon", "read")
        }
        if contender.is_sessionhub:
            latency[contender.name]["read"]["median"] = 10 + read_extra
            latency[contender.name]["anon"]["median"] = 12.0
            usage[contender.name]["anon"]["commands"] = anon_commands
    peers = [c.name for c in CONTENDERS if not c.bare]
    return {
        "latency": latency,
        "cpu": {
            name: {k: v["median"] * 0.8 for k, v in kinds.items()}
            for name, kinds in latency.items()
        },
        "usage": usage,
        "floors": {f: {"median": 100.0, "p99": 200.0, "cpu": 80.0} for f in (ASYNC, SYNC)},
        "survivors": {name: 50 if "sessionhub" in name else 3 for name in peers},
        "memory": {name: (280, 1) if "sessionhub" in name else (300, 1) for name in peers},
    }


def _met(data: dict[str, Any], *words: str) -> bool:
    """Whether the one target whose name holds all `words` is met."""
    matching = [t for t in report.targets(data) if all(word in t.name for word in words)]
    assert len(matching) == 1, matching
    return matching[0].met


def test_targets_are_judged_from_ratios_of_the_same_run() -> None:
    good = _results(read_extra=125, anon_commands=0)
    assert _met(good, "Starlette", "read extra")
    assert _met(good, "Flask", "read extra")
    assert _met(good, "Starlette", "anonymous: 0 Redis commands")
    assert _met(good, "Starlette", "50 of 50")
    assert _met(good, "bytes per session")
    # write: +300 µs is three round trips, and no faster than the peers' +300 µs
    assert not _met(good, "Starlette", "write extra")
    assert not _met(good, "Flask", "write faster")
    assert _met(good, "Flask", "read faster")

    bad = _results(read_extra=135, anon_commands=1)
    assert not _met(bad, "Starlette", "read extra")
    assert not _met(bad, "Flask", "anonymous: 0 Redis commands")


def test_markdown_names_every_library_and_every_unmet_target() -> None:
    data = _results(read_extra=135, anon_commands=0)
    data["machine"] = {
        "date": "today", "cpu": "cpu", "cores": 2, "python": "3.11", "redis": "7",
        "load_before": (0.0, 0.0, 0.0), "seconds": 1, "versions": {"redis": "8"},
    }  # fmt: skip
    data["clients"] = {"redis.asyncio (hiredis)": 70.0}
    for name in data["latency"]:
        for kind in ("write", "new"):
            data["usage"][name][kind] = copy.deepcopy(data["usage"][name]["read"])
    text = report.markdown(data)
    for contender in CONTENDERS:
        assert contender.name in text
    read_row = next(line for line in text.splitlines() if "Starlette: read extra" in line)
    times = "\N{MULTIPLICATION SIGN}"
    assert read_row.endswith(
        f"| +135 µs = 1.35 {times} 100 µs | **no** | +108 µs = 1.35 {times} 80 µs |"
    )

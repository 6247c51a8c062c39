"""Client binding through real integrations (ASGI and WSGI) on a real Redis.

The client's address comes from X-Forwarded-For (`forwarded_for(1)`), as it
would behind one proxy, so each request can come from where the test says.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from sessionhub.config import ConfigError, Settings
from sessionhub.record import CLIENT_INFO, parse_record
from sessionhub.web.binding import (
    ClientBinding,
    ClientSignals,
    Mismatch,
    forwarded_for,
    network_of,
)
from tests.harness import session_records
from tests.log_records import Records, recording
from tests.test_web_scenarios import warm_up
from tests.web_apps import RoundTrips
from tests.web_clients import Clients, fixtures

PHONE = "Mozilla/5.0 (Linux; Android 14) Mobile"
LAPTOP = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"


kind, open_client = fixtures()


@pytest.fixture
def log() -> Iterator[Records]:
    with recording("sessionhub") as records:
        yield records


def client_from(user_agent: str, address: str) -> dict[str, str | bytes]:
    return {"User-Agent": user_agent, "X-Forwarded-For": f"198.51.100.1, {address}"}


def stored_client_info(store: redis.Redis) -> Any:
    [key] = session_records(store)
    record = parse_record(store.get(key))  # type: ignore[arg-type]
    raw = record.fields.get(CLIENT_INFO)
    return None if raw is None else json.loads(raw)


def test_end_ends_a_session_used_from_another_client(
    open_client: Clients, redis_client: redis.Redis, log: Records
) -> None:
    seen: list[Mismatch] = []
    binding = ClientBinding(action="end", client_ip=forwarded_for(1), on_mismatch=seen.append)
    client = open_client(client_binding=binding)
    client.post("/login", client_from(PHONE, "203.0.113.7"), user="alice")
    stolen = client.cookie
    bound = stored_client_info(redis_client)["bound"]
    assert bound["ua"] == PHONE
    assert bound["net"] == "203.0.113.0/24"
    # The same phone, another address in its /24: still the same client.
    same = client.get("/read", client_from(PHONE, "203.0.113.250"))
    assert same.json()["principal"] == "alice"
    assert seen == []

    thief = client.get("/read", client_from(LAPTOP, "192.0.2.9"))
    assert thief.json() == {"data": {}, "principal": None}
    assert any(c.startswith("session=; ") and "Max-Age=0" in c for c in thief.set_cookies())
    assert session_records(redis_client) == []  # deleted in the store, not only for this request
    [mismatch] = seen
    assert mismatch.principal == "alice"
    assert mismatch.action == "end"
    assert mismatch.changed == ("user_agent", "network")
    assert mismatch.recorded == ClientSignals(PHONE, "203.0.113.0/24")
    assert mismatch.seen == ClientSignals(LAPTOP, "192.0.2.0/24")
    [warning] = [r for r in log.records if r.getMessage() == "session used from another client"]
    assert warning.levelno == logging.WARNING
    assert warning.session_handle == mismatch.handle  # type: ignore[attr-defined]
    assert stolen is not None
    assert stolen not in repr(warning.__dict__)
    # The rightful client's next request finds the session gone too.
    rightful = {**client_from(PHONE, "203.0.113.7"), "Cookie": f"session={stolen}"}
    again = client.get("/read", rightful)
    assert again.json()["principal"] is None


def test_alert_reports_and_keeps_the_session(
    open_client: Clients, trips: RoundTrips, redis_client: redis.Redis
) -> None:
    seen: list[Mismatch] = []
    binding = ClientBinding(action="alert", client_ip=forwarded_for(1), on_mismatch=seen.append)
    client = open_client(client_binding=binding)
    warm_up(client)  # every script loaded: the counts below are the steady state
    client.post("/write", client_from(PHONE, "203.0.113.7"), key="cart", value="1 fig")
    before = trips.count
    client.post("/login", client_from(PHONE, "203.0.113.7"), user="bob")
    assert trips.count - before == 2  # load + rotate: the signals ride on the login's write
    before = trips.count
    moved = client.get("/read", client_from(PHONE, "198.51.100.20"))
    assert trips.count - before == 1  # the check itself costs nothing
    assert moved.json()["principal"] == "bob"
    assert moved.set_cookies() == []
    [mismatch] = seen
    assert mismatch.action == "alert"
    assert mismatch.changed == ("network",)
    assert len(session_records(redis_client)) == 1


def test_off_by_default_records_and_compares_nothing(
    open_client: Clients, redis_client: redis.Redis
) -> None:
    assert Settings.load().client_binding.action == "off"
    client = open_client(client_binding=ClientBinding(client_ip=forwarded_for(1)))
    client.post("/login", client_from(PHONE, "203.0.113.7"), user="carol")
    assert stored_client_info(redis_client) is None
    elsewhere = client.get("/read", client_from(LAPTOP, "192.0.2.9"))
    assert elsewhere.json()["principal"] == "carol"


def test_anonymous_sessions_are_not_bound(open_client: Clients, redis_client: redis.Redis) -> None:
    seen: list[Mismatch] = []
    binding = ClientBinding(action="end", client_ip=forwarded_for(1), on_mismatch=seen.append)
    client = open_client(client_binding=binding)
    client.post("/write", client_from(PHONE, "203.0.113.7"), key="cart", value="2 pears")
    assert stored_client_info(redis_client) is None
    elsewhere = client.get("/read", client_from(LAPTOP, "192.0.2.9"))
    assert elsewhere.json()["data"] == {"cart": "2 pears"}
    assert seen == []


def test_logging_in_again_records_the_new_client(
    open_client: Clients, redis_client: redis.Redis
) -> None:
    seen: list[Mismatch] = []
    binding = ClientBinding(action="alert", client_ip=forwarded_for(1), on_mismatch=seen.append)
    client = open_client(client_binding=binding)
    client.post("/login", client_from(PHONE, "203.0.113.7"), user="dave")
    # Signing in again proves who the client is: from now on the laptop is the client.
    client.post("/login", client_from(LAPTOP, "192.0.2.9"), user="dave")
    assert len(seen) == 1  # the load of the second login
    assert stored_client_info(redis_client)["bound"]["ua"] == LAPTOP
    assert client.get("/read", client_from(LAPTOP, "192.0.2.9")).json()["principal"] == "dave"
    assert len(seen) == 1
    client.get("/read", client_from(PHONE, "203.0.113.7"))
    assert seen[-1].recorded == ClientSignals(LAPTOP, "192.0.2.0/24")


def test_only_the_chosen_signals_are_compared(open_client: Clients) -> None:
    seen: list[Mismatch] = []
    binding = ClientBinding(
        action="end", user_agent=False, client_ip=forwarded_for(1), on_mismatch=seen.append
    )
    client = open_client(client_binding=binding)
    client.post("/login", client_from(PHONE, "203.0.113.7"), user="frank")
    new_browser = client.get("/read", client_from(LAPTOP, "203.0.113.7"))
    assert new_browser.json()["principal"] == "frank"
    other_network = client.get("/read", client_from(PHONE, "203.0.114.7"))
    assert other_network.json()["principal"] is None
    assert [each.changed for each in seen] == [("network",)]


@pytest.mark.parametrize("kind", ["starlette", "flask"])
def test_a_failing_callback_does_not_fail_the_request(open_client: Clients, log: Records) -> None:
    def broken(mismatch: Mismatch) -> None:
        raise RuntimeError("the alerting system is down")

    binding = ClientBinding(action="alert", client_ip=forwarded_for(1), on_mismatch=broken)
    client = open_client(client_binding=binding)
    client.post("/login", client_from(PHONE, "203.0.113.7"), user="gina")
    reply = client.get("/read", client_from(LAPTOP, "203.0.113.7"))
    assert reply.status == 200
    assert reply.json()["principal"] == "gina"
    assert "client binding callback failed" in log.messages()


# -- the parts, without a framework -----------------------------------------------------


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    return RoundTrips(monkeypatch)


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("::ffff:203.0.113.77", "203.0.113.0/24"),  # IPv4 written as IPv6
        ("2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (" 10.1.2.3 ", "10.1.2.0/24"),
        ("not an address", None),
        ("203.0.113.77:8080", None),
        ("", None),
        (None, None),
    ],
)
def test_network_of(address: str | None, network: str | None) -> None:
    assert network_of(address) == network


def test_prefixes_are_configurable() -> None:
    assert network_of("203.0.113.77", ipv4_prefix=16) == "203.0.0.0/16"
    assert network_of("203.0.113.77", ipv4_prefix=32) == "203.0.113.77/32"
    assert network_of("2001:db8:aa:bb::1", ipv6_prefix=48) == "2001:db8:aa::/48"


def test_forwarded_for_trusts_only_the_proxies_entries() -> None:
    one, two = forwarded_for(1), forwarded_for(2)
    spoofed = {"x-forwarded-for": "6.6.6.6, 203.0.113.7, 10.0.0.2"}
    assert one(spoofed, "10.0.0.3") == "10.0.0.2"
    assert two(spoofed, "10.0.0.3") == "203.0.113.7"
    assert two({"x-forwarded-for": "10.0.0.2"}, "10.0.0.3") is None  # not through both proxies
    assert one({}, "10.0.0.3") is None
    real_ip = forwarded_for(1, header="X-Real-IP")
    assert real_ip({"x-real-ip": "203.0.113.9"}, None) == "203.0.113.9"
    with pytest.raises(ValueError, match="hops must be at least 1"):
        forwarded_for(0)


def test_the_peer_address_is_the_default() -> None:
    binding = ClientBinding(action="alert")
    headers = {"user-agent": "x" * 2000}
    seen = binding.observe(headers, "2001:db8::5")
    assert seen == ClientSignals("x" * 512, "2001:db8::/64")  # long agents are cut
    assert binding.observe({}, None) == ClientSignals(None, None)
    assert ClientBinding().observe(headers, "2001:db8::5") is None  # off: nothing to do


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONHUB_CLIENT_BINDING__ACTION", "end")
    monkeypatch.setenv("SESSIONHUB_CLIENT_BINDING__IPV6_PREFIX", "56")
    binding = Settings.load().flow().binding
    assert (binding.action, binding.ipv6_prefix, binding.ipv4_prefix) == ("end", 56, 24)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"action": "block"}, "client_binding.action: Input should be 'off', 'alert' or 'end'"),
        ({"ipv4_prefix": 33}, "ipv4_prefix must be between 0 and 32"),
        ({"ipv6_prefix": -1}, "ipv6_prefix must be between 0 and 128"),
        ({"action": "alert", "user_agent": False, "ip": False}, "needs user_agent or ip"),
    ],
)
def test_bad_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.load(client_binding=values)


def test_a_variable_one_underscore_short_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONHUB_CLIENT_BINDING_ACTION", "end")
    with pytest.raises(ConfigError, match="SESSIONHUB_CLIENT_BINDING__ACTION"):
        Settings.load()

"""The `sessionhub` operator commands against a real Redis holding real sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from sessionhub import RedisStore, SessionManager
from sessionhub.cli import app
from sessionhub.ids import is_handle
from tests.servers import RedisCluster, RedisSentinelSet, RedisServer

ROOT = Path(__file__).resolve().parent.parent
EVIL = "<b>[bold]mallory\x1b[31m"


def run(*args: str, url: str) -> Any:
    return CliRunner().invoke(app, [*args, "--url", url])


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


class Sessions:
    """Real sessions made through the library, as an application would."""

    def __init__(self, client: redis.Redis | redis.cluster.RedisCluster) -> None:
        self.store = RedisStore(client)
        self.manager = SessionManager(self.store, clock=self.clock)
        self._last = 0.0
        self.ids: dict[str, str] = {}  # handle -> id

    def clock(self) -> float:
        """Real time, but strictly increasing by 10 ms a call: an order to every session."""
        self._last = max(time.time(), self._last + 0.01)
        return self._last

    def login(self, user: str, **client_info: str) -> str:
        session = self.manager.load(None)
        session["cart"] = {"sku-1": 2}
        self.manager.login(session, user)
        session.client_info = client_info
        outcome = self.manager.commit(session)
        assert outcome.id is not None
        assert session.handle is not None
        self.ids[session.handle] = outcome.id
        return session.handle

    def anonymous(self) -> str:
        session = self.manager.load(None)
        session["visits"] = 1
        outcome = self.manager.commit(session)
        assert outcome.id is not None
        assert session.handle is not None
        self.ids[session.handle] = outcome.id
        return session.handle

    def alive(self, handle: str) -> bool:
        return not self.manager.load(self.ids[handle]).is_new


@pytest.fixture
def sessions(redis_client: redis.Redis) -> Sessions:
    return Sessions(redis_client)


@pytest.fixture
def url(redis_server: RedisServer, redis_client: redis.Redis) -> str:
    return redis_server.url  # redis_client: flushed before each test


# -- sessions list / show / end --------------------------------------------------------------


def test_list_shows_every_session_most_recent_first(sessions: Sessions, url: str) -> None:
    alice = sessions.login("alice", ua="Firefox", ip="10.0.0.1")
    anonymous = sessions.anonymous()
    bob = sessions.login("bob")

    result = run("sessions", "list", "--json", url=url)
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [row["handle"] for row in listed] == [bob, anonymous, alice]
    by_handle = {row["handle"]: row for row in listed}
    assert by_handle[alice]["principal"] == "alice"
    assert by_handle[alice]["client_info"] == {"ua": "Firefox", "ip": "10.0.0.1"}
    assert by_handle[anonymous]["principal"] is None
    assert by_handle[bob]["expires_at"] - time.time() == pytest.approx(1800, abs=60)

    table = run("sessions", "list", url=url)
    assert table.exit_code == 0
    assert "3 most recently used session(s)" in table.stdout
    for handle in (alice, anonymous, bob):
        assert handle in table.stdout
    assert "ua=Firefox, ip=10.0.0.1" in table.stdout
    assert "29m" in table.stdout  # expires in


def test_list_of_one_user_reads_the_index(sessions: Sessions, url: str) -> None:
    first = sessions.login("alice")
    sessions.login("bob")
    second = sessions.login("alice")

    result = run("sessions", "list", "--user", "alice", "--json", url=url)
    assert result.exit_code == 0
    assert [row["handle"] for row in json.loads(result.stdout)] == [second, first]

    limited = run("sessions", "list", "--user", "alice", "--limit", "1", "--json", url=url)
    assert [row["handle"] for row in json.loads(limited.stdout)] == [second]
    nobody = run("sessions", "list", "--user", "carol", "--json", url=url)
    assert nobody.exit_code == 0
    assert json.loads(nobody.stdout) == []


def test_list_limit_keeps_the_most_recently_used(sessions: Sessions, url: str) -> None:
    handles = [sessions.login(f"user-{n}") for n in range(5)]
    result = run("sessions", "list", "--limit", "2", "--json", url=url)
    assert [row["handle"] for row in json.loads(result.stdout)] == handles[::-1][:2]


def test_text_output_escapes_what_users_control(sessions: Sessions, url: str) -> None:
    handle = sessions.login(EVIL, ua="agent\x1b]0;owned\x07")
    table = run("sessions", "list", url=url)
    assert table.exit_code == 0
    assert "\x1b" not in table.stdout
    assert "\x07" not in table.stdout
    assert r"<b>[bold]mallory\x1b[31m" in table.stdout  # rich markup not applied either
    shown = run("sessions", "show", handle, url=url)
    assert "\x1b" not in shown.stdout
    assert r"\u001b]0;owned\u0007" in shown.stdout  # as JSON escapes
    assert json.loads(run("sessions", "show", handle, "--json", url=url).stdout)["principal"] == (
        EVIL
    )


def test_show_one_session(sessions: Sessions, url: str) -> None:
    handle = sessions.login("alice", ua="Firefox")
    result = run("sessions", "show", handle, "--json", url=url)
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["handle"] == handle
    assert shown["principal"] == "alice"
    assert shown["client_info"] == {"ua": "Firefox"}
    assert shown["attributes"] == {"cart": len(b'{"sku-1":2}')}  # names and sizes only
    assert shown["version"] >= 1
    assert 1700 < shown["ttl_seconds"] <= 1800
    assert shown["idle_timeout_seconds"] == 1800

    text = run("sessions", "show", handle, url=url).stdout
    assert handle in text
    assert "alice" in text
    assert "sku-1" not in text


def test_show_survives_unreadable_client_info(
    sessions: Sessions, url: str, redis_client: redis.Redis
) -> None:
    handle = sessions.login("alice")
    key = sessions.store.commands.key(handle)
    redis_client.set(key, redis_client.get(key) + b"\n!c\t{broken", keepttl=True)  # type: ignore[operator]
    result = run("sessions", "show", handle, "--json", url=url)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["client_info"] == {"unreadable": "{broken"}
    assert handle in run("sessions", "list", url=url).stdout  # the listing goes on too


def test_end_one_session(sessions: Sessions, url: str) -> None:
    ended, kept = sessions.login("alice"), sessions.login("alice")
    result = run("sessions", "end", ended, url=url)
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ended session {ended}"
    assert not sessions.alive(ended)
    assert sessions.alive(kept)

    again = run("sessions", "end", ended, url=url)
    assert again.exit_code == 1
    assert again.stderr.strip() == f"error: no live session {ended}"


def test_end_every_session_of_a_user(sessions: Sessions, url: str) -> None:
    first, second = sessions.login("alice"), sessions.login("alice")
    bob = sessions.login("bob")
    result = run("sessions", "end", "--user", "alice", url=url)
    assert result.exit_code == 0
    assert lines_of(result.stdout)[0] == "ended 2 session(s) of alice"
    assert set(lines_of(result.stdout)[1:]) == {f"  {first}", f"  {second}"}
    assert not sessions.alive(first)
    assert not sessions.alive(second)
    assert sessions.alive(bob)
    assert json.loads(run("sessions", "list", "--user", "alice", "--json", url=url).stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sessions", "show", "not-a-handle"], "not a session handle (12 characters)"),
        (["sessions", "end", "x" * 300], "looks like a session id"),
        (["sessions", "end"], "give a session handle or --user, not both"),
        (["sessions", "end", "A" * 23, "--user", "alice"], "not both"),
        (["sessions", "list", "--user", ""], "principal must be a non-empty string"),
        (["monitor", "--from", "yesterday"], "--from takes $, 0, an event id"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    sessions: Sessions, url: str, args: list[str], message: str
) -> None:
    handle = sessions.login("alice")
    result = run(*args, url=url)
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = lines_of(result.stderr)
    assert line.startswith("error: ")
    assert message in line
    assert sessions.alive(handle)  # nothing was ended


def fragments(session_id: str, size: int = 12) -> list[str]:
    """Every piece of `session_id` long enough to be worth finding in an output."""
    return [session_id[i : i + size] for i in range(len(session_id) - size + 1)]


@pytest.mark.parametrize(
    "args",
    [
        ["sessions", "end", "{id}"],
        ["sessions", "show", "{id}"],
        ["sessions", "end", "--user", "{id}"],
        ["sessions", "list", "--user", "{id}"],
        ["sessions", "end", "A" * 23, "{id}"],  # an extra argument
        ["sessions", "{id}"],  # no such command
        ["{id}"],
        ["monitor", "--from", "{id}"],
        ["monitor", "--from", "-{id}"],
        ["stats", "--config", "{id}"],
        ["stats", "--url", "{id}"],
        ["stats", "--url", "x{id}://host"],
    ],
)
def test_no_message_repeats_a_session_id(sessions: Sessions, url: str, args: list[str]) -> None:
    handle = sessions.login("alice")
    session_id = sessions.ids[handle]
    given = [arg.replace("{id}", session_id) for arg in args]
    result = run(*given, url=url) if "--url" not in args else CliRunner().invoke(app, given)
    assert result.exit_code == 2, result.output
    for piece in fragments(session_id):
        assert piece not in result.output
    assert sessions.alive(handle)


def test_the_sessionhub_command_prints_no_id_it_was_given(sessions: Sessions, url: str) -> None:
    handle = sessions.login("alice")
    session_id = sessions.ids[handle]
    command = Path(sys.executable).with_name("sessionhub")
    for args in (["sessions", "end", session_id], ["sessions", "end", handle, session_id]):
        done = subprocess.run(
            [str(command), *args, "--url", url], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2
        assert done.stdout == ""
        assert "error" in done.stderr.lower()
        for piece in fragments(session_id):
            assert piece not in done.stderr
    assert sessions.alive(handle)


def test_unreachable_redis_is_one_line_and_exit_1() -> None:
    server = RedisServer().start()
    url = server.url
    server.cleanup()  # the port is now closed
    for args in (["sessions", "list"], ["stats"], ["sessions", "end", "A" * 23], ["monitor"]):
        result = run(*args, url=url)
        assert result.exit_code == 1, args
        [line] = lines_of(result.stderr)
        assert line.startswith("error: Redis at redis 127.0.0.1:")
        assert "ConnectionError" in line


def test_a_bad_url_is_a_settings_error(url: str) -> None:
    result = run("stats", url="http://127.0.0.1:1")
    assert result.exit_code == 2
    [line] = lines_of(result.stderr)
    assert "unsupported Redis URL scheme 'http'" in line


# -- stats --------------------------------------------------------------------------------------


def test_stats_counts_sessions_users_rates_and_memory(
    sessions: Sessions, url: str, redis_client: redis.Redis
) -> None:
    for user in ("alice", "alice", "bob"):
        sessions.login(user)
    anonymous = sessions.anonymous()
    ended = sessions.login("carol")
    sessions.manager.end_session(ended)
    assert anonymous

    result = run("stats", "--json", "--window", "1", url=url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sessions"] == 4  # every record, anonymous included
    assert report["tracked_sessions"] == 3  # logged in
    assert report["users"] == 2
    assert report["per_minute"] == {
        "created": 4.0,
        "rotated": 0.0,
        "authenticated": 4.0,
        "deleted": 1.0,
        "expired": 0.0,
    }
    assert report["rates_complete"] is True
    memory = report["memory_bytes"]
    keys = list(redis_client.scan_iter("sh:*"))
    assert memory["total"] == sum(redis_client.memory_usage(key, samples=0) or 0 for key in keys)
    assert memory["total"] == sum(size for kind, size in memory.items() if kind != "total")
    assert memory["records"] > 0
    assert memory["streams"] > 0
    [node] = report["nodes"]
    assert node["sessions"] == 4
    assert node["memory_bytes"] == memory["total"]

    text = run("stats", "--window", "1", url=url)
    assert "sessions (records, scanned)" in text.stdout
    assert "logged-in users" in text.stdout


def test_a_moved_marker_is_neither_listed_nor_counted(
    sessions: Sessions, url: str, redis_client: redis.Redis
) -> None:
    """A Cluster login leaves "!>new-handle" under the old key for a few seconds."""
    handle = sessions.anonymous()
    moved = sessions.anonymous()
    key = sessions.store.commands.key(moved)
    redis_client.set(key, b"!>" + handle.encode(), px=10_000)
    report = json.loads(run("stats", "--json", "--window", "1", url=url).stdout)
    assert report["sessions"] == 1
    listed = json.loads(run("sessions", "list", "--json", url=url).stdout)
    assert [entry["handle"] for entry in listed] == [handle]
    shown = run("sessions", "show", moved, url=url)
    assert shown.exit_code == 1
    assert "no live session" in shown.output


def test_stats_on_sentinel_names_the_primary_not_the_sentinels() -> None:
    servers = RedisSentinelSet(replicas=0).start()
    try:
        Sessions(servers.primary.client()).login("alice")
        result = run("stats", "--json", url=servers.url)
    finally:
        servers.cleanup()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [node] = report["nodes"]
    assert node["node"] == f"127.0.0.1:{servers.primary.port}"
    assert node["sessions"] == 1
    assert report["target"].startswith("sentinel ")  # the deployment, as configured


def test_stats_without_scan_uses_the_books_only(sessions: Sessions, url: str) -> None:
    sessions.login("alice")
    sessions.anonymous()
    report = json.loads(run("stats", "--no-scan", "--json", url=url).stdout)
    assert report["tracked_sessions"] == 1
    assert "sessions" not in report
    assert "memory_bytes" not in report


def test_stats_per_primary_on_a_cluster(redis_cluster: RedisCluster) -> None:
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    for node in client.get_primaries():  # type: ignore[no-untyped-call]
        node.redis_connection.flushall()
    sessions = Sessions(client)
    for n in range(30):
        sessions.login(f"user-{n}")
    for _ in range(10):
        sessions.anonymous()
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in redis_cluster.ports)

    result = run("stats", "--json", url=url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sessions"] == 40
    assert report["tracked_sessions"] == 30
    assert report["users"] == 30
    nodes = report["nodes"]
    assert len(nodes) == 3
    assert sum(node["sessions"] for node in nodes) == 40
    assert sum(node["tracked_sessions"] for node in nodes) == 30
    assert all(node["sessions"] > 0 for node in nodes)  # spread over the primaries
    text = run("stats", url=url).stdout
    assert "per primary" in text
    for node in nodes:
        assert node["node"] in text

    listed = json.loads(run("sessions", "list", "--limit", "100", "--json", url=url).stdout)
    assert {row["handle"] for row in listed} == set(sessions.ids)
    # The streams of every slot, read one by one.
    events = events_of(run("monitor", "--from", "0", "--no-follow", "--json", url=url).stdout)
    assert sorted(e["type"] for e in events) == ["authenticated"] * 30 + ["created"] * 30
    assert {e["handle"] for e in events} == set(sessions.ids) - {
        row["handle"] for row in listed if row["principal"] is None
    }
    client.close()


# -- monitor ------------------------------------------------------------------------------------


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines_of(stdout)]


def test_monitor_prints_retained_events_and_resumes_from_an_id(
    sessions: Sessions, url: str
) -> None:
    alice = sessions.login("alice")
    sessions.manager.end_session(alice)
    result = run("monitor", "--from", "0", "--no-follow", "--json", url=url)
    assert result.exit_code == 0
    events = events_of(result.stdout)
    assert [(e["type"], e["handle"]) for e in events] == [
        ("created", alice),
        ("authenticated", alice),
        ("deleted", alice),
    ]
    assert events[2]["reason"] == "admin"
    assert events[2]["principal"] == "alice"

    bob = sessions.login("bob")
    resumed = run("monitor", "--from", events[-1]["id"], "--no-follow", "--json", url=url)
    assert [(e["type"], e["handle"]) for e in events_of(resumed.stdout)] == [
        ("created", bob),
        ("authenticated", bob),
    ]
    recent = run("monitor", "--from", "10m", "--no-follow", url=url)
    assert len(lines_of(recent.stdout)) == 5
    text = lines_of(recent.stdout)[2]
    assert text.split()[0] == events[2]["id"]
    assert "deleted" in text
    assert alice in text
    assert "alice" in text
    assert "reason admin" in text


def test_monitor_in_a_consumer_group_resumes_after_what_it_printed(
    sessions: Sessions, url: str
) -> None:
    handles = [sessions.login(f"user-{n}") for n in range(3)]  # 6 events
    first = run("monitor", "--group", "ops", "--from", "0", "--count", "4", "--json", url=url)
    second = run("monitor", "--group", "ops", "--no-follow", "--json", url=url)
    seen = events_of(first.stdout) + events_of(second.stdout)
    assert len(events_of(first.stdout)) == 4
    assert [e["handle"] for e in seen if e["type"] == "created"] == handles
    assert len({(e["id"], e["handle"], e["type"]) for e in seen}) == 6
    assert events_of(run("monitor", "--group", "ops", "--no-follow", url=url).stdout) == []


def test_monitor_follows_new_events_live(sessions: Sessions, url: str) -> None:
    env = {**os.environ, "SESSIONHUB_REDIS__URL": url}
    process = subprocess.Popen(
        [sys.executable, "-m", "sessionhub.cli", "monitor", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        time.sleep(1.5)  # started and positioned at the streams' ends
        handle = sessions.login("alice")
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    printed = lines_of(out)
    assert [line.split()[2] for line in printed] == ["created", "authenticated"]
    assert all(handle in line and "alice" in line for line in printed)
    assert sessions.ids[handle] not in out


# -- doctor and admin ----------------------------------------------------------------------------


def test_doctor_reports_and_exits_by_the_worst_finding(url: str) -> None:
    result = run("doctor", "--json", url=url)
    assert result.exit_code == 0  # the test server: warnings only (no persistence)
    report = json.loads(result.stdout)
    assert report["worst"] == "warning"
    assert {f["check"] for f in report["findings"]} >= {"connectivity", "version", "persistence"}
    strict = run("doctor", "--strict", url=url)
    assert strict.exit_code == 1
    assert "appendonly yes" in strict.stdout  # says what to fix
    assert strict.stdout.strip().endswith("worst: warning")


def test_doctor_exits_1_on_errors() -> None:
    replica_of = RedisServer().start()
    replica = RedisServer("--replicaof", "127.0.0.1", str(replica_of.port)).start()
    try:
        result = run("doctor", url=replica.url)
        assert result.exit_code == 1
        assert "replica: writes fail with READONLY" in result.stdout
    finally:
        replica.cleanup()
        replica_of.cleanup()


def test_admin_refuses_to_start_without_a_password(url: str, tmp_path: Path) -> None:
    env_free = {k: v for k, v in os.environ.items() if k != "SESSIONHUB_ADMIN_PASSWORD"}
    runner = CliRunner(env={**env_free, "SESSIONHUB_ADMIN_PASSWORD": ""})
    result = runner.invoke(app, ["admin", "--url", url])
    assert result.exit_code == 2
    assert "the dashboard needs a password" in result.stderr
    short = tmp_path / "password"
    short.write_text("short\n")
    result = runner.invoke(app, ["admin", "--url", url, "--password-file", str(short)])
    assert result.exit_code == 2
    assert "at least 12 characters" in result.stderr
    missing = runner.invoke(app, ["admin", "--password-file", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "cannot read the password file" in missing.stderr


def test_handles_listed_are_handles_never_ids(sessions: Sessions, url: str) -> None:
    for user in ("alice", "bob"):
        sessions.login(user)
    sessions.anonymous()
    outputs = [
        run("sessions", "list", url=url).stdout,
        run("sessions", "list", "--json", url=url).stdout,
        run("monitor", "--from", "0", "--no-follow", "--json", url=url).stdout,
    ]
    for row in json.loads(outputs[1]):
        assert is_handle(row["handle"])
    for session_id in sessions.ids.values():
        assert all(session_id not in output for output in outputs)

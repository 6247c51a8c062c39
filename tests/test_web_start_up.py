"""What every integration says at start-up: a memory store nobody chose is one warning."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.log_records import Records, recording
from tests.servers import RedisServer
from tests.web_apps import KINDS, AppServer, Client, server_env

MEMORY_WARNING = "no store is set, so sessions are kept in this process's memory"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SESSIONHUB_* variables and no .env from outside: only what a test sets."""
    for name in list(os.environ):
        if name.startswith("SESSIONHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def serve_a_while(kind: str, conf: dict[str, Any]) -> None:
    """Build `kind`'s app and serve a few requests (Starlette and FastAPI build their
    middleware at the first call, as a server's lifespan start-up would)."""
    client = Client(kind, conf)
    try:
        for _ in range(2):
            assert client.get("/anon").status == 200
        assert client.post("/write", key="cart", value="1 pear").status == 200
        assert client.get("/read").json()["data"] == {"cart": "1 pear"}
    finally:
        client.close()


def memory_warnings(records: Records) -> list[str]:
    return [message for message in records.messages() if MEMORY_WARNING in message]


@pytest.mark.parametrize("kind", KINDS)
def test_a_memory_store_nobody_chose_is_one_warning(kind: str, redis_server: RedisServer) -> None:
    with recording("sessionhub") as records:
        for chosen in ("memory", "redis"):  # chosen: nothing to warn about
            serve_a_while(kind, {"store": chosen, "redis": {"url": redis_server.url}})
        assert memory_warnings(records) == []
        serve_a_while(kind, {})
    [warning] = memory_warnings(records)
    assert "SESSIONHUB_STORE=redis and SESSIONHUB_REDIS__URL=" in warning
    assert "gunicorn" in warning


def wait_for(found: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not found():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("server", "processes"),
    [
        (lambda env, log: AppServer.uvicorn("tests.web_apps:starlette_from_env", env, log), 1),
        (lambda env, log: AppServer.gunicorn("tests.web_apps:flask_from_env()", env, log), 2),
    ],
    ids=["uvicorn", "gunicorn -w 2"],
)
def test_each_server_process_says_it_once(
    server: Callable[[dict[str, str], Path], AppServer], processes: int, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"

    def said() -> int:
        return log.read_text().count(MEMORY_WARNING)

    app_server = server(server_env(), log)
    try:
        app_server.wait_ready()
        wait_for(lambda: said() == processes, f"{processes} warning(s) in {log.read_text()}")
        for _ in range(10):
            assert httpx.get(app_server.url + "/anon").text == "anon"
    finally:
        app_server.stop()
    assert said() == processes  # one per process, at its start-up: none per request
    assert "SESSIONHUB_STORE=redis" in log.read_text()

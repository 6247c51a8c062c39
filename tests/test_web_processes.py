"""Two real app servers, two frameworks, one Redis: a login on one holds on the other."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


class AppServer:
    """A uvicorn or gunicorn process on a free loopback port, configured by environment."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/anon", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"app server did not answer: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def servers(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    redis_server.client().flushall()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSIONHUB_")},
        "PYTHONPATH": str(ROOT),
        "SESSIONHUB_STORE": "redis",
        "SESSIONHUB_REDIS__URL": redis_server.url,
        "SESSIONHUB_COOKIE__NAME": "shared_sid",
    }
    uvicorn_port, gunicorn_port = free_port(), free_port()
    starlette = AppServer(
        [sys.executable, "-m", "uvicorn", "--factory", "tests.web_apps:starlette_from_env",
         "--host", "127.0.0.1", "--port", str(uvicorn_port), "--log-level", "warning"],
        uvicorn_port, env, tmp_path / "uvicorn.log",
    )  # fmt: skip
    flask = AppServer(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{gunicorn_port}",
         "--workers", "2", "--log-level", "warning", "tests.web_apps:flask_from_env()"],
        gunicorn_port, env, tmp_path / "gunicorn.log",
    )  # fmt: skip
    try:
        starlette.wait_ready()
        flask.wait_ready()
        yield starlette.url, flask.url
    finally:
        starlette.stop()
        flask.stop()


def test_log_in_on_one_server_be_logged_in_on_the_other(
    servers: tuple[str, str], redis_server: RedisServer
) -> None:
    starlette, flask = servers
    with httpx.Client(timeout=10) as browser:
        login = browser.post(starlette + "/login", params={"user": "alice"})
        assert login.status_code == 200
        cookie = {"Cookie": f"shared_sid={login.cookies['shared_sid']}"}
        assert browser.get(flask + "/read", headers=cookie).json() == {
            "data": {},
            "principal": "alice",
        }
        browser.post(flask + "/write", params={"key": "cart", "value": "2 pears"}, headers=cookie)
        for _ in range(4):  # both gunicorn workers and uvicorn see the same session
            for url in (starlette, flask):
                reply = browser.get(url + "/read", headers=cookie).json()
                assert reply == {"data": {"cart": "2 pears"}, "principal": "alice"}
        logout = browser.post(flask + "/logout", headers=cookie)
        assert "Max-Age=0" in logout.headers["set-cookie"]
        assert browser.get(starlette + "/read", headers=cookie).json() == {
            "data": {},
            "principal": None,
        }
    assert redis_server.client().keys("sh:s:*") == []

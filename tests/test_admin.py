"""The admin dashboard: in headless Chromium against a real app on real Redis, and served
by `sessionhub admin`."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
import uvicorn
from playwright.sync_api import Dialog, Page, expect
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from sessionhub import AsyncSessionManager, MemoryStore, RedisStore, SessionManager
from sessionhub.admin import AdminApp, CsrfTokens, PasswordAuth, SignInThrottle
from sessionhub.admin.chart import bucket
from sessionhub.admin.throttle import client_key
from sessionhub.events import Event, EventType
from sessionhub.ids import SHARD_ALPHABET, IdScheme
from sessionhub.stores.redis import AsyncRedisStore
from tests.browser import chromium
from tests.harness import FakeClock
from tests.servers import RedisServer, free_port
from tests.web_apps import ROOT, AppServer, server_env

ARTIFACTS = ROOT / "artifacts"
EVIL_USER = '<img src=x onerror="alert(1)">'
EVIL_AGENT = "<script>alert(2)</script>"


class User:
    """A browser-less user of the app: an httpx client keeping the session cookie."""

    def __init__(self, base: str, name: str, agent: str = "test-agent") -> None:
        self.client = httpx.Client(base_url=base, headers={"User-Agent": agent})
        assert self.client.post("/login", params={"user": name}).status_code == 200
        [session_id] = [c.value for c in self.client.cookies.jar]
        ref = IdScheme().parse(session_id)
        assert ref is not None
        self.handle = ref.handle

    def principal(self) -> str | None:
        response = self.client.get("/whoami")
        assert response.status_code == 200
        principal: str | None = response.json()["principal"]
        return principal

    def close(self) -> None:
        self.client.close()


def seed_history(client: redis.Redis, now: float) -> list[Event]:
    """An hour of events in the streams, as the scripts write them (oldest first), ending
    three minutes ago: what the chart shows besides the test's own events."""
    rng = random.Random(7)
    seeded = []
    for minutes_ago in range(59, 2, -1):
        at = now - minutes_ago * 60
        traffic = 8 + 5 * math.sin(minutes_ago / 9) + rng.uniform(-1.5, 1.5)
        kinds = [EventType.CREATED] * round(traffic)
        kinds += [EventType.AUTHENTICATED] * round(traffic * 0.6 + rng.uniform(-1, 1))
        kinds += [EventType.EXPIRED] * round(traffic * 0.45 + rng.uniform(-1, 1))
        for n, kind in enumerate(kinds):
            stamp = int(at * 1000) + n
            shard = rng.choice(SHARD_ALPHABET)
            handle = shard + "".join(rng.choice(SHARD_ALPHABET) for _ in range(22))
            stream = RedisStore(client).commands.stream_key(shard)
            client.xadd(
                stream, {"t": kind.value, "h": handle, "at": stamp, "p": "seed"}, id=f"{stamp}-0"
            )
            seeded.append(Event(kind, handle, stamp / 1000, principal="seed"))
    return seeded


@pytest.fixture
def app_server(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[str]:
    env = server_env(store="redis", redis__url=redis_server.url)
    server = AppServer.uvicorn("tests.admin_app:make_app", env, tmp_path / "app.log")
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()


def seen(dialog: Dialog, dialogs: list[str]) -> None:
    dialogs.append(dialog.message)
    dialog.dismiss()


def chart_counts(page: Page) -> tuple[int, dict[str, list[int]]]:
    start = int(page.locator("svg.chart").get_attribute("data-start") or 0)
    counts = {}
    for series in page.locator("svg.chart g.series").all():
        name = series.get_attribute("data-series") or ""
        counts[name] = [int(c) for c in (series.get_attribute("data-counts") or "").split(",")]
    return start, counts


def test_an_operator_finds_a_user_and_ends_one_session(
    app_server: str, redis_client: redis.Redis
) -> None:
    seeded = seed_history(redis_client, time.time())
    users = {
        "alice-1": User(app_server, "alice", "Firefox"),
        "alice-2": User(app_server, "alice", "Chromium"),
        "bob": User(app_server, "bob"),
        "evil": User(app_server, EVIL_USER, EVIL_AGENT),
    }
    dialogs: list[str] = []
    admin = f"{app_server}/admin/sessions/"
    try:
        with chromium() as browser:
            # Nobody signed in, and a signed-in user who is no operator: refused.
            stranger = browser.new_context()
            response = stranger.new_page().goto(admin)
            assert response is not None
            assert response.status == 403
            stranger.request.post(f"{app_server}/login?user=mallory")
            refused = stranger.new_page().goto(admin)
            assert refused is not None
            assert refused.status == 403
            assert "mallory" not in refused.text()

            context = browser.new_context(viewport={"width": 1100, "height": 900})
            assert context.request.post(f"{app_server}/login?user=root").ok
            page = context.new_page()
            page.on("dialog", lambda dialog: seen(dialog, dialogs))
            response = page.goto(admin)
            assert response is not None
            assert response.status == 200
            headers = response.headers
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "script-src" not in headers["content-security-policy"]  # default-src 'none'
            assert headers["x-frame-options"] == "DENY"
            assert headers["cache-control"] == "no-store"
            expect(page.locator("#operator")).to_have_text("root")
            expect(page.locator("#live")).to_have_text("6")  # 4 users, mallory, the operator

            # The chart: every seeded minute counted exactly, and drawn.
            start, counts = chart_counts(page)
            expected = bucket(seeded, start + 59 * 60, 60, 0).counts
            for kind, label in (
                (EventType.CREATED, "created"),
                (EventType.AUTHENTICATED, "logins"),
                (EventType.EXPIRED, "expired"),
            ):
                assert counts[label][:-4] == expected[kind][:-4]
            # The test's own logins, just now, on top of the seeded ones.
            seeded_lately = sum(expected[EventType.AUTHENTICATED][-4:])
            assert sum(counts["logins"][-4:]) - seeded_lately == 6
            assert page.locator("svg.chart polyline").count() == 3
            assert page.locator("svg.chart").bounding_box()["width"] > 500  # type: ignore[index]

            # Search, and end one of alice's sessions.
            page.fill("input[name=user]", "alice")
            page.keyboard.press("Enter")
            rows = page.locator("#sessions tr:has(button)")
            expect(rows).to_have_count(2)
            expect(page.locator("#sessions")).to_contain_text("Firefox")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "admin.png"))
            page.click(f"button[data-handle='{users['alice-1'].handle}']")
            expect(page.locator("#notice")).to_have_text("The session was ended.")
            expect(rows).to_have_count(1)
            expect(page.locator("#events tr[data-type=deleted]").first).to_contain_text(
                users["alice-1"].handle
            )

            # The ended session's next request is refused; the others go on.
            assert users["alice-1"].principal() is None
            assert users["alice-2"].principal() == "alice"
            assert users["bob"].principal() == "bob"

            # What users control is shown as text, never run.
            page.fill("input[name=user]", EVIL_USER)
            page.keyboard.press("Enter")
            expect(page.locator("#sessions")).to_contain_text(EVIL_AGENT)
            expect(page.locator("main h2").filter(has_text="Sessions of")).to_contain_text(
                EVIL_USER
            )
            assert page.locator("main img").count() == 0
            assert page.locator("main script").count() == 0
            page.goto(admin)
            expect(page.locator("#events")).to_contain_text(EVIL_USER)
            assert page.locator("main img").count() == 0
            time.sleep(0.2)
            assert dialogs == []

            # CSRF: a POST without the page's token, or from another origin, ends nothing.
            bob = users["bob"].handle
            no_token = context.request.post(f"{admin}end", form={"handle": bob, "user": "bob"})
            assert no_token.status == 403
            page.goto(f"{admin}?user=bob")
            token = page.locator("input[name=csrf]").first.get_attribute("value") or ""
            cross_site = context.request.post(
                f"{admin}end",
                form={"handle": bob, "user": "bob", "csrf": token},
                headers={"Origin": "http://evil.example"},
            )
            assert cross_site.status == 403
            assert context.request.get(f"{admin}end").status == 405
            assert users["bob"].principal() == "bob"
            same_site = context.request.post(
                f"{admin}end",
                form={"handle": bob, "user": "bob", "csrf": token},
                headers={"Origin": app_server},
                max_redirects=0,
            )
            assert same_site.status == 303
            assert users["bob"].principal() is None

            # "End all" for a user.
            page.goto(f"{admin}?user=alice")
            page.click("text=End all 1 sessions")
            expect(page.locator("#notice")).to_have_text("Every session of the user was ended.")
            assert users["alice-2"].principal() is None
    finally:
        for user in users.values():
            user.close()


# -- without a browser -------------------------------------------------------------------------


@pytest.fixture
def manager(redis_server: RedisServer, redis_client: redis.Redis) -> AsyncSessionManager:
    return AsyncSessionManager(AsyncRedisStore(redis.asyncio.Redis(port=redis_server.port)))


async def asgi_get(app: Any, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as client:
        return await client.request(kwargs.pop("method", "GET"), path, **kwargs)


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """`app` served by uvicorn on a free loopback port, and a client of it."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await serving


@contextmanager
def quiet_client() -> Iterator[None]:
    """The test's own HTTP client would log a session id in its request lines: silenced
    meanwhile (once uvicorn has started: its logging set-up enables every logger again)."""
    client_log = logging.getLogger("httpx")
    client_log.disabled = True
    try:
        yield
    finally:
        client_log.disabled = False


async def test_no_page_repeats_a_session_id(
    manager: AsyncSessionManager, redis_client: redis.Redis
) -> None:
    sync = SessionManager(RedisStore(redis_client))
    session = sync.load(None)
    sync.login(session, "carol")
    session_id = sync.commit(session).id
    assert session_id is not None
    async with served(AdminApp(manager, authenticate=lambda request: "ops")) as client:
        page = await client.get("/", params={"user": "carol"})
        [token] = re.findall(r'name="csrf" value="([^"]+)"', page.text)[:1]
        with quiet_client():  # an operator pastes the id where the dashboard takes text
            answers = [
                await client.get("/", params={"user": session_id}),
                await client.get("/", params={"user": f"x{session_id}"}),
                await client.post("/end-user", data={"user": session_id, "csrf": token}),
                await client.post("/end", data={"handle": session_id, "csrf": token}),
                await client.post(
                    "/end", data={"handle": session.handle, "user": session_id, "csrf": token}
                ),
            ]
    pieces = [session_id[i : i + 12] for i in range(len(session_id) - 11)]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert not any(piece in answer.text for piece in pieces)
        assert not any(piece in str(answer.headers) for piece in pieces)
    assert "looks like a session id" in answers[0].text
    assert not sync.load(session_id).is_new  # nothing was ended


async def test_no_hook_means_nobody_gets_in(manager: AsyncSessionManager) -> None:
    app = AdminApp(manager)
    for method, path in (("GET", "/"), ("POST", "/end"), ("POST", "/end-user"), ("GET", "/x")):
        response = await asgi_get(app, path, method=method)
        assert response.status_code == 403
        assert "no authentication hook" in response.text
        assert response.headers["x-frame-options"] == "DENY"


async def test_a_hook_refusing_with_a_challenge_gets_401(manager: AsyncSessionManager) -> None:
    app = AdminApp(manager, authenticate=PasswordAuth("correct horse battery"))
    response = await asgi_get(app, "/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Basic realm="sessionhub admin"')
    wrong = await asgi_get(app, "/", auth=("ops", "wrong password!"))
    assert wrong.status_code == 401
    right = await asgi_get(app, "/", auth=("ops", "correct horse battery"))
    assert right.status_code == 200
    assert '<strong id="operator">ops</strong>' in right.text

    async def refuse(request: Any) -> None:
        return None

    assert (await asgi_get(AdminApp(manager, authenticate=refuse), "/")).status_code == 403


PASSWORD = "correct horse battery"
WRONG = ("ops", "wrong password!")


def from_address(host: str) -> httpx.AsyncHTTPTransport:
    """A transport whose connections come from `host` (any of 127.0.0.0/8 is this machine)."""
    return httpx.AsyncHTTPTransport(local_address=host)


async def test_failed_sign_ins_are_throttled_per_client_and_in_total(
    manager: AsyncSessionManager,
) -> None:
    clock = FakeClock()
    throttle = SignInThrottle(
        client_failures=3, client_interval=10, total_failures=5, total_interval=4, clock=clock
    )
    app = AdminApp(manager, authenticate=PasswordAuth(PASSWORD), throttle=throttle)
    async with served(app) as alice:
        base = str(alice.base_url)
        async with (
            httpx.AsyncClient(base_url=base, transport=from_address("127.0.0.2")) as bob,
            httpx.AsyncClient(base_url=base, transport=from_address("127.0.0.3")) as carol,
        ):
            # One client: three wrong passwords, then it waits, the right password too.
            assert [(await alice.get("/", auth=WRONG)).status_code for _ in range(3)] == [401] * 3
            for credentials in (WRONG, ("ops", PASSWORD)):
                refused = await alice.get("/", auth=credentials)
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "10"
                assert "Too many failed sign-ins: try again in 10 seconds" in refused.text
            assert "www-authenticate" not in refused.headers
            # Another client is not held up by the first...
            assert (await bob.get("/", auth=("ops", PASSWORD))).status_code == 200
            assert [(await bob.get("/", auth=WRONG)).status_code for _ in range(2)] == [401] * 2
            # ...until all of them together have failed five times in a row.
            for client in (bob, carol):
                held = await client.get("/", auth=("ops", PASSWORD))
                assert held.status_code == 429
                assert held.headers["retry-after"] == "4"
            clock.advance(4)
            assert (await carol.get("/", auth=("ops", PASSWORD))).status_code == 200
            # The first client's wait runs on, to the second.
            assert (await alice.get("/", auth=("ops", PASSWORD))).headers["retry-after"] == "6"
            clock.advance(5.5)
            assert (await alice.get("/", auth=("ops", PASSWORD))).headers["retry-after"] == "1"
            clock.advance(0.5)
            assert (await alice.get("/", auth=("ops", PASSWORD))).status_code == 200
            assert (await alice.get("/", auth=WRONG)).status_code == 401  # one regained try
            assert (await alice.get("/", auth=WRONG)).status_code == 429


async def test_a_sign_in_that_succeeds_costs_nothing(manager: AsyncSessionManager) -> None:
    throttle = SignInThrottle(client_failures=2, clock=FakeClock())
    app = AdminApp(manager, authenticate=PasswordAuth(PASSWORD), throttle=throttle)
    async with served(app) as client:
        pages = [await client.get("/", auth=("ops", PASSWORD)) for _ in range(20)]
        assert {page.status_code for page in pages} == {200}
        assert (await client.get("/", auth=WRONG)).status_code == 401
        assert (await client.get("/", auth=("ops", PASSWORD))).status_code == 200


def test_the_throttles_client_is_its_address_or_ipv6_64() -> None:
    assert client_key("10.0.0.7") == "10.0.0.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.7") == "10.0.0.7"
    assert client_key(None) == ""
    with pytest.raises(ValueError, match="positive interval"):
        SignInThrottle(client_interval=0)


async def test_redis_down_is_a_503_page_not_a_crash() -> None:
    server = RedisServer().start()
    client = redis.asyncio.Redis(port=server.port, retry=AsyncRetry(NoBackoff(), 0))
    app = AdminApp(AsyncSessionManager(AsyncRedisStore(client)), authenticate=lambda r: "ops")
    assert (await asgi_get(app, "/")).status_code == 200
    server.cleanup()
    for method, path in (("GET", "/"), ("GET", "/?user=alice")):
        response = await asgi_get(app, path, method=method)
        assert response.status_code == 503
        assert "Redis cannot be reached right now" in response.text
        assert response.headers["cache-control"] == "no-store"
    await client.aclose()


def test_the_dashboard_needs_a_redis_store() -> None:
    with pytest.raises(TypeError, match="AsyncRedisStore"):
        AdminApp(AsyncSessionManager(MemoryStore()), authenticate=lambda request: "ops")
    with pytest.raises(ValueError, match="at least 12"):
        PasswordAuth("short")


def test_csrf_tokens_are_bound_to_the_operator_and_expire() -> None:
    tokens = CsrfTokens(b"k" * 32, max_age=60)
    token = tokens.mint("ops", now=1000)
    assert tokens.valid(token, "ops", now=1030)
    assert not tokens.valid(token, "other", now=1030)
    assert not tokens.valid(token, "ops", now=1061)
    assert not tokens.valid(token, "ops", now=999)
    assert not CsrfTokens(b"x" * 32).valid(token, "ops", now=1030)
    for forged in ("", "1000", "1000.", "abc.def", token + "x", "9" * 40 + ".x"):
        assert not tokens.valid(forged, "ops", now=1030)


@contextmanager
def sessionhub_admin(url: str, tmp_path: Path, **env: str) -> Iterator[str]:
    """`sessionhub admin` serving the Redis at `url` (password PASSWORD; more settings in
    `env`); its base URL once it answers (its first answer, a 401, is one failed sign-in)."""
    port = free_port()
    environ = {**os.environ, "SESSIONHUB_ADMIN_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "sessionhub.cli", "admin", "--port", str(port), "--url", url]
    log = (tmp_path / "admin.log").open("wb")
    process = subprocess.Popen(
        args, env={**environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                first = httpx.get(base + "/")
                break
            except httpx.TransportError:
                assert process.poll() is None, (tmp_path / "admin.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert first.status_code == 401
        yield base
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def test_sessionhub_admin_serves_the_dashboard_behind_a_password(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    manager = SessionManager(RedisStore(redis_client))
    session = manager.load(None)
    manager.login(session, "carol")
    session_id = manager.commit(session).id
    with (
        sessionhub_admin(redis_server.url, tmp_path) as base,
        httpx.Client(base_url=base, auth=("ops", PASSWORD)) as client,
    ):
        page = client.get("/", params={"user": "carol"})
        assert page.status_code == 200
        [token] = re.findall(r'name="csrf" value="([^"]+)"', page.text)[:1]
        ended = client.post(
            "/end-user", data={"user": "carol", "csrf": token}, headers={"Origin": base}
        )
        assert ended.status_code == 303
        assert ended.headers["location"] == "./?user=carol&done=ended-all"
    assert manager.load(session_id).is_new


@pytest.mark.parametrize(
    ("env", "failures"),
    [({}, 5), ({"SESSIONHUB_ADMIN__SIGN_IN__CLIENT_FAILURES": "3"}, 3)],
)
def test_sessionhub_admin_makes_a_guesser_wait(
    redis_server: RedisServer, tmp_path: Path, env: dict[str, str], failures: int
) -> None:
    with (
        sessionhub_admin(redis_server.url, tmp_path, **env) as base,
        httpx.Client(base_url=base) as guesser,
    ):
        answers = [guesser.get("/", auth=WRONG).status_code for _ in range(300)]
        right = guesser.get("/", auth=("ops", PASSWORD))
    # The first answer, to no password at all, was a failure already.
    assert answers == [401] * (failures - 1) + [429] * (301 - failures)
    assert right.status_code == 429
    assert 1 <= int(right.headers["retry-after"]) <= 20

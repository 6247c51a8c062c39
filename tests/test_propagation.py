"""Propagation: the session id goes to trusted hosts only, on every hop, in every context."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
import requests
from starlette.concurrency import run_in_threadpool

from sessionhub.propagation import (
    Propagation,
    TrustedHost,
    bind_session_id,
    current_session_id,
    in_context,
)

SID = "A" + "b" * 43


class _Echo(BaseHTTPRequestHandler):
    """GET /echo: the X-Session-Id received; GET /go?to=URL: a redirect to URL;
    GET /cookie: a cookie named after the server's port."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path in ("/go", "/cookie"):
            self.send_response(302 if parts.path == "/go" else 204)
            if parts.path == "/go":
                self.send_header("Location", parse_qs(parts.query)["to"][0])
            else:
                self.send_header("Set-Cookie", f"port{self.connection.getsockname()[1]}=1; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"id": self.headers.get("X-Session-Id")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def trusted_port() -> Iterator[int]:
    yield from _serve()


@pytest.fixture(scope="module")
def other_port() -> Iterator[int]:
    """A server the propagation does not trust (same machine, another port)."""
    yield from _serve()


@pytest.fixture
def propagation(trusted_port: int) -> Propagation:
    return Propagation([f"127.0.0.1:{trusted_port}"])


# -- the allowlist --------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("orders", TrustedHost("orders")),
        ("Orders.Internal.", TrustedHost("orders.internal")),
        ("orders:8001", TrustedHost("orders", 8001)),
        ("https://billing.internal", TrustedHost("billing.internal", None, "https")),
        ("HTTP://127.0.0.1:80", TrustedHost("127.0.0.1", 80, "http")),
        ("[::1]:9000", TrustedHost("::1", 9000)),
    ],
)
def test_allowlist_entries_parse(entry: str, parsed: TrustedHost) -> None:
    assert TrustedHost.parse(entry) == parsed


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://orders", "scheme must be http or https"),
        ("orders/api", "host[:port] only"),
        ("https://orders/", "host[:port] only"),
        ("user@orders", "host[:port] only"),
        ("*.internal", "wildcard"),
        ("orders?x=1", "host[:port] only"),
        ("orders:http", "port is not valid"),
        ("orders:99999", "port is not valid"),
        ("http://", "no host"),
        (":8000", "no host"),
    ],
)
def test_bad_allowlist_entries_are_refused_clearly(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        TrustedHost.parse(entry)


def test_bad_propagation_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="list of hosts"):
        Propagation("orders:8001")
    with pytest.raises(ValueError, match="not a valid header name"):
        Propagation(["orders"], header="X Session")
    with pytest.raises(TypeError, match="cannot install"):
        Propagation(["orders"]).install(object())  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        ("http://orders:8001/x", True),
        ("https://ORDERS:8001/x", True),
        ("http://orders.:8001/x", True),
        ("http://orders:8002/x", False),  # another port
        ("http://orders/x", False),  # port 80
        ("http://orders.evil.example:8001/x", False),  # not a suffix match
        ("http://evilorders:8001/x", False),
        ("http://orders:8001@evil.example/x", False),  # userinfo trick: the host is evil
        ("http://evil.example/?orders:8001", False),
        ("https://billing", True),  # https://billing: any port, https only
        ("https://billing:8443/", True),
        ("http://billing/", False),  # downgraded scheme
        ("ws://orders:8001/", False),
        ("not a url", False),
        ("http://[::1/", False),  # unparsable
        ("http://[::1]:9000/", True),
    ],
)
def test_which_urls_are_trusted(url: str, trusted: bool) -> None:
    propagation = Propagation(["orders:8001", "https://billing", "[::1]:9000"])
    assert propagation.trusts(url) is trusted


# -- the three clients, on every hop ----------------------------------------------

Fetch = Callable[[Propagation, str, dict[str, str]], str | None]


def _fetch_httpx(propagation: Propagation, url: str, headers: dict[str, str]) -> str | None:
    with httpx.Client(event_hooks=propagation.httpx_hooks(), follow_redirects=True) as client:
        seen: str | None = client.get(url, headers=headers).json()["id"]
        return seen


def _fetch_httpx_installed(
    propagation: Propagation, url: str, headers: dict[str, str]
) -> str | None:
    with propagation.install(httpx.Client(follow_redirects=True)) as client:
        seen: str | None = client.get(url, headers=headers).json()["id"]
        return seen


def _fetch_async_httpx(propagation: Propagation, url: str, headers: dict[str, str]) -> str | None:
    async def fetch() -> str | None:
        hooks = propagation.async_httpx_hooks()
        async with httpx.AsyncClient(event_hooks=hooks, follow_redirects=True) as client:
            seen: str | None = (await client.get(url, headers=headers)).json()["id"]
            return seen

    # asyncio.run copies the current context into its task, as any asyncio app gets.
    return asyncio.run(fetch())


def _fetch_requests(propagation: Propagation, url: str, headers: dict[str, str]) -> str | None:
    with propagation.install(requests.Session()) as session:
        seen: str | None = session.get(url, headers=headers, timeout=5).json()["id"]
        return seen


CLIENTS = {
    "httpx": _fetch_httpx,
    "httpx-installed": _fetch_httpx_installed,
    "httpx-async": _fetch_async_httpx,
    "requests": _fetch_requests,
}


@pytest.fixture(params=list(CLIENTS))
def fetch(request: pytest.FixtureRequest) -> Fetch:
    return CLIENTS[request.param]


def test_trusted_host_gets_the_id(
    fetch: Fetch, propagation: Propagation, trusted_port: int
) -> None:
    with bind_session_id(SID):
        assert fetch(propagation, f"http://127.0.0.1:{trusted_port}/echo", {}) == SID


def test_no_session_no_header(fetch: Fetch, propagation: Propagation, trusted_port: int) -> None:
    assert current_session_id() is None
    assert fetch(propagation, f"http://127.0.0.1:{trusted_port}/echo", {}) is None


def test_other_hosts_never_get_it(
    fetch: Fetch, propagation: Propagation, trusted_port: int, other_port: int
) -> None:
    with bind_session_id(SID):
        assert fetch(propagation, f"http://127.0.0.1:{other_port}/echo", {}) is None
        # Same server, but under a name that is not on the list.
        assert fetch(propagation, f"http://localhost:{trusted_port}/echo", {}) is None
        # Even a header the caller set by hand is taken off.
        assert (
            fetch(propagation, f"http://127.0.0.1:{other_port}/echo", {"x-session-id": SID}) is None
        )


def test_redirect_to_another_host_loses_the_id(
    fetch: Fetch, propagation: Propagation, trusted_port: int, other_port: int
) -> None:
    away = f"http://127.0.0.1:{other_port}/echo"
    with bind_session_id(SID):
        assert fetch(propagation, f"http://127.0.0.1:{trusted_port}/go?to={away}", {}) is None


def test_redirect_to_a_trusted_host_keeps_it(
    fetch: Fetch, propagation: Propagation, trusted_port: int, other_port: int
) -> None:
    home = f"http://127.0.0.1:{trusted_port}/echo"
    with bind_session_id(SID):
        assert fetch(propagation, f"http://127.0.0.1:{other_port}/go?to={home}", {}) == SID


def test_configured_header(trusted_port: int) -> None:
    propagation = Propagation([f"127.0.0.1:{trusted_port}"], header="X-Upstream-Session")
    with bind_session_id(SID), httpx.Client(event_hooks=propagation.httpx_hooks()) as client:
        request = client.build_request("GET", f"http://127.0.0.1:{trusted_port}/echo")
        propagation.apply(str(request.url), request.headers)
        assert request.headers["x-upstream-session"] == SID
        assert "x-session-id" not in request.headers


# -- cookies: an installed client serves every user ----------------------------------


def _kept_by_httpx(propagation: Propagation, urls: list[str]) -> set[str]:
    with propagation.install(httpx.Client()) as client:
        for url in urls:
            client.get(url)
        return {cookie.name for cookie in client.cookies.jar}


def _kept_by_httpx_hooked(propagation: Propagation, urls: list[str]) -> set[str]:
    with httpx.Client(event_hooks=propagation.httpx_hooks()) as client:
        client.cookies.jar.set_policy(propagation.cookie_policy())
        for url in urls:
            client.get(url)
        return {cookie.name for cookie in client.cookies.jar}


def _kept_by_async_httpx(propagation: Propagation, urls: list[str]) -> set[str]:
    async def fetch() -> set[str]:
        async with propagation.install(httpx.AsyncClient()) as client:
            for url in urls:
                await client.get(url)
            return {cookie.name for cookie in client.cookies.jar}

    return asyncio.run(fetch())


def _kept_by_requests(propagation: Propagation, urls: list[str]) -> set[str]:
    with propagation.install(requests.Session()) as session:
        for url in urls:
            session.get(url, timeout=5)
        return {cookie.name for cookie in session.cookies}


@pytest.mark.parametrize(
    "kept_by", [_kept_by_httpx, _kept_by_httpx_hooked, _kept_by_async_httpx, _kept_by_requests]
)
def test_no_cookie_a_trusted_host_sets_is_kept(
    kept_by: Callable[[Propagation, list[str]], set[str]],
    propagation: Propagation,
    trusted_port: int,
    other_port: int,
) -> None:
    # A trusted service's cookie was set for one user; the client goes on to serve all.
    urls = [f"http://127.0.0.1:{port}/cookie" for port in (trusted_port, other_port)]
    assert kept_by(propagation, urls) == {f"port{other_port}"}  # other hosts: as usual


# -- the context: isolated between requests, carried into tasks and threads --------


def _ids(count: int) -> list[str]:
    return [f"A{index:043d}" for index in range(count)]


async def test_100_concurrent_requests_each_send_their_own_id(
    propagation: Propagation, trusted_port: int
) -> None:
    url = f"http://127.0.0.1:{trusted_port}/echo"
    hooks = propagation.async_httpx_hooks()
    limits = httpx.Limits(max_connections=20)

    async with httpx.AsyncClient(event_hooks=hooks, limits=limits) as client:

        async def handle(session_id: str) -> tuple[str, str | None]:
            with bind_session_id(session_id):
                await asyncio.sleep(0)  # let the others interleave
                response = await client.get(url)
                return current_session_id() or "", response.json()["id"]

        results = await asyncio.gather(*(asyncio.create_task(handle(i)) for i in _ids(100)))
    assert [mine for mine, _ in results] == _ids(100)
    assert [seen for _, seen in results] == _ids(100)
    assert current_session_id() is None


async def test_anyio_task_groups_carry_the_id() -> None:
    seen: dict[str, str | None] = {}

    async def child(name: str) -> None:
        await anyio.sleep(0)
        seen[name] = current_session_id()

    async def request(session_id: str) -> None:
        with bind_session_id(session_id):
            async with anyio.create_task_group() as group:
                group.start_soon(child, session_id)

    async with anyio.create_task_group() as group:
        for session_id in _ids(20):
            group.start_soon(request, session_id)
    assert seen == {session_id: session_id for session_id in _ids(20)}


async def test_thread_pools_need_the_context_copied() -> None:
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(4) as pool, bind_session_id(SID):
        # run_in_executor does not copy the context: that is what in_context is for.
        assert await loop.run_in_executor(pool, current_session_id) is None
        assert await loop.run_in_executor(pool, in_context(current_session_id)) == SID
        assert await asyncio.to_thread(current_session_id) == SID
        assert await run_in_threadpool(current_session_id) == SID
        assert await anyio.to_thread.run_sync(current_session_id) == SID


def test_concurrent_futures_with_copied_context() -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert pool.submit(current_session_id).result() is None
        with bind_session_id(SID):
            assert pool.submit(current_session_id).result() is None
            assert pool.submit(contextvars.copy_context().run, current_session_id).result() == SID
            # One wrapped function, called from many threads at once.
            wrapped = in_context(lambda n: (n, current_session_id()))
            assert list(pool.map(wrapped, range(50))) == [(n, SID) for n in range(50)]


def test_threads_serving_many_requests_see_each_their_own() -> None:
    """Threads of a WSGI server: each request binds its own id, none leaks to the next."""

    def request(session_id: str | None) -> str | None:
        with bind_session_id(session_id):
            return current_session_id()

    ids: list[str | None] = [*_ids(100), None, None]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(request, ids)) == ids
        assert list(pool.map(lambda _: current_session_id(), range(8))) == [None] * 8

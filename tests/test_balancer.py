"""The demo's round-robin balancer, in front of real loopback servers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from sessionhub.demo.balancer import Backend, Balancer
from sessionhub.demo.processes import free_port


def _server(name: str) -> Iterator[str]:
    class Named(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"name": name, "headers": dict(self.headers.items())}).encode()
            self.send_response(200)
            self.send_header("Set-Cookie", "a=1")
            self.send_header("Set-Cookie", "b=2")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Named)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def one() -> Iterator[str]:
    yield from _server("one")


@pytest.fixture(scope="module")
def two() -> Iterator[str]:
    yield from _server("two")


async def _names(balancer: Balancer, count: int) -> list[str]:
    transport = httpx.ASGITransport(app=balancer)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        return [(await client.get("/")).json()["name"] for _ in range(count)]


async def test_requests_go_round_robin(one: str, two: str) -> None:
    balancer = Balancer([Backend("one", one), Backend("two", two)])
    assert await _names(balancer, 4) == ["one", "two", "one", "two"]
    await balancer.aclose()


async def test_drained_and_dead_backends_are_skipped(one: str, two: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    balancer = Balancer([Backend("one", one), Backend("dead", dead), Backend("two", two)])
    assert sorted(set(await _names(balancer, 6))) == ["one", "two"]
    balancer.drain("two")
    assert set(await _names(balancer, 4)) == {"one"}
    balancer.restore("two")
    assert set(await _names(balancer, 4)) == {"one", "two"}
    await balancer.aclose()


async def test_no_backend_answers_502() -> None:
    balancer = Balancer([Backend("dead", f"http://127.0.0.1:{free_port()}")])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=balancer)) as client:
        response = await client.get("http://demo/")
    assert response.status_code == 502
    assert response.text == "no backend is available"
    await balancer.aclose()


async def test_headers_pass_through(one: str) -> None:
    balancer = Balancer([Backend("one", one)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=balancer)) as client:
        response = await client.get(
            "http://demo/", headers={"Cookie": "session=x", "Connection": "keep-alive"}
        )
    seen = {name.lower(): value for name, value in response.json()["headers"].items()}
    assert seen["cookie"] == "session=x"
    assert seen["x-forwarded-host"] == "demo"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    await balancer.aclose()


async def test_exactly_the_clients_headers_are_forwarded(one: str) -> None:
    # The backend answers with Set-Cookie every time: a balancer that kept those would
    # send them on with the next request that has no cookie, whoever sends it.
    balancer = Balancer([Backend("one", one)])
    transport = httpx.ASGITransport(app=balancer, client=("203.0.113.7", 5000))
    for _ in range(3):
        async with httpx.AsyncClient(transport=transport) as visitor:  # each a new visitor
            for default in ("User-Agent", "Accept-Encoding", "Connection"):
                del visitor.headers[default]
            response = await visitor.get("http://demo/", headers={"X-Mine": "1"})
        assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
        seen = {name.lower(): value for name, value in response.json()["headers"].items()}
        assert seen == {
            "accept": "*/*",
            "x-mine": "1",
            "host": one.removeprefix("http://"),
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-proto": "http",
            "x-forwarded-host": "demo",
        }
    await balancer.aclose()


def test_a_balancer_needs_backends() -> None:
    with pytest.raises(ValueError, match="at least one backend"):
        Balancer([])
    with pytest.raises(KeyError, match="no backend named 'x'"):
        Balancer([Backend("one", "http://127.0.0.1:1")]).drain("x")

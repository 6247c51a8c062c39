"""A round-robin HTTP load balancer, small enough to read: an ASGI app.

Each request goes to the next backend in turn -- no stickiness, which is the
point: whichever instance answers must see the user's session. A backend can
be taken out of the rotation (`drain`) before it is stopped and put back
(`restore`) once it answers again, as a rolling deploy does. A backend that
refuses the connection is skipped for this request (the request never reached
it, so trying the next one is safe).

Connections to backends are not kept alive: each request opens its own, so a
restarted backend is never sent a request on a connection it already closed.
A backend is sent exactly the client's headers (less the hop-by-hop ones, plus
X-Forwarded-*), and nothing else: the balancer keeps no cookies.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

__all__ = ["Backend", "Balancer"]

# Headers that describe one connection, not the message: never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(slots=True)
class Backend:
    name: str
    url: str  # e.g. "http://127.0.0.1:8001"
    draining: bool = False


class Balancer:
    """Forwards each request to the next live backend."""

    def __init__(self, backends: Sequence[Backend], *, timeout: float = 30) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        self.backends = list(backends)
        self._turn = itertools.count()
        # A transport, not an httpx Client: a Client is a user agent, with a cookie jar
        # and default headers of its own. Shared by every visitor, its jar would send
        # the cookie one visitor was given to the next who came without one. A proxy
        # forwards each request as it came and remembers nothing.
        self._transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        self._timeout = httpx.Timeout(timeout).as_dict()

    def backend(self, name: str) -> Backend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(f"no backend named {name!r}")

    def drain(self, name: str) -> None:
        """Send no new requests to `name` (requests in flight finish)."""
        self.backend(name).draining = True

    def restore(self, name: str) -> None:
        self.backend(name).draining = False

    def _rotation(self) -> list[Backend]:
        """The live backends, starting with the one whose turn it is."""
        live = [backend for backend in self.backends if not backend.draining]
        if not live:
            return []
        start = next(self._turn) % len(live)
        return live[start:] + live[:start]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to set up
        request = Request(scope, receive)
        response = await self.forward(request)
        await response(scope, receive, send)

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP
        ]
        client = request.client.host if request.client else ""
        headers += [
            ("x-forwarded-for", client),
            ("x-forwarded-proto", request.url.scheme),
            ("x-forwarded-host", request.headers.get("host", "")),
        ]
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        for backend in self._rotation():
            upstream = httpx.Request(
                request.method,
                backend.url + path,
                headers=headers,
                content=body,
                extensions={"timeout": self._timeout},
            )
            try:
                answer = await self._transport.handle_async_request(upstream)
            except httpx.ConnectError:
                continue  # not listening (restarting): the request never reached it
            except httpx.HTTPError as exc:
                return _failed(backend, exc)
            try:
                raw = b"".join([chunk async for chunk in answer.aiter_raw()])
            except httpx.HTTPError as exc:
                return _failed(backend, exc)
            finally:
                await answer.aclose()
            return _relay(answer, raw)
        return PlainTextResponse("no backend is available", status_code=502)

    async def aclose(self) -> None:
        await self._transport.aclose()


def _failed(backend: Backend, exc: Exception) -> Response:
    # The backend may have acted on the request: sending it to another could do it twice.
    text = f"backend {backend.name} failed: {type(exc).__name__}"
    return PlainTextResponse(text, status_code=502)


def _relay(answer: httpx.Response, raw: bytes) -> Response:
    """The backend's answer as is: status, every header (each Set-Cookie), raw body."""
    response = Response(raw, status_code=answer.status_code)
    response.raw_headers = [
        (name, value)
        for name, value in answer.headers.raw
        if name.decode("latin-1").lower() not in _HOP_BY_HOP
    ] + [(b"content-length", str(len(raw)).encode())]
    return response

"""Passing the session on to downstream services.

The web middleware puts the id of the request's session into a context
variable; `current_session_id()` reads it anywhere in the request's code. A
`Propagation` adds it, as a header (`X-Session-Id` unless configured), to
outgoing `httpx` and `requests` calls -- but only to hosts on an allowlist.
The downstream service reads it with the header resolver, so both services
see one session.

The id is a bearer credential, so the allowlist is checked on every hop a
client makes, redirects included: a header copied onto a redirect to another
host is taken off again. That is why the integrations are an httpx request
hook and a requests transport adapter (both see every hop) rather than an
httpx `Auth` (which sees only the first request of a redirect chain).

A client propagation is installed into serves every user's requests, so it
keeps no cookie a trusted host sets: that cookie (a downstream session's, say)
was set for one user and would go out with every other user's calls.

Context variables follow asyncio tasks and anyio task groups by themselves;
`loop.run_in_executor` and `concurrent.futures` executors do not copy them:
submit `in_context(fn)` there (starlette's `run_in_threadpool` and
`asyncio.to_thread` copy the context already).
"""

from __future__ import annotations

import contextvars
import http.cookiejar
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import urllib.request

    import httpx
    import requests

__all__ = [
    "DEFAULT_HEADER",
    "Propagation",
    "TrustedHost",
    "bind_session_id",
    "current_session_id",
    "in_context",
]

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C", "httpx.Client", "httpx.AsyncClient", "requests.Session")

DEFAULT_HEADER = "X-Session-Id"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)

# What the request being served binds: its session id, and whatever commits its
# session while the application runs (`sessionhub.web.flow`). One variable for
# both: the middlewares set and reset it on every request.
_request: contextvars.ContextVar[tuple[str | None, Any]] = contextvars.ContextVar(
    "sessionhub_request", default=(None, None)
)

RequestToken = contextvars.Token[tuple[str | None, Any]]


def current_session_id() -> str | None:
    """The id of the session the current request came with, if it is a stored one."""
    return _request.get()[0]


@contextmanager
def bind_session_id(session_id: str | None) -> Iterator[None]:
    """Make `session_id` the current one inside the block (the middleware's job)."""
    token = _request.set((session_id, _request.get()[1]))
    try:
        yield
    finally:
        _request.reset(token)


def bind_request(session_id: str | None, committer: Any) -> RequestToken:
    """Bind a request's session id and committer; undo with `unbind_request`."""
    return _request.set((session_id, committer))


def unbind_request(token: RequestToken) -> None:
    _request.reset(token)


def current_committer_or_none() -> Any:
    """The committer `bind_request` bound, if any (`sessionhub.web.flow` types it)."""
    return _request.get()[1]


def in_context(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn`, made to run in the context of the caller of `in_context`.

    For thread pools that do not copy context variables themselves::

        loop.run_in_executor(None, in_context(fetch_orders), user)
        executor.submit(in_context(fetch_orders), user)

    Each call runs in its own copy, so the result may be called many times,
    from many threads at once.
    """
    captured = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return captured.copy().run(fn, *args, **kwargs)

    return run


@dataclass(frozen=True, slots=True)
class TrustedHost:
    """One allowlist entry: `host`, `host:port`, `scheme://host` or `scheme://host:port`.

    What an entry leaves out is not checked: no scheme means http or https,
    no port means any port. Hosts are compared exactly (case aside): no
    wildcards, no subdomains.
    """

    host: str
    port: int | None = None
    scheme: str | None = None

    @classmethod
    def parse(cls, entry: str) -> TrustedHost:
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"trusted host entry {entry!r} is empty")
        text = entry.strip()
        scheme: str | None = None
        if "://" in text:
            scheme, text = text.split("://", 1)
            scheme = scheme.lower()
            if scheme not in _DEFAULT_PORTS:
                raise ValueError(f"trusted host entry {entry!r}: scheme must be http or https")
        if any(char in text for char in "/?#@*\\ "):
            raise ValueError(
                f"trusted host entry {entry!r}: give host[:port] only (no path, user, "
                "query or wildcard)"
            )
        parts = urlsplit("//" + text)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"trusted host entry {entry!r}: the port is not valid") from None
        if not parts.hostname:
            raise ValueError(f"trusted host entry {entry!r} has no host")
        return cls(_normal_host(parts.hostname), port, scheme)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        return (
            host == self.host
            and (self.port is None or port == self.port)
            and (self.scheme is None or scheme == self.scheme)
        )


def _normal_host(host: str) -> str:
    return host.lower().removesuffix(".")


class Propagation:
    """Sends the current session id to trusted hosts, and to no other.

    `trusted` lists `TrustedHost` entries (strings like "orders:8001" or
    "https://billing.internal"); `header` is the header the downstream
    services read the id from.
    """

    def __init__(self, trusted: Iterable[str], *, header: str = DEFAULT_HEADER) -> None:
        if isinstance(trusted, str):
            raise TypeError("trusted is a list of hosts, not one string")
        if not _TOKEN.fullmatch(header):
            raise ValueError(f"{header!r} is not a valid header name")
        self.trusted = tuple(TrustedHost.parse(entry) for entry in trusted)
        self.header = header

    def trusts(self, url: str) -> bool:
        """Whether a request to `url` may carry the session id."""
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError:
            return False
        if scheme not in _DEFAULT_PORTS or not host:
            return False
        host, port = _normal_host(host), port or _DEFAULT_PORTS[scheme]
        return any(entry.matches(scheme, host, port) for entry in self.trusted)

    def apply(self, url: str, headers: MutableMapping[str, str]) -> None:
        """Set the header on a request to a trusted `url`; take it off any other.

        Called for every hop: a header copied onto a redirect to an untrusted
        host is removed, whoever put it there.
        """
        if not self.trusts(url):
            headers.pop(self.header, None)
            return
        session_id = current_session_id()
        if session_id is not None:
            headers[self.header] = session_id

    # -- httpx ------------------------------------------------------------------

    def httpx_hooks(self) -> dict[str, list[Callable[[httpx.Request], None]]]:
        """`event_hooks` for an `httpx.Client`: runs on every request, redirects included."""

        def on_request(request: httpx.Request) -> None:
            self.apply(str(request.url), request.headers)

        return {"request": [on_request]}

    def async_httpx_hooks(self) -> dict[str, list[Callable[[httpx.Request], Awaitable[None]]]]:
        """`event_hooks` for an `httpx.AsyncClient`."""

        async def on_request(request: httpx.Request) -> None:
            self.apply(str(request.url), request.headers)

        return {"request": [on_request]}

    def cookie_policy(self) -> http.cookiejar.CookiePolicy:
        """A cookie policy that keeps no cookie a trusted host sets (`install` sets it)."""
        return _NoCookiesFromTrustedHosts(self)

    # -- installing into an existing client --------------------------------------

    def install(self, client: C) -> C:
        """Make `client` (httpx `Client`/`AsyncClient`, or `requests.Session`) propagate.

        The client's cookie jar gets `cookie_policy()`, in place of its own.
        For requests, every adapter mounted so far is wrapped; mount yours first.
        """
        # Only look at the libraries the caller already imported: the client is from one.
        httpx_module: Any = sys.modules.get("httpx")
        requests_module: Any = sys.modules.get("requests")
        target: Any = client
        if httpx_module is not None and isinstance(target, httpx_module.AsyncClient):
            target.event_hooks["request"].extend(self.async_httpx_hooks()["request"])
            target.cookies.jar.set_policy(self.cookie_policy())
        elif httpx_module is not None and isinstance(target, httpx_module.Client):
            target.event_hooks["request"].extend(self.httpx_hooks()["request"])
            target.cookies.jar.set_policy(self.cookie_policy())
        elif requests_module is not None and isinstance(target, requests_module.Session):
            for prefix, adapter in list(target.adapters.items()):
                if not isinstance(adapter, _PropagatingAdapter):
                    target.adapters[prefix] = _PropagatingAdapter(self, adapter)
            target.cookies.set_policy(self.cookie_policy())
        else:
            raise TypeError(
                f"cannot install propagation into {type(client).__name__}: "
                "expected an httpx Client/AsyncClient or a requests Session"
            )
        return client


class _NoCookiesFromTrustedHosts(http.cookiejar.DefaultCookiePolicy):
    """The standard policy, except that a cookie set by a trusted host is never kept.

    Decided by the URL that answered, not by the cookie's Domain: cookies ignore
    ports, the allowlist does not.
    """

    def __init__(self, propagation: Propagation) -> None:
        super().__init__()
        self.propagation = propagation

    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        if self.propagation.trusts(request.get_full_url()):
            return False
        return super().set_ok(cookie, request)


class _PropagatingAdapter:
    """A requests transport adapter in front of another: every hop passes through `send`."""

    def __init__(self, propagation: Propagation, inner: Any) -> None:
        self.propagation = propagation
        self.inner = inner

    def send(self, request: requests.PreparedRequest, **options: Any) -> requests.Response:
        if request.url is not None:
            self.propagation.apply(request.url, request.headers)
        response: requests.Response = self.inner.send(request, **options)
        return response

    def close(self) -> None:
        self.inner.close()

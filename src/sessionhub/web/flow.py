"""What every web integration does around a request, in one place and free of I/O.

Each integration (ASGI, WSGI, Flask, Quart, Django) runs the same steps:

1. ``presented = flow.read_id(headers)``: the id the request presents, if any;
2. ``session = manager.load(presented.value if presented else None)``: no
   store call without an id, one round trip with one; then
   ``flow.binding.check(session, seen)``, where ``seen =
   flow.binding.observe(headers, peer)`` (client binding, off by default);
3. the application runs with the session where its framework expects it,
   inside ``flow.bound(session)`` (the id is then
   `sessionhub.propagation.current_session_id()`);
4. when the response starts: ``flow.binding.record(session, seen)`` and
   ``manager.commit(session)`` if ``flow.should_commit(status)``, then
   ``flow.response_headers(...)`` merged into the response's own with `merge_headers`.

A `StoreUnavailable` from step 2 or 4 is answered with ``flow.unavailable(exc)``:
a short plain-text 503 with Retry-After. Sync and async integrations differ only
in the manager they call (`SessionManager` or `AsyncSessionManager`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from http import HTTPStatus

from ..errors import StoreUnavailable
from ..manager import Outcome
from ..propagation import bind_session_id
from ..session import Session
from .binding import ClientBinding
from .resolvers import CookieResolver, HeaderSource, IdResolver, Presented

__all__ = ["PlainResponse", "SessionFlow", "merge_headers"]

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class PlainResponse:
    """A complete response an integration sends instead of the application's."""

    status: int
    headers: Headers
    body: bytes

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"


class SessionFlow:
    """The decisions of the request flow: which id, which response headers, which errors.

    `cache_control` is set on every response that sets or clears the id
    (None: leave the application's). `clear_site_data` lists the
    ``Clear-Site-Data`` directives sent when a session ends (logout), e.g.
    ``("cache", "storage")``. `retry_after` is the 503's Retry-After, in seconds.
    `binding` compares logged-in sessions' clients (`sessionhub.web.binding`).
    """

    def __init__(
        self,
        resolver: IdResolver | None = None,
        *,
        cache_control: str | None = "no-store",
        clear_site_data: Sequence[str] = (),
        retry_after: int = 1,
        binding: ClientBinding | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retry_after < 0:
            raise ValueError("retry_after must not be negative")
        self.resolver: IdResolver = CookieResolver() if resolver is None else resolver
        self.cache_control = cache_control
        self.clear_site_data = ", ".join(f'"{directive}"' for directive in clear_site_data)
        self.retry_after = retry_after
        self.binding = binding or ClientBinding()
        self.clock = clock

    def read_id(self, headers: HeaderSource) -> Presented | None:
        """The id the request presents, if any."""
        return self.resolver.read(headers)

    @staticmethod
    def bound(session: Session) -> AbstractContextManager[None]:
        """Makes the session's id the current one while the application runs."""
        return bind_session_id(session.id)

    @staticmethod
    def should_commit(status: int) -> bool:
        """Whether a response with `status` saves the session's changes.

        A request that ends in a server error keeps none of them (half-done
        work is not saved), as Django has always done.
        """
        return status < 500

    def response_headers(
        self, presented: Presented | None, session: Session, outcome: Outcome | None
    ) -> Headers:
        """What the response must carry; `outcome` is None when nothing was committed."""
        headers: Headers = []
        sends = outcome is not None and outcome.send
        if session.accessed or sends:
            # The body may depend on the session: caches must key on its carrier.
            headers.append(("Vary", ", ".join(self.resolver.vary)))
        if outcome is None or not sends:
            return headers
        resolver = presented.resolver if presented is not None else self.resolver
        headers += resolver.write(outcome, self.clock())
        if self.cache_control:
            headers.append(("Cache-Control", self.cache_control))
        if outcome.id is None and self.clear_site_data:
            headers.append(("Clear-Site-Data", self.clear_site_data))
        return headers

    def unavailable(self, exc: StoreUnavailable) -> PlainResponse:
        """The answer when the session store cannot be reached: a short 503."""
        body = f"503 Service Unavailable: {exc.reason}\n".encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Retry-After", str(self.retry_after)),
            ("Cache-Control", "no-store"),
        ]
        return PlainResponse(503, headers, body)


def merge_headers(existing: Iterable[tuple[str, str]], ours: Headers) -> Headers:
    """The application's response headers with the flow's added.

    Set-Cookie is appended; Vary is merged with the application's; any other
    header of ours replaces the application's of that name (a response that
    sets the session cookie must not stay cacheable because the view said so).
    """
    replaced = {name.lower() for name, _ in ours} - {"set-cookie", "vary"}
    vary: list[str] = []
    merged: Headers = []
    for name, value in existing:
        lower = name.lower()
        if lower == "vary":
            vary += value.split(",")
        elif lower not in replaced:
            merged.append((name, value))
    for name, value in ours:
        if name.lower() == "vary":
            vary += value.split(",")
        else:
            merged.append((name, value))
    tokens: dict[str, str] = {}
    for token in (each.strip() for each in vary):
        if token:
            tokens.setdefault(token.lower(), token)
    if tokens:
        merged.append(("Vary", "*" if "*" in tokens else ", ".join(tokens.values())))
    return merged

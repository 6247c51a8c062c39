"""ASGI middleware: a sessionhub session at ``scope["session"]``.

Starlette and FastAPI read it as ``request.session``, Litestar as
``request.session`` (``set_session`` and ``clear_session`` work too), Quart
through `sessionhub.web.quart`. The steps are `SessionFlow`'s: no store call
for a request without an id, one round trip to load, one to commit when the
response starts -- and only if something changed.

Changes made after the response has started (a streaming body) are not saved.
WebSocket connections get the session to read; their changes are not saved
(no response headers can carry a new id).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..config import ConfigError, Settings
from ..errors import StoreUnavailable
from ..manager import AsyncSessionManager
from ..session import Session
from .flow import (
    ANSWERED,
    RAISED_IN_VIEWS,
    PlainResponse,
    RequestCommits,
    SessionFlow,
    bind,
    merge_headers,
    unbind,
)

__all__ = ["SessionMiddleware"]

# Typed loosely on purpose: each framework has its own ASGI types, and all must fit.
Scope = Any
Message = Any
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class SessionMiddleware:
    """Wrap an ASGI app; the settings come from `Settings.load()` unless given.

    ``Starlette(middleware=[Middleware(SessionMiddleware)])``, or
    ``app.add_middleware(SessionMiddleware)`` (FastAPI). Litestar makes one
    middleware per route: ``Litestar(middleware=[SessionMiddleware.shared()])``
    lets them share one manager (and its connection pool).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings | None = None,
        manager: AsyncSessionManager | None = None,
        flow: SessionFlow | None = None,
    ) -> None:
        self.app = app
        #: Settings that cannot work: they fail the start-up (and any request).
        self.unusable: ConfigError | None = None
        if manager is None or flow is None:
            try:
                settings = settings or Settings.load()
            except ConfigError as exc:
                # Starlette and FastAPI build their middleware in the lifespan, where an
                # error passes for "no lifespan support" and the start-up goes on; kept
                # instead, it fails the start-up.
                self.unusable = exc
                return
            manager = manager or settings.async_session_manager()
            flow = flow or settings.flow(manager.lifecycle.ids)
        self.manager = manager
        self.flow = flow
        self._vary = (b"vary", flow.vary[1].encode("latin-1"))

    @classmethod
    def shared(cls, settings: Settings | None = None) -> Callable[[ASGIApp], SessionMiddleware]:
        """A middleware factory whose middlewares share one manager and flow."""
        settings = settings or Settings.load()
        manager, flow = settings.async_session_manager(), settings.flow()

        def middleware(app: ASGIApp) -> SessionMiddleware:
            return cls(app, manager=manager, flow=flow)

        return middleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            if self.unusable is not None and scope["type"] == "lifespan":
                await _fail_start_up(self.unusable, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if self.unusable is not None:
            raise self.unusable  # served without a lifespan
        flow = self.flow
        headers = _ScopeHeaders(scope["headers"])
        presented = flow.read_id(headers)
        binding = flow.binding
        seen = binding.observe(headers, _peer(scope)) if binding.enabled else None
        if presented is None or presented.value is None:
            session = self.manager.new_session()
        else:
            try:
                session = await self.manager.load(presented.value)
            except StoreUnavailable as exc:
                await self._refuse(scope, send, flow.unavailable(exc))
                return
            binding.check(session, seen)
        scope["session"] = session
        if scope["type"] == "websocket":
            # No committer: a new id could not reach the client.
            bound = bind(session._state.id, None)
            try:
                await self.app(scope, receive, send)
            finally:
                unbind(bound)
            return

        commits = RequestCommits(session, self.manager)
        started = False
        replaced = False  # the application's response gave way to the flow's answer

        async def send_with_session(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
                try:
                    _adopt_replacement(scope, session)
                    if seen is not None:
                        binding.record(session, seen)
                    commit = flow.needs_commit(session, message["status"])
                    outcome = await self.manager.commit(session) if commit else None
                except ANSWERED as exc:
                    replaced = True
                    await self._refuse(scope, send, flow.answer(exc))
                    return
                ours = flow.response_headers(presented, session, commits.news(outcome))
                message = self._with_headers(message, ours)
            await send(message)

        bound = bind(session._state.id, commits)
        try:
            await self.app(scope, receive, send_with_session)
        except RAISED_IN_VIEWS as exc:  # from login_now, let through by the view
            if started:
                raise
            await self._refuse(scope, send_with_session, flow.answer(exc))
        finally:
            unbind(bound)

    def _with_headers(self, start: Message, ours: list[tuple[str, str]]) -> Message:
        """The response start with the flow's headers added."""
        if not ours:
            return start
        raw = start.get("headers", ())
        if self.flow.only_vary(ours):
            if _mergeless(raw):
                return {**start, "headers": [*raw, self._vary]}
        elif _mergeless(raw, _clashing(ours)):
            # Nothing of the application's to merge with or replace: ours are
            # appended, in the order merge_headers gives (Vary last).
            added = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in ours]
            added.sort(key=_vary_last)
            return {**start, "headers": [*raw, *added]}
        existing = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
        merged = merge_headers(existing, ours)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in merged]
        return {**start, "headers": headers}

    @staticmethod
    async def _refuse(scope: Scope, send: Send, response: PlainResponse) -> None:
        if scope["type"] == "websocket":
            # 1013: try again later. Sent before accepting, the server answers 403.
            reason = response.body.decode().strip()[:120]
            await send({"type": "websocket.close", "code": 1013, "reason": reason})
            return
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


async def _fail_start_up(error: ConfigError, receive: Receive, send: Send) -> None:
    """Answer the lifespan's start-up with `error`: the server says it and stops."""
    if (await receive())["type"] == "lifespan.startup":
        await send({"type": "lifespan.startup.failed", "message": str(error)})


class _ScopeHeaders:
    """An ASGI scope's headers, looked up by lower-case name."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Any) -> None:
        self._headers: list[tuple[bytes, bytes]] = headers

    def get(self, name: str, /) -> str | None:
        wanted = name.encode("latin-1")
        found: bytes | None = None
        for key, value in self._headers:
            if key != wanted:
                continue
            if found is None:
                found = value
            elif name == "cookie":
                # HTTP/2 may split the Cookie header; it is rejoined with "; " (RFC 9113 8.2.3).
                found += b"; " + value
        return None if found is None else found.decode("latin-1")


_VARY_ONLY = frozenset({b"vary"})


def _vary_last(header: tuple[bytes, bytes]) -> bool:
    return header[0] == b"vary"


def _clashing(ours: list[tuple[str, str]]) -> set[bytes]:
    """The response header names that adding `ours` would merge or replace:
    Vary, and ours but Set-Cookie (appended whatever the response has)."""
    names = {name.lower().encode("latin-1") for name, _ in ours}
    return (names | _VARY_ONLY) - {b"set-cookie"}


def _mergeless(headers: Any, clash: frozenset[bytes] | set[bytes] = _VARY_ONLY) -> bool:
    """Whether adding our headers to these response headers needs no merge: none
    is named in `clash`, and every name is lower-case already, as ASGI asks (a
    merge would lower-case them)."""
    for name, _ in headers:  # noqa: SIM110 (a loop: half the time of all() over a generator)
        if name in clash or not name.islower():
            return False
    return True


def _peer(scope: Scope) -> str | None:
    """The address the connection comes from (None over a Unix socket)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _adopt_replacement(scope: Scope, session: Session) -> None:
    """Update the session if the application replaced ``scope["session"]``.

    Litestar's ``request.set_session(mapping)`` replaces the contents;
    ``request.clear_session()`` (or None) ends the session.
    """
    value: object = scope.get("session")
    if value is session:
        return
    if isinstance(value, Mapping):
        session.clear()
        session.update(value)
    elif value is None or value is _litestar_empty():
        session.invalidate()
    else:
        raise TypeError(
            f'scope["session"] was replaced by a {type(value).__name__}; '
            "sessionhub sessions hold JSON values: set a dict"
        )
    scope["session"] = session


def _litestar_empty() -> object:
    module = sys.modules.get("litestar.types.empty")
    return getattr(module, "Empty", None) if module is not None else None

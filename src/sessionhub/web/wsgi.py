"""WSGI middleware: a sessionhub session at ``environ["sessionhub.session"]``.

Works for any WSGI application; the Flask integration is this middleware plus
a session interface. The steps are `SessionFlow`'s: no store call for a
request without an id, one round trip to load, one to commit when the
application calls ``start_response`` -- and only if something changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ..config import Settings
from ..errors import StoreUnavailable
from ..manager import SessionManager
from ..session import Session
from .flow import (
    ANSWERED,
    RAISED_IN_VIEWS,
    PlainResponse,
    RequestCommits,
    SessionFlow,
    bind,
    has_vary,
    merge_headers,
    unbind,
)

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "session_of"]

#: Where the session is put in the WSGI environ.
ENVIRON_KEY = "sessionhub.session"

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def session_of(environ: Environ) -> Session:
    """The request's session (RuntimeError if the middleware is not installed)."""
    try:
        session: Session = environ[ENVIRON_KEY]
    except KeyError:
        raise RuntimeError(
            "no session: wrap the app in sessionhub.web.wsgi.SessionMiddleware"
        ) from None
    return session


class SessionMiddleware:
    """Wrap a WSGI app; the settings come from `Settings.load()` unless given."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        settings: Settings | None = None,
        manager: SessionManager | None = None,
        flow: SessionFlow | None = None,
    ) -> None:
        if manager is None or flow is None:
            settings = settings or Settings.load()
            manager = manager or settings.session_manager()
            flow = flow or settings.flow(manager.lifecycle.ids)
        self.app = app
        self.manager = manager
        self.flow = flow

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        flow = self.flow
        headers = _EnvironHeaders(environ)
        presented = flow.read_id(headers)
        binding = flow.binding
        seen = binding.observe(headers, environ.get("REMOTE_ADDR")) if binding.enabled else None
        if presented is None or presented.value is None:
            session = self.manager.new_session()
        else:
            try:
                session = self.manager.load(presented.value)
            except StoreUnavailable as exc:
                return _send(flow.unavailable(exc), start_response)
            binding.check(session, seen)
        environ[ENVIRON_KEY] = session
        commits = RequestCommits(session, self.manager)
        ours: list[tuple[str, str]] | None = None
        refused: list[PlainResponse] = []  # the answer that replaced the application's response

        def start_with_session(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            nonlocal ours
            if ours is None:  # the first call commits; a later one (with exc_info) reuses it
                try:
                    if seen is not None:
                        binding.record(session, seen)
                    commit = flow.needs_commit(session, int(status[:3]))
                    outcome = self.manager.commit(session) if commit else None
                except ANSWERED as exc:
                    refused.append(flow.answer(exc))
                    response = refused[0]
                    return start_response(response.status_line, response.headers, exc_info)
                ours = flow.response_headers(presented, session, commits.news(outcome))
            if (not ours or flow.only_vary(ours)) and not has_vary(headers):
                merged = [*headers, *ours]  # nothing to merge ours with
            else:
                merged = merge_headers(headers, ours)
            return start_response(status, merged, exc_info)

        bound = bind(session._state.id, commits)
        try:
            body = self.app(environ, start_with_session)
        except RAISED_IN_VIEWS as exc:  # from login_now, let through by the view
            if ours is not None or refused:
                raise
            body = _send(flow.answer(exc), start_with_session)
        finally:
            unbind(bound)
        if refused:
            _close(body)
            return [refused[0].body]
        if ours is not None:
            return body
        # The application will call start_response when its body is first iterated.
        return _replace_if_refused(body, refused)


def _send(response: PlainResponse, start_response: StartResponse) -> list[bytes]:
    start_response(response.status_line, response.headers)
    return [response.body]


def _replace_if_refused(body: Iterable[bytes], refused: list[PlainResponse]) -> Iterator[bytes]:
    try:
        for chunk in body:
            if refused:
                break
            yield chunk
        if refused:
            yield refused[0].body
    finally:
        _close(body)


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


class _EnvironHeaders:
    """A WSGI environ's request headers, looked up by lower-case name."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Environ) -> None:
        self._environ = environ

    def get(self, name: str, /) -> str | None:
        value = self._environ.get(_environ_key(name))
        return value if isinstance(value, str) else None


@functools.cache  # a few names (the resolvers' and the binding's), asked on every request
def _environ_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")

"""What every web integration does around a request, in one place and free of I/O.

Each integration (ASGI, WSGI, Flask, Quart, Django) runs the same steps:

1. ``presented = flow.read_id(headers)``: the id the request presents, if any
   (of several candidates, the first of the id's shape);
2. ``session = manager.load(presented.value)``: one round trip; without an
   id, ``manager.new_session()`` (no store call, nothing to await); then
   ``flow.binding.check(session, seen)``, where ``seen =
   flow.binding.observe(headers, peer)`` (client binding, off by default);
3. the application runs with the session where its framework expects it,
   between ``bound = bind(session_id, commits)`` and ``unbind(bound)``, with
   ``commits = RequestCommits(session, manager)``: the id is then
   `sessionhub.propagation.current_session_id()`, and `sessionhub.auth.login_now`
   can commit a login while the view runs;
4. when the response starts: ``flow.binding.record(session, seen)`` and
   ``manager.commit(session)`` if ``flow.needs_commit(session, status)``, then
   ``flow.response_headers(presented, session, commits.news(outcome))`` merged
   into the response's own with `merge_headers`.

The errors in `ANSWERED` are answered with ``flow.answer(exc)`` instead of the
application's response: a `StoreUnavailable` (step 2 or 4) with a short
plain-text 503 with Retry-After, a `LoginRefused` (a session limit refusing a
login, step 4) with a 409, a `SessionEnded` (the session ended, or was signed
in again, by another request while this one ran, step 4) with a 409 that
leaves the client's cookie alone; nothing of the request is saved. Those of
`RAISED_IN_VIEWS` that the application lets escape (from ``login_now``) are
answered the same, as if the application had returned the answer. Sync and
async integrations differ only in the manager they call (`SessionManager` or
`AsyncSessionManager`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from ..errors import LoginRefused, SessionEnded, StoreUnavailable
from ..ids import IdScheme
from ..manager import AsyncSessionManager, Outcome, SessionManager
from ..propagation import RequestToken, bind_request, current_committer_or_none, unbind_request
from ..session import Session
from .binding import ClientBinding
from .resolvers import CookieResolver, HeaderSource, IdResolver, Presented

__all__ = [
    "ANSWERED",
    "RAISED_IN_VIEWS",
    "Bound",
    "Committer",
    "PlainResponse",
    "RequestCommits",
    "SessionFlow",
    "bind",
    "current_committer",
    "has_vary",
    "merge_headers",
    "unbind",
]

Headers = list[tuple[str, str]]

#: The errors the flow answers itself, in place of the application's response.
ANSWERED = (StoreUnavailable, LoginRefused, SessionEnded)
#: Those a view may meet (committing at once with ``login_now``) and let escape.
RAISED_IN_VIEWS = (LoginRefused, SessionEnded)


class Committer(Protocol):
    """Commits the request's session while the application runs (`sessionhub.auth.login_now`)."""

    def commit(self, session: Session) -> None: ...

    async def acommit(self, session: Session) -> None: ...


Bound = RequestToken


def bind(session_id: str | None, committer: Committer | None) -> Bound:
    """While the application runs: `session_id` is the current one (propagation),
    and `committer` commits for `sessionhub.auth.login_now` (None: nothing does).

    Undo it with `unbind`, in the same context, once the application is done
    (a ``try``/``finally``: cheaper per request than a context manager).
    """
    return bind_request(session_id, committer)


def unbind(bound: Bound) -> None:
    """Undo `bind`."""
    unbind_request(bound)


def current_committer() -> Committer:
    """The committer of the request being served (RuntimeError outside of one)."""
    committer: Committer | None = current_committer_or_none()
    if committer is None:
        raise RuntimeError(
            "no sessionhub request flow is running here: committing at once needs an HTTP "
            "request served through a sessionhub middleware (with Django's own "
            "SessionMiddleware, call request.session.save())"
        )
    return committer


class RequestCommits:
    """The commits of one request's session made while the application runs.

    The response must still tell the client what such a commit changed (the
    new id of a login), even when its own commit has nothing to add: `news`.
    """

    def __init__(self, session: Session, manager: SessionManager | AsyncSessionManager) -> None:
        self.session = session
        self.manager = manager
        self.told: Outcome | None = None

    def commit(self, session: Session) -> None:
        self._check(session)
        if not isinstance(self.manager, SessionManager):
            raise RuntimeError("an asyncio app commits with await: use alogin_now()")
        self._note(self.manager.commit(session))

    async def acommit(self, session: Session) -> None:
        self._check(session)
        if not isinstance(self.manager, AsyncSessionManager):
            raise RuntimeError("a synchronous app cannot await a commit: use login_now()")
        self._note(await self.manager.commit(session))

    def news(self, outcome: Outcome | None) -> Outcome | None:
        """What the response tells the client, given its own commit's `outcome`
        (None: not committed): that, unless an earlier commit has news it lacks."""
        if outcome is not None and outcome.send:
            return outcome
        return self.told or outcome

    def _check(self, session: Session) -> None:
        if session is not self.session:
            raise ValueError("only the session of the request being served can be committed here")

    def _note(self, outcome: Outcome) -> None:
        if outcome.send:
            self.told = outcome


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
    `ids`: the id scheme of the manager the flow serves, whose shape check picks
    the id among several a request presents.
    """

    def __init__(
        self,
        resolver: IdResolver | None = None,
        *,
        cache_control: str | None = "no-store",
        clear_site_data: Sequence[str] = (),
        retry_after: int = 1,
        binding: ClientBinding | None = None,
        ids: IdScheme | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retry_after < 0:
            raise ValueError("retry_after must not be negative")
        self.resolver: IdResolver = CookieResolver() if resolver is None else resolver
        self.cache_control = cache_control
        self.clear_site_data = ", ".join(f'"{directive}"' for directive in clear_site_data)
        self.retry_after = retry_after
        self.binding = binding or ClientBinding()
        self.ids = ids or IdScheme()
        self.clock = clock
        #: The Vary header of a response that used the session, its tokens as
        #: `merge_headers` leaves them (so that `only_vary` can skip the merge).
        self.vary = ("Vary", _vary_value(self.resolver.vary))

    def read_id(self, headers: HeaderSource) -> Presented | None:
        """The id the request presents, if any: of several, the first well-formed one,
        so a malformed cookie of the same name (set on a parent domain, say) cannot
        hide the session's; if none is well-formed, the first (it loads no session)."""
        candidates = self.resolver.candidates(headers)
        for presented in candidates:
            if presented.value is not None and self.ids.well_formed(presented.value):
                return presented
        return candidates[0] if candidates else None

    @staticmethod
    def should_commit(status: int) -> bool:
        """Whether a response with `status` saves the session's changes.

        A request that ends in a server error keeps none of them (half-done
        work is not saved), as Django has always done.
        """
        return status < 500

    @staticmethod
    def needs_commit(session: Session, status: int) -> bool:
        """Whether the response commits `session`: if `should_commit`, and unless
        the session is new and unchanged -- its commit would store nothing and
        tell nothing (what an earlier commit has to tell is `RequestCommits.news`)."""
        state = session._state
        return SessionFlow.should_commit(status) and (state.ref is not None or state.modified)

    def response_headers(
        self, presented: Presented | None, session: Session, outcome: Outcome | None
    ) -> Headers:
        """What the response must carry; `outcome` is None when nothing was committed."""
        headers: Headers = []
        sends = outcome is not None and outcome.send
        if (session.accessed or sends) and self.vary[1]:
            # The body may depend on the session: caches must key on its carrier.
            headers.append(self.vary)
        if outcome is None or not sends:
            return headers
        resolver = presented.resolver if presented is not None else self.resolver
        headers += resolver.write(outcome, self.clock())
        if self.cache_control:
            headers.append(("Cache-Control", self.cache_control))
        if outcome.id is None and self.clear_site_data:
            headers.append(("Clear-Site-Data", self.clear_site_data))
        return headers

    def only_vary(self, ours: Headers) -> bool:
        """Whether `ours` (from `response_headers`) is the Vary header alone: the
        common case, a session used and nothing to set. Added to a response
        without a Vary of its own, it is then appended as it is, no merge needed."""
        return len(ours) == 1 and ours[0] is self.vary

    def answer(self, exc: StoreUnavailable | LoginRefused | SessionEnded) -> PlainResponse:
        """The answer to one of the `ANSWERED` errors."""
        if isinstance(exc, LoginRefused):
            return self.refused(exc)
        if isinstance(exc, SessionEnded):
            return self.ended(exc)
        return self.unavailable(exc)

    def unavailable(self, exc: StoreUnavailable) -> PlainResponse:
        """The answer when the session store cannot be reached: a short 503."""
        return _plain(503, exc.reason, [("Retry-After", str(self.retry_after))])

    @staticmethod
    def refused(exc: LoginRefused) -> PlainResponse:
        """The answer when a session limit refuses a login: a short 409.

        It does not name the principal: the reason is enough for the user.
        """
        reason = (
            f"login refused: this account already has {exc.max_sessions} sessions, "
            "the most allowed; sign out of one of them first"
        )
        return _plain(409, reason)

    @staticmethod
    def ended(exc: SessionEnded) -> PlainResponse:
        """The answer when the session ended (or was signed in again) under the
        request: a short 409. No Set-Cookie: the request that ended or rotated
        the session tells the client; this one must not undo that."""
        return _plain(409, exc.reason)


def _plain(status: int, reason: str, extra: Headers | None = None) -> PlainResponse:
    body = f"{status} {HTTPStatus(status).phrase}: {reason}\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *(extra or []),
        ("Cache-Control", "no-store"),
    ]
    return PlainResponse(status, headers, body)


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
    value = _vary_value(vary)
    if value:
        merged.append(("Vary", value))
    return merged


def has_vary(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether `headers` hold a Vary header."""
    for name, _ in headers:  # noqa: SIM110 (a loop: half the time of any() over a generator)
        if name.lower() == "vary":
            return True
    return False


def _vary_value(tokens: Iterable[str]) -> str:
    """A Vary value of `tokens`: each once (whatever its case; the first spelling
    kept), or ``*`` if one is; empty if there are none."""
    unique: dict[str, str] = {}
    for token in (each.strip() for each in tokens):
        if token:
            unique.setdefault(token.lower(), token)
    return "*" if "*" in unique else ", ".join(unique.values())

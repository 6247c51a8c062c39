"""Django: a ``SESSION_ENGINE`` on sessionhub, and a middleware to go with it.

In ``settings.py``::

    SESSION_ENGINE = "sessionhub.web.django"
    SESSIONHUB = {"profile": "prod", "redis": {"url": "redis://redis:6379"}}  # or SESSIONHUB_*

``request.session`` keeps Django's API, sync and async (``aget``, ``asave``...),
and ``django.contrib.auth``'s ``login()`` (``cycle_key()``) and ``logout()``
(``flush()``) do what they always did. With Django's own SessionMiddleware the
cookie follows Django's ``SESSION_COOKIE_*`` settings; replacing it in
``MIDDLEWARE`` with ``"sessionhub.web.django.SessionMiddleware"`` gives the
sessionhub request flow instead: its cookie policy or header ids, Vary and
Cache-Control, a saved session only when something changed (in-place changes
included), and a 503 when the store is down.

Where Django's own engines differ, this one follows the sessionhub core:

* an empty session is never stored, so ``save()`` of an empty session leaves
  ``session_key`` None (a visitor who stores nothing costs nothing);
* the server-side lifetime is the sessionhub idle timeout; unless
  ``SESSIONHUB["timeouts"]`` sets one, it is ``SESSION_COOKIE_AGE``.
  ``set_expiry(seconds | timedelta | datetime)`` changes it for the session
  (a "remember me"); an expiry in the past ends the session at ``save()``.
* ``_auth_user_id`` (set by ``login()``) becomes the session's principal, so
  "log out everywhere" and the per-user listing know the user. When a session
  limit refuses that login, ``save()`` raises `LoginRefused` and the session
  forgets the user (``login()``'s keys are taken out again): call
  ``request.session.save()`` right after ``login()`` to find out in the view.

The sessionhub middleware answers a `LoginRefused` (at its commit, or let
through by a view) with a 409; while a request runs, its id is
`sessionhub.propagation.current_session_id()` (the id it came with: sessions
load lazily, so it is not looked up first) and ``sessionhub.auth.login_now``
commits through ``request.session``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Container, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from http.cookies import Morsel
from inspect import isawaitable
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

from ..config import Settings
from ..errors import LoginRefused, SessionEnded, StoreUnavailable
from ..expiry import ExpiryWorker
from ..manager import AsyncSessionManager, Outcome, SessionManager
from ..policy import Timeouts
from ..session import Session
from .binding import ClientSignals
from .flow import ANSWERED, Bound, PlainResponse, SessionFlow, bind, unbind
from .resolvers import Presented
from .worker import start_expiry_worker as _start_expiry_worker
from .wsgi import _EnvironHeaders

__all__ = ["SessionMiddleware", "SessionStore", "start_expiry_worker"]

_EXPIRY = "_session_expiry"  # where Django's set_expiry() keeps its value


class _Runtime:
    """What the engine builds from the settings: once, and again when tests change them."""

    def __init__(self) -> None:
        settings = Settings.load(**getattr(django_settings, "SESSIONHUB", {}))
        if "timeouts" not in settings.model_fields_set:
            age = float(django_settings.SESSION_COOKIE_AGE)
            default = Timeouts()
            timeouts = Timeouts(age, max(age, default.absolute), default.refresh_share)
            settings = settings.model_copy(update={"timeouts": timeouts})
        self.settings = settings
        self.manager: SessionManager = settings.session_manager()
        self.flow: SessionFlow = settings.flow()
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncSessionManager]
        self._async = weakref.WeakKeyDictionary()

    def async_manager(self) -> AsyncSessionManager:
        """The asyncio manager of the running loop (asyncio clients belong to one loop)."""
        loop = asyncio.get_running_loop()
        manager = self._async.get(loop)
        if manager is None:
            manager = self._async[loop] = self.settings.async_session_manager()
        return manager


_runtime: _Runtime | None = None


def runtime() -> _Runtime:
    global _runtime
    if _runtime is None:
        _runtime = _Runtime()
    return _runtime


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    global _runtime
    if setting in ("SESSIONHUB", "SESSION_COOKIE_AGE"):
        _runtime = None


setting_changed.connect(_settings_changed)

# Django's own SessionMiddleware imports this engine when it is built, at start-up: the
# settings are made then, so that settings that cannot work stop the start-up instead of
# failing every request (this module's SessionMiddleware makes them when it is built).
if django_settings.configured:
    runtime()


def start_expiry_worker() -> ExpiryWorker | None:
    """Start the expiry worker if ``SESSIONHUB["expiry"]`` enables it; None otherwise.

    Call it once at start-up, from an ``AppConfig.ready()``: the worker is a
    daemon thread on the engine's store, stopped when the process exits.
    """
    engine = runtime()
    return _start_expiry_worker(engine.settings, store=engine.manager.store)


class SessionStore(SessionBase):
    """Django's session API over a sessionhub `Session`.

    Django's methods keep their meaning; the data is a sessionhub session,
    loaded on first use (one round trip) and saved per attribute. The sync
    and async methods differ only in the manager they call; what happens
    around a commit is written once (`_before_commit`, `_settle`).
    """

    def __init__(self, session_key: str | None = None) -> None:
        # SessionBase.__init__ but for the serializer, which this engine never
        # uses: an import_string per request saved (`serializer` is lazy).
        self._session_key = session_key
        self.accessed = False
        self.modified = False
        self._expiry_set = False
        self._told: Outcome | None = None  # the last commit the client must hear of
        self._failure: StoreUnavailable | None = None
        self.presented: Presented | None = None  # set by sessionhub's middleware
        self.seen: ClientSignals | None = None  # likewise (client binding)

    @cached_property
    def serializer(self) -> Any:
        """Django's SESSION_SERIALIZER (for ``encode()``/``decode()``; not used here)."""
        return import_string(django_settings.SESSION_SERIALIZER)

    # -- the data: a sessionhub Session where Django keeps a dict ------------------

    @property
    def sessionhub_session(self) -> Session:
        """The sessionhub session (loaded if need be), for `sessionhub.auth`."""
        return self._get_session()

    def _get_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        if "_session_cache" not in self.__dict__:
            fresh = self.session_key is None or no_load
            self._session_cache = runtime().manager.new_session() if fresh else self.load()
        session: Session = self._session_cache
        return session

    async def _aget_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        if "_session_cache" not in self.__dict__:
            fresh = self.session_key is None or no_load
            self._session_cache = runtime().manager.new_session() if fresh else await self.aload()
        session: Session = self._session_cache
        return session

    _session = property(_get_session)

    def load(self) -> Session:
        try:
            return self._loaded(runtime().manager.load(self.session_key))
        except StoreUnavailable as exc:
            self._failure = exc
            raise

    async def aload(self) -> Session:
        try:
            return self._loaded(await runtime().async_manager().load(self.session_key))
        except StoreUnavailable as exc:
            self._failure = exc
            raise

    def _loaded(self, session: Session) -> Session:
        runtime().flow.binding.check(session, self.seen)
        if session._state.ref is None:
            self._session_key = None  # unknown or expired: never adopted
        return session

    def clear(self) -> None:
        self._session.clear()
        self.modified = True

    def get_session_cookie_age(self) -> int:
        return int(runtime().settings.timeouts.idle)

    def set_expiry(self, value: Any) -> None:
        super().set_expiry(value)
        self._expiry_set = True

    async def aset_expiry(self, value: Any) -> None:
        await super().aset_expiry(value)
        self._expiry_set = True

    # -- the storage operations ----------------------------------------------------

    def exists(self, session_key: str | None) -> bool:
        return bool(session_key) and not runtime().manager.load(session_key).is_new

    async def aexists(self, session_key: str | None) -> bool:
        return bool(session_key) and not (await runtime().async_manager().load(session_key)).is_new

    def create(self) -> None:
        """Start a new, empty session; it gets its key when something is stored in it."""
        self._session_cache = runtime().manager.new_session()
        self._session_key = None
        self.modified = True

    async def acreate(self) -> None:
        self.create()

    def save(self, must_create: bool = False) -> None:
        session = self._session
        self._before_commit(session)
        with _committing(session, update_error=True):
            outcome = runtime().manager.commit(session)
        self._settle(session, outcome)

    async def asave(self, must_create: bool = False) -> None:
        session = await self._aget_session()
        self._before_commit(session)
        with _committing(session, update_error=True):
            outcome = await runtime().async_manager().commit(session)
        self._settle(session, outcome)

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None or session_key == self.session_key:
            session = self._session
            session.invalidate()
            self._settle(session, runtime().manager.commit(session))
            return
        other = runtime().manager.load(session_key)
        other.invalidate()
        runtime().manager.commit(other)

    async def adelete(self, session_key: str | None = None) -> None:
        manager = runtime().async_manager()
        if session_key is None or session_key == self.session_key:
            session = await self._aget_session()
            session.invalidate()
            self._settle(session, await manager.commit(session))
            return
        other = await manager.load(session_key)
        other.invalidate()
        await manager.commit(other)

    def cycle_key(self) -> None:
        """A new key for the same data; the old key stops working now."""
        session = self._session
        session.rotate()
        if session._state.ref is not None:
            with _interrupting():
                self.save()
        self.modified = True

    async def acycle_key(self) -> None:
        session = await self._aget_session()
        session.rotate()
        if session._state.ref is not None:
            with _interrupting():
                await self.asave()
        self.modified = True

    def flush(self) -> None:
        """End the session now (deleted from the store); the next write starts a new one."""
        self.delete()
        self.modified = True

    async def aflush(self) -> None:
        await self.adelete()
        self.modified = True

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: the store drops expired sessions itself (Redis TTLs)."""

    @classmethod
    async def aclear_expired(cls) -> None:
        """Nothing to do: the store drops expired sessions itself (Redis TTLs)."""

    # -- around a commit: written once for both ------------------------------------

    def _before_commit(self, session: Session) -> None:
        """Carry Django's expiry and login over to the session."""
        if self._expiry_set:
            self._expiry_set = False
            _apply_expiry(session, session.get(_EXPIRY))
        principal = session.get(SESSION_KEY)
        if isinstance(principal, str) and principal and principal != session._state.principal():
            session.login(principal, now=runtime().manager.lifecycle.clock())
        runtime().flow.binding.record(session, self.seen)

    def _settle(self, session: Session, outcome: Outcome) -> None:
        self._session_key = session._state.id
        if outcome.send:
            self._told = outcome

    def _outcome_for_response(self, session: Session, status: int) -> Outcome | None:
        """Commit `session` (unless the flow skips it), and what the response must
        tell the client of everything committed (None: nothing)."""
        # Asked before `_before_commit`, which changes nothing of a new session
        # that nobody changed (no expiry set, no login).
        if runtime().flow.needs_commit(session, status):
            self._before_commit(session)
            with _interrupting(), _committing(session):
                outcome = runtime().manager.commit(session)
            self._settle(session, outcome)
        told, self._told = self._told, None
        return told


@contextmanager
def _committing(session: Session, *, update_error: bool = False) -> Iterator[None]:
    """Around a commit, Django's way: on `LoginRefused`, contrib.auth's keys are
    taken out of the session whose login was refused (Django must not see a
    user the store never logged in); with `update_error`, a `SessionEnded` is
    Django's `UpdateError` (what ``save()`` raises for a session deleted meanwhile)."""
    try:
        yield
    except LoginRefused:
        if session.get(SESSION_KEY) not in (None, session._state.principal()):
            for key in (SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY):
                session.pop(key, None)
        raise
    except SessionEnded as exc:
        if update_error:
            raise UpdateError from exc
        raise


@contextmanager
def _interrupting() -> Iterator[None]:
    """A session ended under the request is answered as Django's own middleware
    answers it: `SessionInterrupted`, a 400 (no Set-Cookie: the ending request
    tells the client)."""
    try:
        yield
    except (SessionEnded, UpdateError) as exc:
        raise SessionInterrupted(
            "The request's session was deleted before the request completed. The user "
            "may have logged out in a concurrent request, for example."
        ) from exc


def _apply_expiry(session: Session, expiry: Any) -> None:
    """Make the store keep `session` as long as ``set_expiry()`` asked.

    The session's absolute timeout still applies to a number of seconds.
    """
    if isinstance(expiry, str):  # set_expiry(datetime | timedelta) stores an ISO date
        at = datetime.fromisoformat(expiry)
        seconds = (at - timezone.now()).total_seconds()
        absolute: float | None = at.timestamp() - session.created_at
    elif isinstance(expiry, int | float) and not isinstance(expiry, bool) and expiry:
        seconds, absolute = float(expiry), None
    else:
        return  # None or 0: the default lifetime (0: the cookie ends with the browser)
    if seconds <= 0:
        session.invalidate()
    else:
        session.remember(idle=seconds, absolute=absolute)


class SessionMiddleware(MiddlewareMixin):
    """In place of Django's SessionMiddleware: the sessionhub request flow."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        runtime()  # settings errors show at start-up, not at the first request

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self._acall(request)
        bound = self._begin(request)
        try:
            return super().__call__(request)
        finally:
            unbind(bound)

    async def _acall(self, request: HttpRequest) -> Any:
        bound = self._begin(request)
        try:
            response = super().__call__(request)  # in async mode: a coroutine
            assert isawaitable(response)
            return await response
        finally:
            unbind(bound)

    def _begin(self, request: HttpRequest) -> Bound:
        """Give the request its session; what holds while the rest of the request runs
        (until `unbind`).

        Around the whole request rather than in ``process_request``: the
        context must be reset in the context it was set in, and Django runs
        ``process_request`` in another (a thread's) under ASGI.
        """
        flow = runtime().flow
        # request.META rather than request.headers: the same values, without
        # building Django's copy of every header on each request.
        headers = _EnvironHeaders(request.META)
        presented = flow.read_id(headers)
        session_id = presented.value if presented else None
        store = SessionStore(session_id)
        store.presented = presented
        binding = flow.binding
        if binding.enabled:
            store.seen = binding.observe(headers, request.META.get("REMOTE_ADDR"))
        request.session = store
        return bind(session_id, _StoreCommits(store))

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, ANSWERED):
            return _plain(runtime().flow.answer(exception))
        return None

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        store = getattr(request, "session", None)
        if not isinstance(store, SessionStore):
            return response
        flow = runtime().flow
        if store._failure is not None:
            return _plain(flow.unavailable(store._failure))
        session: Session | None = store.__dict__.get("_session_cache")
        if session is None:
            return response  # never used: nothing to save, nothing to tell
        status = response.status_code
        try:
            commit = flow.should_commit(status)
            outcome = store._outcome_for_response(session, status) if commit else None
        except ANSWERED as exc:
            return _plain(flow.answer(exc))
        for name, value in flow.response_headers(store.presented, session, outcome):
            lower = name.lower()
            if lower == "set-cookie":
                morsel = _SetCookie(value)
                response.cookies[morsel.key] = morsel
            elif lower != "vary":
                response.headers[name] = value
            elif response.has_header("Vary"):
                patch_vary_headers(response, [token.strip() for token in value.split(",")])
            else:
                response.headers[name] = value  # nothing to merge it with
        return response


class _StoreCommits:
    """Commits for ``sessionhub.auth.login_now``: the request's store saves, and
    tells the response what changed (its ``_told``)."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def commit(self, session: Session) -> None:
        self._check(session)
        with _interrupting():
            self.store.save()

    async def acommit(self, session: Session) -> None:
        self._check(session)
        with _interrupting():
            await self.store.asave()

    def _check(self, session: Session) -> None:
        if session is not self.store.__dict__.get("_session_cache"):
            raise ValueError("only the session of the request being served can be committed here")


class _SetCookie(Morsel[str]):
    """A cookie Django sends exactly as the resolver wrote it."""

    def __init__(self, header: str) -> None:
        super().__init__()
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        self.set(name, value, value)
        self._header = header

    def OutputString(self, attrs: Container[str] | None = None) -> str:
        return self._header


def _plain(response: PlainResponse) -> HttpResponse:
    django_response = HttpResponse(response.body, status=response.status)
    for name, value in response.headers:
        django_response.headers[name] = value
    return django_response

"""The admin dashboard: an ASGI app to mount in an application or serve alone.

::

    admin = AdminApp.from_settings(authenticate=operator_of)   # deny by default
    app = Starlette(routes=[Mount("/admin/sessions", admin)], middleware=[...])

``operator_of(request)`` is the application's: it returns the operator's name,
or None to refuse (sync or async). Mounted under `SessionMiddleware`, it can
look at ``request.session`` (the operator's own login). Without a hook every
request is refused with 403; a hook refusing gets 401 with its ``challenge``
attribute as ``WWW-Authenticate`` when it has one (`PasswordAuth`), else 403.
Each refusal is a failed sign-in: past the `SignInThrottle`'s limits a client
gets 429 with Retry-After, its credentials not even looked at.

=======================  ================================================================
``GET /``                live sessions, events per minute (chart), recent events;
                         ``?user=NAME`` adds that user's sessions, each with an End button
``POST /end``            end one session (``handle``; with ``user``, only one of theirs)
``POST /end-user``       end every session of ``user``
=======================  ================================================================

Every response carries a strict CSP (no script at all; one style block by
nonce), ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``, ``no-store``
and ``Referrer-Policy: same-origin``. Actions need the CSRF token of the page
and a same-origin browser (`sessionhub.admin.guard`).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import secrets
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..config import Settings
from ..connect import async_redis_client
from ..errors import StoreUnavailable
from ..events import Reason
from ..hooks import base_store
from ..ids import is_handle, looks_like_id
from ..manager import AsyncSessionManager
from ..stores.redis import AsyncRedisStore
from ..stores.redis.survey import events_since, live_sessions, recent_events
from .chart import bucket
from .guard import Authenticate, CsrfTokens, same_origin
from .pages import Overview, denied, overview, user_link
from .throttle import SignInThrottle

__all__ = ["AdminApp"]

Scope = Any
Receive = Any
Send = Any

_MAX_USER = 512
# Never repeated: the page shows no session id, even one an operator pasted by mistake.
_NOT_A_USER = (
    "That looks like a session id (a cookie's value), not a user name: it was neither "
    "looked up nor shown. Search by the user's name; sessions are ended by their handle."
)
_OPERATOR = "sessionhub.operator"
_NONCE = "sessionhub.nonce"


def _csp(nonce: str) -> str:
    return (
        "default-src 'none'; "
        f"style-src 'nonce-{nonce}'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


class AdminApp:
    """The dashboard over `manager` (an `AsyncSessionManager` on Redis).

    `chart_minutes`: minutes of the chart. `recent`: events listed.
    `stream_limit`: the most events read per shard stream for the chart.
    `csrf_secret`: shared by every instance behind one balancer.
    `trusted_origins`: origins besides the request's own allowed to POST.
    `throttle`: how many failed sign-ins it takes (default: `SignInThrottle()`).
    """

    def __init__(
        self,
        manager: AsyncSessionManager,
        *,
        authenticate: Authenticate | None = None,
        chart_minutes: int = 60,
        recent: int = 50,
        stream_limit: int = 2000,
        csrf_secret: bytes | None = None,
        trusted_origins: tuple[str, ...] = (),
        throttle: SignInThrottle | None = None,
    ) -> None:
        store = base_store(manager.store)
        if not isinstance(store, AsyncRedisStore):
            raise TypeError(
                "the dashboard reads the Redis event streams: give it a manager on an "
                f"AsyncRedisStore, not {type(store).__name__}"
            )
        self.manager = manager
        self.store = store
        self.authenticate = authenticate
        self.chart_minutes = chart_minutes
        self.recent = recent
        self.stream_limit = stream_limit
        self.csrf = CsrfTokens(csrf_secret)
        self.trusted_origins = trusted_origins
        self.throttle = throttle or SignInThrottle()
        self._app = Starlette(
            routes=[
                Route("/", self.show, methods=["GET"]),
                Route("/end", self.end_one, methods=["POST"]),
                Route("/end-user", self.end_all, methods=["POST"]),
            ],
            exception_handlers={StoreUnavailable: _unavailable},
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **options: Any) -> AdminApp:
        """A dashboard on the Redis the settings name (whatever their ``store``), taking
        as many failed sign-ins as ``admin.sign_in`` says."""
        settings = settings or Settings.load()
        store = AsyncRedisStore(
            async_redis_client(settings.redis),
            namespace=settings.namespace,
            **settings.redis.store_options(),
        )
        options.setdefault("throttle", SignInThrottle(**settings.admin.sign_in.model_dump()))
        return cls(AsyncSessionManager(store, lifecycle=settings.lifecycle()), **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)  # lifespan, when served alone
            return
        nonce = secrets.token_urlsafe(16)
        scope[_NONCE] = nonce

        async def send_guarded(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"cache-control", b"content-security-policy")
                ]
                headers += [
                    (b"content-security-policy", _csp(nonce).encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),  # "no-referrer" would make Origin null
                    (b"cache-control", b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        if self.authenticate is None:
            message = "The dashboard has no authentication hook, so it lets no one in."
            await HTMLResponse(denied(message, nonce), 403)(scope, receive, send_guarded)
            return
        request = Request(scope, receive)
        client = request.client.host if request.client else None
        wait = self.throttle.admit(client)
        if wait:  # not even asked: the right password waits as long as a wrong one
            await _throttled(wait, nonce)(scope, receive, send_guarded)
            return
        operator = await self._operator(self.authenticate, request)
        if operator is None:
            await self._refusal(self.authenticate, nonce)(scope, receive, send_guarded)
            return
        self.throttle.succeeded(client)
        scope[_OPERATOR] = operator
        await self._app(scope, receive, send_guarded)

    @staticmethod
    async def _operator(authenticate: Authenticate, request: Request) -> str | None:
        found = authenticate(request)
        if inspect.isawaitable(found):
            found = await found
        return found if isinstance(found, str) and found else None

    @staticmethod
    def _refusal(authenticate: Authenticate, nonce: str) -> Response:
        challenge = getattr(authenticate, "challenge", None)
        if isinstance(challenge, str):
            page = denied("Sign in to see the sessions.", nonce)
            return HTMLResponse(page, status_code=401, headers={"WWW-Authenticate": challenge})
        return HTMLResponse(denied("You may not see the sessions.", nonce), status_code=403)

    # -- the page --------------------------------------------------------------------------

    async def show(self, request: Request) -> Response:
        user = request.query_params.get("user", "").strip()[:_MAX_USER] or None
        if user is not None and looks_like_id(user):
            return _error(request, _NOT_A_USER, 400)
        operator: str = request.scope[_OPERATOR]
        commands = self.store.commands
        now = time.time()
        since = int((now // 60 - self.chart_minutes + 1) * 60 * 1000)
        live, window, recent, sessions = await asyncio.gather(
            self.store.arun(live_sessions(commands, int(now * 1000))),
            self.store.arun(events_since(commands, since, self.stream_limit)),
            self.store.arun(recent_events(commands, self.recent)),
            self.manager.sessions_of(user) if user else _nothing(),
        )
        page = Overview(
            operator=operator,
            csrf=self.csrf.mint(operator),
            live=sum(live.values()),
            buckets=bucket(window.events, now, self.chart_minutes, window.complete_from),
            recent=recent,
            user=user,
            sessions=sorted(sessions, key=lambda s: s.accessed_at, reverse=True),
            notice=request.query_params.get("done"),
        )
        return HTMLResponse(overview(page, request.scope[_NONCE]))

    # -- the actions -----------------------------------------------------------------------

    async def _form(self, request: Request) -> dict[str, str] | Response:
        """The action's form, or the refusal of a request that is not the page's own."""
        form = await request.form()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        operator: str = request.scope[_OPERATOR]
        token = fields.get("csrf", "")
        if not same_origin(request, self.trusted_origins) or not self.csrf.valid(token, operator):
            message = "This action did not come from the dashboard's page: refused."
            return _error(request, message, 403)
        user = fields.get("user", "").strip()
        if len(user) > _MAX_USER:
            return _error(request, "That user name is too long.", 400)
        if looks_like_id(user):
            return _error(request, _NOT_A_USER, 400)
        fields["user"] = user
        return fields

    async def end_one(self, request: Request) -> Response:
        fields = await self._form(request)
        if isinstance(fields, Response):
            return fields
        handle, user = fields.get("handle", ""), fields["user"]
        if not is_handle(handle):
            return _error(request, "That is not a session handle.", 400)
        ended = await self.manager.end_session(handle, principal=user or None, reason=Reason.ADMIN)
        return _back(user, "ended" if ended else "gone")

    async def end_all(self, request: Request) -> Response:
        fields = await self._form(request)
        if isinstance(fields, Response):
            return fields
        user = fields["user"]
        if not user:
            return _error(request, "Which user?", 400)
        await self.manager.end_sessions(user, reason=Reason.ADMIN)
        return _back(user, "ended-all")


async def _unavailable(request: Request, exc: Exception) -> Response:
    reason = exc.reason if isinstance(exc, StoreUnavailable) else "unavailable"
    return _error(request, f"Redis cannot be reached right now ({reason}). Try again.", 503)


def _throttled(wait: float, nonce: str) -> Response:
    seconds = max(1, math.ceil(wait))
    message = f"Too many failed sign-ins: try again in {seconds} seconds."
    return HTMLResponse(denied(message, nonce), 429, headers={"Retry-After": str(seconds)})


def _error(request: Request, message: str, status: int) -> Response:
    return HTMLResponse(denied(message, request.scope[_NONCE]), status_code=status)


async def _nothing() -> list[Any]:
    return []


def _back(user: str, done: str) -> Response:
    location = user_link(user) + f"&done={done}" if user else f"./?done={done}"
    return RedirectResponse(location, status_code=303)

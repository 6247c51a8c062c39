"""sessionhub wired into the benchmarked frameworks.

INTERIM: until sessionhub.web (issue 3) lands, a minimal ASGI middleware and
Flask session interface over the managers stand in for it.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import redis
import redis.asyncio
from starlette.middleware import Middleware

from sessionhub import AsyncRedisStore, AsyncSessionManager, RedisStore, SessionManager

COOKIE = "session"


def _cookie_header(value: str | None) -> str:
    return f"{COOKIE}={value or ''}; Path=/; HttpOnly; SameSite=Lax"


class _InterimAsgi:
    def __init__(self, app: Any, manager: AsyncSessionManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                morsel = SimpleCookie(value.decode("latin-1")).get(COOKIE)
                raw = morsel.value if morsel else None
        session = await self.manager.load(raw)
        scope["session"] = session

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                outcome = await self.manager.commit(session)
                if outcome.send:
                    headers = list(message.get("headers", ()))
                    headers.append((b"set-cookie", _cookie_header(outcome.id).encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)


def asgi_middleware(redis_url: str) -> Middleware:
    store = AsyncRedisStore(redis.asyncio.Redis.from_url(redis_url))
    return Middleware(_InterimAsgi, manager=AsyncSessionManager(store))


def flask_init(app: Any, redis_url: str) -> None:
    from flask.sessions import SessionInterface

    manager = SessionManager(RedisStore(redis.Redis.from_url(redis_url)))

    class Interim(SessionInterface):
        def open_session(self, app: Any, request: Any) -> Any:
            return manager.load(request.cookies.get(COOKIE))

        def save_session(self, app: Any, session: Any, response: Any) -> None:
            outcome = manager.commit(session)
            if outcome.send:
                response.headers.add("Set-Cookie", _cookie_header(outcome.id))

    app.session_interface = Interim()

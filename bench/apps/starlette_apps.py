"""Starlette: bare, sessionhub's ASGI middleware, starsessions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import scenario

GetSession = Callable[[Request, str], Awaitable[scenario.Session]]


def _app(get_session: GetSession, middleware: list[Middleware]) -> Starlette:
    def endpoint(kind: str) -> Callable[[Request], Awaitable[Response]]:
        handler = getattr(scenario, kind)

        async def run(request: Request) -> Response:
            return Response(handler(await get_session(request, kind)))

        return run

    async def set_attribute(request: Request) -> Response:
        session = await get_session(request, "set")
        return Response(scenario.set_attribute(session, request.path_params["name"]))

    routes = [Route(f"/{kind}", endpoint(kind)) for kind in (*scenario.KINDS, "count")]
    routes.append(Route("/set/{name}", set_attribute))
    return Starlette(routes=routes, middleware=middleware)


def bare(redis_url: str) -> Starlette:
    async def get_session(request: Request, kind: str) -> scenario.Session:
        return scenario.bare_session(kind)

    return _app(get_session, [])


def sessionhub(redis_url: str) -> Starlette:
    from bench.apps.sessionhub_web import asgi_middleware

    async def get_session(request: Request, kind: str) -> scenario.Session:
        session: scenario.Session = request.session
        return session

    return _app(get_session, [asgi_middleware(redis_url)])


def starsessions(redis_url: str) -> Starlette:
    import redis.asyncio
    from starsessions import SessionMiddleware, load_session
    from starsessions.stores.redis import RedisStore

    store = RedisStore(connection=redis.asyncio.Redis.from_url(redis_url))

    async def get_session(request: Request, kind: str) -> scenario.Session:
        await load_session(request)
        session: scenario.Session = request.session
        return session

    # Same lifetime as sessionhub's default idle timeout; http test traffic.
    options: dict[str, Any] = {"store": store, "lifetime": 1800, "cookie_https_only": False}
    return _app(get_session, [Middleware(SessionMiddleware, **options)])

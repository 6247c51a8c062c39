"""aiohttp: bare, and aiohttp-session on its Redis storage."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bench import scenario


def _app(middlewares: list[Any], with_sessions: bool) -> web.Application:
    async def session(request: web.Request, kind: str) -> scenario.Session:
        if not with_sessions:
            return scenario.bare_session(kind)
        from aiohttp_session import get_session

        session: scenario.Session = await get_session(request)
        return session

    def endpoint(kind: str) -> Any:
        handler = getattr(scenario, kind)

        async def run(request: web.Request) -> web.Response:
            return web.Response(body=handler(await session(request, kind)))

        return run

    async def set_attribute(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.Response(body=scenario.set_attribute(await session(request, "set"), name))

    app = web.Application(middlewares=middlewares)
    for kind in (*scenario.KINDS, "count"):
        app.router.add_get(f"/{kind}", endpoint(kind))
    app.router.add_get("/set/{name}", set_attribute)
    return app


def bare(redis_url: str) -> web.Application:
    return _app([], False)


def redis_sessions(redis_url: str) -> web.Application:
    import redis.asyncio
    from aiohttp_session import session_middleware
    from aiohttp_session.redis_storage import RedisStorage

    storage = RedisStorage(redis.asyncio.Redis.from_url(redis_url), max_age=1800)
    return _app([session_middleware(storage)], True)

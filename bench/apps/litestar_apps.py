"""Litestar: bare, and its server-side sessions on its Redis store."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, get
from litestar.middleware.session.server_side import ServerSideSessionConfig

from bench import scenario


def _app(with_sessions: bool, **options: Any) -> Litestar:
    def session(request: Request[Any, Any, Any], kind: str) -> scenario.Session:
        return request.session if with_sessions else scenario.bare_session(kind)

    def endpoint(kind: str) -> Any:
        handler = getattr(scenario, kind)

        @get(f"/{kind}", media_type="text/plain", sync_to_thread=False)
        def run(request: Request[Any, Any, Any]) -> bytes:
            return handler(session(request, kind))  # type: ignore[no-any-return]

        return run

    @get("/set/{name:str}", media_type="text/plain", sync_to_thread=False)
    def set_attribute(request: Request[Any, Any, Any], name: str) -> bytes:
        return scenario.set_attribute(session(request, "set"), name)

    handlers = [endpoint(kind) for kind in (*scenario.KINDS, "count")]
    return Litestar(
        route_handlers=[*handlers, set_attribute], debug=False, logging_config=None, **options
    )


def bare(redis_url: str) -> Litestar:
    return _app(False)


def sessionhub(redis_url: str) -> Litestar:
    from bench.apps.sessionhub_web import settings
    from sessionhub.web.asgi import SessionMiddleware

    # As docs/frameworks.md says: Litestar builds one middleware per route, and
    # `shared()` lets them share one manager (and one connection pool).
    return _app(True, middleware=[SessionMiddleware.shared(settings(redis_url))])


def server_side(redis_url: str) -> Litestar:
    from litestar.stores.redis import RedisStore

    config = ServerSideSessionConfig(store="sessions", max_age=1800, secure=False)
    store = RedisStore.with_client(url=redis_url)
    return _app(True, middleware=[config.middleware], stores={"sessions": store})

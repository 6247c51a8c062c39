"""Who is measured: each session library on its framework, and that framework bare.

A contender builds a driver (see drivers.py) for an app serving the paths of
scenario.py. Bare contenders have no sessions; a library's cost is its app's
time minus the bare app's time, on the same framework.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.drivers import AiohttpDriver, AsgiDriver, Driver, WsgiDriver

#: async contenders are compared with an asyncio round trip, sync ones with a sync one
ASYNC, SYNC = "async (ASGI / aiohttp)", "sync (WSGI)"


@dataclass(frozen=True)
class Contender:
    name: str
    family: str
    framework: str
    library: str | None  # None: the framework with no sessions
    build: Callable[[str], Driver]
    cookie: str = "session"
    #: An opt-in configuration of sessionhub: shown beside the others, but neither
    #: judged against the targets (they are for the defaults) nor a peer to beat.
    variant: bool = False

    @property
    def bare(self) -> bool:
        return self.library is None

    @property
    def is_sessionhub(self) -> bool:
        return self.library == "sessionhub"


def _app(module: str, factory: str, driver: Callable[[Any], Driver]) -> Callable[[str], Driver]:
    """Builds `bench.apps.<module>.<factory>(redis_url)` under `driver`, importing it late
    (a framework is imported only when one of its apps is measured)."""

    def build(redis_url: str) -> Driver:
        make = getattr(importlib.import_module(f"bench.apps.{module}"), factory)
        return driver(make(redis_url))

    return build


def _sessionhub_cached_starlette(redis_url: str) -> Driver:
    """sessionhub on Starlette with client-side caching on: repeat reads skip Redis."""
    from starlette.middleware import Middleware

    from bench.apps import starlette_apps
    from bench.apps.sessionhub_web import SETTINGS
    from sessionhub.config import Settings
    from sessionhub.web.asgi import SessionMiddleware

    settings = Settings.load(**SETTINGS, redis={"url": redis_url}, client_cache={"enabled": True})
    app = starlette_apps.sessionhub(redis_url)
    app.user_middleware[:] = [Middleware(SessionMiddleware, settings=settings)]
    return AsgiDriver(app)


_STARLETTE, _LITESTAR, _AIOHTTP = "starlette_apps", "litestar_apps", "aiohttp_apps"
_FLASK, _DJANGO = "flask_apps", "django_apps"

CONTENDERS = [
    Contender("Starlette (bare)", ASYNC, "Starlette", None, _app(_STARLETTE, "bare", AsgiDriver)),
    Contender("sessionhub · Starlette", ASYNC, "Starlette", "sessionhub",
              _app(_STARLETTE, "sessionhub", AsgiDriver)),
    # sessionhub with its opt-in client cache: a repeat read sends no Redis command.
    Contender("sessionhub (client cache) · Starlette", ASYNC, "Starlette", "sessionhub",
              _sessionhub_cached_starlette, variant=True),
    Contender("starsessions · Starlette", ASYNC, "Starlette", "starsessions",
              _app(_STARLETTE, "starsessions", AsgiDriver)),
    Contender("Litestar (bare)", ASYNC, "Litestar", None, _app(_LITESTAR, "bare", AsgiDriver)),
    Contender("sessionhub · Litestar", ASYNC, "Litestar", "sessionhub",
              _app(_LITESTAR, "sessionhub", AsgiDriver)),
    Contender("Litestar server-side", ASYNC, "Litestar", "litestar",
              _app(_LITESTAR, "server_side", AsgiDriver)),
    Contender("aiohttp (bare)", ASYNC, "aiohttp", None, _app(_AIOHTTP, "bare", AiohttpDriver)),
    Contender("aiohttp-session", ASYNC, "aiohttp", "aiohttp-session",
              _app(_AIOHTTP, "redis_sessions", AiohttpDriver), cookie="AIOHTTP_SESSION"),
    Contender("Flask (bare)", SYNC, "Flask", None, _app(_FLASK, "bare", WsgiDriver)),
    Contender("sessionhub · Flask", SYNC, "Flask", "sessionhub",
              _app(_FLASK, "sessionhub", WsgiDriver)),
    Contender("Flask-Session", SYNC, "Flask", "Flask-Session",
              _app(_FLASK, "flask_session", WsgiDriver)),
    Contender("Django (bare)", SYNC, "Django", None, _app(_DJANGO, "bare", WsgiDriver)),
    Contender("sessionhub · Django", SYNC, "Django", "sessionhub",
              _app(_DJANGO, "sessionhub", WsgiDriver)),
    Contender("Django cache sessions", SYNC, "Django", "django",
              _app(_DJANGO, "cache_sessions", WsgiDriver), cookie="sessionid"),
]  # fmt: skip


def bare_of(contender: Contender) -> Contender:
    return next(c for c in CONTENDERS if c.bare and c.framework == contender.framework)

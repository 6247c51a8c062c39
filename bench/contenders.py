"""Who is measured: each session library on its framework, and that framework bare.

A contender builds a driver (see drivers.py) for an app serving the paths of
scenario.py. Bare contenders have no sessions; a library's cost is its app's
time minus the bare app's time, on the same framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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

    @property
    def bare(self) -> bool:
        return self.library is None

    @property
    def is_sessionhub(self) -> bool:
        return self.library == "sessionhub"


def _starlette_bare(url: str) -> Driver:
    from bench.apps import starlette_apps

    return AsgiDriver(starlette_apps.bare())


def _starlette_sessionhub(url: str) -> Driver:
    from bench.apps import starlette_apps

    return AsgiDriver(starlette_apps.sessionhub(url))


def _starsessions(url: str) -> Driver:
    from bench.apps import starlette_apps

    return AsgiDriver(starlette_apps.starsessions(url))


def _litestar_bare(url: str) -> Driver:
    from bench.apps import litestar_apps

    return AsgiDriver(litestar_apps.bare())


def _litestar_sessions(url: str) -> Driver:
    from bench.apps import litestar_apps

    return AsgiDriver(litestar_apps.server_side(url))


def _aiohttp_bare(url: str) -> Driver:
    from bench.apps import aiohttp_apps

    return AiohttpDriver(aiohttp_apps.bare())


def _aiohttp_sessions(url: str) -> Driver:
    from bench.apps import aiohttp_apps

    return AiohttpDriver(aiohttp_apps.redis_sessions(url))


def _flask_bare(url: str) -> Driver:
    from bench.apps import flask_apps

    return WsgiDriver(flask_apps.bare())


def _flask_sessionhub(url: str) -> Driver:
    from bench.apps import flask_apps

    return WsgiDriver(flask_apps.sessionhub(url))


def _flask_session(url: str) -> Driver:
    from bench.apps import flask_apps

    return WsgiDriver(flask_apps.flask_session(url))


def _django_bare(url: str) -> Driver:
    from bench.apps import django_apps

    return WsgiDriver(django_apps.bare(url))


def _django_cache(url: str) -> Driver:
    from bench.apps import django_apps

    return WsgiDriver(django_apps.cache_sessions(url))


CONTENDERS = [
    Contender("Starlette (bare)", ASYNC, "Starlette", None, _starlette_bare),
    Contender("sessionhub · Starlette", ASYNC, "Starlette", "sessionhub", _starlette_sessionhub),
    Contender("starsessions · Starlette", ASYNC, "Starlette", "starsessions", _starsessions),
    Contender("Litestar (bare)", ASYNC, "Litestar", None, _litestar_bare),
    Contender("Litestar server-side", ASYNC, "Litestar", "litestar", _litestar_sessions),
    Contender("aiohttp (bare)", ASYNC, "aiohttp", None, _aiohttp_bare),
    Contender(
        "aiohttp-session", ASYNC, "aiohttp", "aiohttp-session", _aiohttp_sessions,
        cookie="AIOHTTP_SESSION",
    ),
    Contender("Flask (bare)", SYNC, "Flask", None, _flask_bare),
    Contender("sessionhub · Flask", SYNC, "Flask", "sessionhub", _flask_sessionhub),
    Contender("Flask-Session", SYNC, "Flask", "Flask-Session", _flask_session),
    Contender("Django (bare)", SYNC, "Django", None, _django_bare),
    Contender(
        "Django cache sessions", SYNC, "Django", "django", _django_cache, cookie="sessionid"
    ),
]  # fmt: skip


def bare_of(contender: Contender) -> Contender:
    return next(c for c in CONTENDERS if c.bare and c.framework == contender.framework)

"""Django: bare, sessionhub's engine and middleware, and the cache session
backend on Django's own RedisCache.

Django's settings are process-wide, so `configure` runs once; each app is a
WSGIHandler built while MIDDLEWARE says what it should have.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import path

from bench import scenario


def _session(request: HttpRequest, kind: str) -> scenario.Session:
    if getattr(request, "session", None) is None:
        return scenario.bare_session(kind)
    session: scenario.Session = request.session
    return session


def _endpoint(kind: str) -> Any:
    handler = getattr(scenario, kind)

    def run(request: HttpRequest) -> HttpResponse:
        return HttpResponse(handler(_session(request, kind)))

    return run


def _set_attribute(request: HttpRequest, name: str) -> HttpResponse:
    return HttpResponse(scenario.set_attribute(_session(request, "set"), name))


urlpatterns = [path(kind, _endpoint(kind)) for kind in (*scenario.KINDS, "count")]
urlpatterns.append(path("set/<str:name>", _set_attribute))


def _configure(redis_url: str) -> None:
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-" + "x" * 50,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        APPEND_SLASH=False,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url,
            }
        },
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        SESSION_EXPIRE_AT_BROWSER_CLOSE=True,
        # sessionhub's middleware brings its own engine; these are its settings
        SESSIONHUB=sessionhub_settings(redis_url),
        USE_TZ=True,
    )
    import django

    django.setup()


def _handler(redis_url: str, middleware: list[str]) -> Any:
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    _configure(redis_url)
    settings.MIDDLEWARE = middleware
    return WSGIHandler()


def bare(redis_url: str) -> Any:
    return _handler(redis_url, [])


def sessionhub_settings(redis_url: str) -> dict[str, Any]:
    from bench.apps.sessionhub_web import SETTINGS

    return {**SETTINGS, "redis": {"url": redis_url}}


def sessionhub(redis_url: str) -> Any:
    return _handler(redis_url, ["sessionhub.web.django.SessionMiddleware"])


def cache_sessions(redis_url: str) -> Any:
    return _handler(redis_url, ["django.contrib.sessions.middleware.SessionMiddleware"])

"""sessionhub wired into the benchmarked frameworks, as a user would wire it.

Settings are sessionhub's defaults, with the benchmark's Redis and a cookie
without Secure (the test speaks plain HTTP), like the peers get.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware

from sessionhub.config import Settings

#: sessionhub's defaults but for the store and a cookie without Secure
SETTINGS: dict[str, Any] = {"store": "redis", "cookie": {"secure": False}}


def settings(redis_url: str) -> Settings:
    return Settings.load(**SETTINGS, redis={"url": redis_url})


def asgi_middleware(redis_url: str) -> Middleware:
    from sessionhub.web.asgi import SessionMiddleware

    return Middleware(SessionMiddleware, settings=settings(redis_url))


def flask_init(app: Any, redis_url: str) -> None:
    from sessionhub.web.flask import SessionHub

    SessionHub(app, settings=settings(redis_url))

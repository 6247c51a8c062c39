"""Building Redis clients from settings: the one place that does it.

`RedisSettings` says where Redis is (a URL, or host/port/password) and how
long to wait for it; `redis_client` and `async_redis_client` build the client.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from pydantic import BaseModel, SecretStr

__all__ = ["RedisSettings", "async_redis_client", "redis_client"]


class RedisSettings(BaseModel):
    """Where the session Redis is and how long to wait for it."""

    url: str | None = None
    host: str = "127.0.0.1"
    port: int = 6379
    username: str | None = None
    password: SecretStr | None = None
    db: int = 0
    #: Seconds to wait for a connection / an answer before the request fails.
    connect_timeout: float = 0.5
    socket_timeout: float = 0.5

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
        }
        if self.url is None:
            options.update(host=self.host, port=self.port, db=self.db, username=self.username)
            if self.password is not None:
                options["password"] = self.password.get_secret_value()
        return options


def redis_client(settings: RedisSettings) -> redis.Redis:
    options = settings.client_options()
    if settings.url:
        return redis.Redis.from_url(settings.url, **options)
    return redis.Redis(**options)


def async_redis_client(settings: RedisSettings) -> redis.asyncio.Redis:
    options = settings.client_options()
    if settings.url:
        return redis.asyncio.Redis.from_url(settings.url, **options)
    return redis.asyncio.Redis(**options)

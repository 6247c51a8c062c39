"""Settings: one object configures the store, the cookie and the request flow.

Read, first match wins, from: keyword arguments, the environment
(``SESSIONHUB_*``, nested with ``__``: ``SESSIONHUB_COOKIE__NAME``), a ``.env``
file in the working directory, then a YAML or TOML file given to
`Settings.load` or named by ``SESSIONHUB_CONFIG_FILE``.

Two profiles: ``dev`` (the default: memory store, cookie without Secure so
plain-HTTP localhost works) and ``prod`` (Redis store, Secure cookie, named
``__Host-session`` unless a name, a Domain or a Path other than / is set). The
``prod`` profile refuses an insecure cookie when the settings are made, that
is at application start-up, with an error saying what to change.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from .connect import RedisSettings, async_redis_client, redis_client
from .errors import SessionError
from .expiry import AsyncExpiryWorker, ExpirySweep, ExpiryWorker
from .hooks import instrumented
from .ids import IdScheme
from .manager import AsyncSessionManager, Lifecycle, SessionManager
from .policy import Timeouts
from .stores.base import AsyncStore, Store
from .stores.memory import MemoryStore
from .stores.redis import AsyncRedisStore, RedisStore
from .users import SessionLimit
from .web.binding import ClientBinding
from .web.flow import SessionFlow
from .web.resolvers import (
    CompositeResolver,
    CookiePolicy,
    CookieResolver,
    HeaderResolver,
    IdResolver,
)

__all__ = [
    "AdminSettings",
    "ClientCacheSettings",
    "ConfigError",
    "ExpirySettings",
    "Settings",
    "SignInLimits",
    "nest",
]

logger = logging.getLogger("sessionhub")

_MEMORY_BY_DEFAULT = (
    "sessionhub: no store is set, so sessions are kept in this process's memory: no other "
    "process sees them (each gunicorn worker, each instance issues its own) and a restart "
    "loses them. To share them, set SESSIONHUB_STORE=redis and "
    "SESSIONHUB_REDIS__URL=redis://host:6379/0; to keep them here, SESSIONHUB_STORE=memory "
    "says so and silences this."
)

_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "sessionhub_config_file", default=None
)

ClearSiteData = Literal["cache", "cookies", "storage", "executionContexts", "*"]


class ConfigError(SessionError, ValueError):
    """Settings that cannot be used; the message says which and why."""


class ExpirySettings(BaseModel):
    """The expiry worker, which reports sessions that time out (`sessionhub.expiry`).

    Off unless `enabled`: the helpers of `sessionhub.web.worker` then start
    nothing, and no `expired` events are reported.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    #: Seconds between sweeps: an expired session is reported about this late.
    interval: float = Field(default=1.0, gt=0)
    #: Seconds the sweeping instance's lease lasts unrenewed (unset: 3 intervals).
    lease_ttl: float | None = Field(default=None, gt=0)
    #: The most sessions handled per store call.
    batch: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ExpirySettings:
        ExpirySweep(**self.options())  # a lease shorter than the interval fails here
        return self

    def options(self) -> dict[str, Any]:
        """The keyword arguments of `ExpiryWorker` and `AsyncExpiryWorker`."""
        return {"interval": self.interval, "lease_ttl": self.lease_ttl, "batch": self.batch}


class ClientCacheSettings(BaseModel):
    """Client-side caching of session reads on the Redis store (off unless enabled).

    A repeat read of an unchanged session is answered from this process's memory;
    Redis tells every instance at once of any change (broadcast tracking), so another
    instance's logout goes unseen here for about one network delay, and at most
    twice `heartbeat` if the connection silently stops delivering (docs/operating.md).
    Standalone Redis and Sentinel only, not Cluster.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    #: The most sessions kept per store (least recently read go first).
    size: int = Field(default=10_000, ge=1)
    #: Seconds without hearing from Redis before a PING; as long again unanswered, the
    #: cache is dropped. Nothing is served from memory after twice this without a PONG.
    heartbeat: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class SignInLimits(BaseModel):
    """Failed sign-ins the admin dashboard takes before it makes clients wait
    (`sessionhub.admin.throttle`): a burst, then one more per interval."""

    model_config = ConfigDict(extra="forbid")

    #: Failed sign-ins one client (address; IPv6: its /64) may make in a row...
    client_failures: int = Field(default=5, ge=1)
    #: ...then one more every this many seconds.
    client_interval: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    #: Failed sign-ins of all clients together in a row...
    total_failures: int = Field(default=50, ge=1)
    #: ...then one more every this many seconds.
    total_interval: float = Field(default=2.0, gt=0, allow_inf_nan=False)


class AdminSettings(BaseModel):
    """The admin dashboard (`sessionhub.admin`, `sessionhub admin`)."""

    model_config = ConfigDict(extra="forbid")

    sign_in: SignInLimits = Field(default_factory=SignInLimits)


class Settings(BaseSettings):
    """Everything sessionhub can be told. Build it with `Settings.load()`."""

    model_config = SettingsConfigDict(
        env_prefix="SESSIONHUB_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
    )

    profile: Literal["dev", "prod"] = "dev"
    #: Where sessions live; unset: "memory" under dev, "redis" under prod.
    store: Literal["memory", "redis"] = "memory"
    #: Prefix of every Redis key.
    namespace: str = "sh"
    redis: RedisSettings = Field(default_factory=RedisSettings)
    #: Answer repeat reads from memory, kept coherent by Redis (Redis store only).
    client_cache: ClientCacheSettings = Field(default_factory=ClientCacheSettings)
    #: Unset `secure` follows the profile: on under prod; under dev, on only when
    #: the other settings need it (a __Host-/__Secure- name, SameSite=None, Partitioned).
    cookie: CookiePolicy = Field(default_factory=CookiePolicy)
    #: Where requests carry the id, tried in this order; the first answers new clients.
    resolvers: tuple[Literal["cookie", "header"], ...] = ("cookie",)
    #: The header of the "header" resolver.
    header: str = "X-Session-Id"
    timeouts: Timeouts = Field(default_factory=Timeouts)
    #: Cache-Control of responses that set or clear the id (None: leave the app's).
    cache_control: str | None = "no-store"
    #: Clear-Site-Data directives sent when a session ends (logout).
    clear_site_data: tuple[ClearSiteData, ...] = ()
    #: Retry-After (seconds) of the 503 sent when the store is unavailable.
    retry_after: int = Field(default=1, ge=0)
    #: Go on with an unsaved session instead of answering 503 when the store is down.
    degrade_when_unavailable: bool = False
    #: Key of the id digests (handles); set it to make handles unlinkable to ids.
    digest_key: SecretStr | None = None
    #: Compare a logged-in session's client with the one it logged in from (off by default).
    client_binding: ClientBinding = Field(default_factory=ClientBinding)
    #: At most this many sessions per user, and what a login beyond does (unset: no limit).
    session_limit: SessionLimit | None = None
    #: Schedule and report anonymous sessions too (their `expired` events; costs memory).
    anonymous_events: bool = False
    #: Entries kept in each Redis event stream (64 streams); 0 publishes none.
    stream_length: int = Field(default=10_000, ge=0)
    #: The expiry worker (`expired` events): off unless enabled.
    expiry: ExpirySettings = Field(default_factory=ExpirySettings)
    #: The admin dashboard: how many failed sign-ins it takes.
    admin: AdminSettings = Field(default_factory=AdminSettings)

    _memory: MemoryStore | None = PrivateAttr(default=None)

    @classmethod
    def load(cls, file: str | os.PathLike[str] | None = None, **values: Any) -> Settings:
        """The settings from `values`, the environment, ``.env`` and `file`.

        `file` (or ``SESSIONHUB_CONFIG_FILE``) is a ``.yaml``/``.yml`` or
        ``.toml`` file holding the same keys as the environment, nested.
        Raises `ConfigError` with every problem listed.
        """
        misspelt = _misspelt_variables(os.environ)
        if misspelt:
            raise ConfigError("\n".join(["invalid sessionhub settings:", *misspelt]))
        name = file if file is not None else os.environ.get("SESSIONHUB_CONFIG_FILE")
        path = Path(name) if name else None
        if path is not None:
            if path.suffix.lower() not in (".yaml", ".yml", ".toml"):
                raise ConfigError(f"sessionhub config file {path}: use a .yaml, .yml or .toml file")
            if not path.is_file():
                raise ConfigError(f"sessionhub config file {path} does not exist")
        token = _config_file.set(path)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        except (ValueError, TypeError) as exc:  # an unreadable file
            raise ConfigError(f"sessionhub config file {path}: {exc}") from None
        finally:
            _config_file.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, dotenv_settings]
        path = _config_file.get()
        if path is not None and path.suffix.lower() == ".toml":
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        elif path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return (*sources, file_secret_settings)

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        prod = data.get("profile", "dev") == "prod"
        if prod:
            data.setdefault("store", "redis")  # under dev, the default: see `memory_store`
        cookie = data.get("cookie", {})
        if isinstance(cookie, Mapping):
            if prod and _host_prefix_fits(cookie):
                # The browser then enforces Secure, Path=/ and no Domain (ASVS 3.3.1, 3.3.3).
                cookie = {**cookie, "name": "__Host-session"}
            if "secure" not in cookie:
                cookie = {**cookie, "secure": prod or _needs_secure(cookie)}
            data["cookie"] = cookie
        return data

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.profile == "prod" and not self.cookie.secure:
            raise ValueError(
                "cookie.secure: the prod profile refuses a session cookie without Secure; "
                "serve over HTTPS and drop cookie.secure=false (SESSIONHUB_COOKIE__SECURE), "
                "or use the dev profile for local development"
            )
        return self

    # -- what the settings build --------------------------------------------------

    def lifecycle(self, **options: Any) -> Lifecycle:
        """The lifecycle rules; `options` go to `Lifecycle` (e.g. a test clock)."""
        options.setdefault("timeouts", self.timeouts)
        options.setdefault("ids", self.id_scheme())
        options.setdefault("degrade_when_unavailable", self.degrade_when_unavailable)
        options.setdefault("session_limit", self.session_limit)
        return Lifecycle(**options)

    def id_scheme(self) -> IdScheme:
        """The id scheme of the managers these settings build."""
        key = self.digest_key.get_secret_value().encode() if self.digest_key else b""
        return IdScheme(digest_key=key)

    def session_manager(self, **options: Any) -> SessionManager:
        """A manager for synchronous code (WSGI, Flask, Django)."""
        if self.store == "memory":
            manager = SessionManager(self.memory_store(), lifecycle=self.lifecycle(**options))
        else:
            store = RedisStore(redis_client(self.redis), **self._redis_store_options())
            manager = SessionManager(store, lifecycle=self.lifecycle(**options))
        return instrumented(manager)  # metrics, logs, traces (sessionhub.hooks)

    def async_session_manager(self, **options: Any) -> AsyncSessionManager:
        """A manager for asyncio code (ASGI); make one per event loop."""
        if self.store == "memory":
            manager = AsyncSessionManager(self.memory_store(), lifecycle=self.lifecycle(**options))
        else:
            store = AsyncRedisStore(async_redis_client(self.redis), **self._redis_store_options())
            manager = AsyncSessionManager(store, lifecycle=self.lifecycle(**options))
        return instrumented(manager)

    def _redis_store_options(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "anonymous_events": self.anonymous_events,
            "stream_length": self.stream_length,
            "cache": self.client_cache.enabled,
            "cache_size": self.client_cache.size,
            "cache_heartbeat": self.client_cache.heartbeat,
            **self.redis.store_options(),
        }

    def memory_store(self) -> MemoryStore:
        """The in-process store, shared by every manager these settings build.

        Made when the first manager is, at start-up; if no setting chose it, with
        a warning: sessions that stay in one process are lost to every other.
        """
        if self._memory is None:
            if "store" not in self.model_fields_set:
                logger.warning(_MEMORY_BY_DEFAULT)
            self._memory = MemoryStore(anonymous_events=self.anonymous_events)
        return self._memory

    def expiry_worker(self, store: Store | None = None) -> ExpiryWorker:
        """An expiry worker (not started), sweeping `store`: by default the store
        of a manager these settings build. Whether `expiry.enabled` is not asked."""
        return ExpiryWorker(store or self.session_manager().store, **self.expiry.options())

    def async_expiry_worker(self, store: AsyncStore | None = None) -> AsyncExpiryWorker:
        """The asyncio twin of `expiry_worker`; make it in the event loop it runs in."""
        chosen = store or self.async_session_manager().store
        return AsyncExpiryWorker(chosen, **self.expiry.options())

    def resolver(self) -> IdResolver:
        by_name: dict[str, IdResolver] = {
            "cookie": CookieResolver(self.cookie),
            "header": HeaderResolver(self.header),
        }
        chosen = [by_name[name] for name in dict.fromkeys(self.resolvers)]
        return chosen[0] if len(chosen) == 1 else CompositeResolver(chosen)

    def flow(self, ids: IdScheme | None = None) -> SessionFlow:
        """The request flow; `ids`: the scheme of the manager it serves, if not these
        settings' (it tells the id among several candidates)."""
        return SessionFlow(
            self.resolver(),
            cache_control=self.cache_control,
            clear_site_data=self.clear_site_data,
            retry_after=self.retry_after,
            binding=self.client_binding,
            ids=ids or self.id_scheme(),
        )


def nest(flat: Mapping[str, Any], prefix: str = "SESSIONHUB_") -> dict[str, Any]:
    """Flat prefixed keys (``SESSIONHUB_COOKIE__NAME``) as nested settings values.

    For frameworks whose configuration is flat, such as Flask's ``app.config``.
    """
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if not key.startswith(prefix) or key == prefix + "CONFIG_FILE":
            continue
        *parents, leaf = key[len(prefix) :].lower().split("__")
        target = nested
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return nested


def _misspelt_variables(environ: Mapping[str, str]) -> list[str]:
    """``SESSIONHUB_COOKIE_NAME``-like variables: one underscore short, so otherwise ignored."""
    present = {name.upper() for name in environ}
    sections = {
        "cookie": CookiePolicy,
        "redis": RedisSettings,
        "client_cache": ClientCacheSettings,
        "timeouts": Timeouts,
        "client_binding": ClientBinding,
        "session_limit": SessionLimit,
        "expiry": ExpirySettings,
        "admin": AdminSettings,
    }
    problems = []
    for section, kind in sections.items():
        names = kind.model_fields if issubclass(kind, BaseModel) else _dataclass_fields(kind)
        for field in names:
            wrong = f"SESSIONHUB_{section}_{field}".upper()
            if wrong in present:
                right = f"SESSIONHUB_{section}__{field}".upper()
                problems.append(f"  {wrong}: nested keys take two underscores: {right}")
    return problems


def _dataclass_fields(kind: Any) -> list[str]:
    return [field.name for field in dataclasses.fields(kind)]


def _host_prefix_fits(cookie: Mapping[str, Any]) -> bool:
    """Whether a cookie setting leaves room for the __Host- default name."""
    return (
        "name" not in cookie
        and not cookie.get("domain")
        and cookie.get("path", "/") == "/"
        and cookie.get("secure", True) is not False
    )


def _needs_secure(cookie: Mapping[str, Any]) -> bool:
    """Whether the rest of a cookie's settings only work with Secure (a dev default)."""
    name = str(cookie.get("name", ""))
    return (
        name.startswith(("__Host-", "__Secure-"))
        or str(cookie.get("same_site", "")).lower() == "none"
        or str(cookie.get("partitioned", "")).lower() in ("true", "1", "yes", "on")
    )


def _describe(exc: ValidationError) -> str:
    lines = ["invalid sessionhub settings:"]
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)

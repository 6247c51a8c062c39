"""Settings: sources and their order, profiles, refusals, and what the settings build."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from sessionhub import AsyncRedisStore, MemoryStore, RedisStore
from sessionhub.config import ConfigError, Settings, nest
from sessionhub.web import CompositeResolver, CookieResolver, HeaderResolver
from tests.servers import RedisServer


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SESSIONHUB_* variables and no .env from outside; cwd is an empty directory."""
    for name in list(os.environ):
        if name.startswith("SESSIONHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_are_the_dev_profile() -> None:
    settings = Settings.load()
    assert settings.profile == "dev"
    assert settings.store == "memory"
    assert settings.cookie.secure is False  # plain-HTTP localhost works
    assert settings.cookie.http_only is True
    assert settings.cookie.same_site == "lax"
    assert isinstance(settings.resolver(), CookieResolver)


def test_prod_profile_defaults_to_redis_and_a_secure_cookie() -> None:
    settings = Settings.load(profile="prod")
    assert settings.store == "redis"
    assert settings.cookie.secure is True
    assert settings.cookie.name == "__Host-session"
    assert Settings.load().cookie.name == "session"  # dev: plain-HTTP localhost works


@pytest.mark.parametrize(
    ("cookie", "name"),
    [
        ({"name": "sid"}, "sid"),  # a name given is kept
        ({"domain": "example.com"}, "session"),  # __Host- forbids a Domain
        ({"path": "/app"}, "session"),  # __Host- needs Path=/
    ],
)
def test_prod_uses_the_host_prefix_only_where_it_fits(cookie: dict[str, object], name: str) -> None:
    assert Settings.load(profile="prod", cookie=cookie).cookie.name == name


@pytest.mark.parametrize(
    ("cookie", "message"),
    [
        ({"secure": False}, "the prod profile refuses a session cookie without Secure"),
        ({"secure": False, "same_site": "None"}, "SameSite=None cookie must be Secure"),
    ],
)
def test_prod_refuses_insecure_cookies_at_start_up(cookie: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.load(profile="prod", cookie=cookie)
    assert str(caught.value).startswith("invalid sessionhub settings:\n  cookie")


def test_dev_turns_secure_on_when_the_cookie_needs_it() -> None:
    assert Settings.load(cookie={"name": "__Host-sid"}).cookie.secure is True
    assert Settings.load(cookie={"same_site": "none"}).cookie.secure is True
    assert Settings.load(cookie={"partitioned": True}).cookie.secure is True
    with pytest.raises(ConfigError, match="__Host- prefix requires Secure"):
        Settings.load(cookie={"name": "__Host-sid", "secure": False})


def test_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONHUB_PROFILE", "prod")
    monkeypatch.setenv("SESSIONHUB_REDIS__URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("SESSIONHUB_COOKIE__NAME", "__Host-sid")
    monkeypatch.setenv("SESSIONHUB_COOKIE__SAME_SITE", "Strict")
    monkeypatch.setenv("SESSIONHUB_TIMEOUTS__IDLE", "600")
    monkeypatch.setenv("SESSIONHUB_RESOLVERS", '["header", "cookie"]')
    monkeypatch.setenv("SESSIONHUB_CLEAR_SITE_DATA", '["cache"]')
    settings = Settings.load()
    assert settings.profile == "prod"
    assert settings.redis.url == "redis://cache.internal:6380/2"
    assert settings.cookie.name == "__Host-sid"
    assert settings.cookie.same_site == "strict"
    assert settings.timeouts.idle == 600
    assert settings.timeouts.absolute == 12 * 3600  # the rest keeps its default
    resolver = settings.resolver()
    assert isinstance(resolver, CompositeResolver)
    assert [type(r) for r in resolver.resolvers] == [HeaderResolver, CookieResolver]
    assert settings.flow().clear_site_data == '"cache"'


def test_a_variable_one_underscore_short_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONHUB_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("SESSIONHUB_COOKIE_SAME_SITE", "strict")
    monkeypatch.setenv("SESSIONHUB_REDIS_SERVER", "/usr/bin/redis-server")  # not a setting: ignored
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert str(caught.value).splitlines() == [
        "invalid sessionhub settings:",
        "  SESSIONHUB_COOKIE_SAME_SITE: nested keys take two underscores: "
        "SESSIONHUB_COOKIE__SAME_SITE",
        "  SESSIONHUB_REDIS_URL: nested keys take two underscores: SESSIONHUB_REDIS__URL",
    ]


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONHUB_NAMESPACE", "from-env")
    assert Settings.load().namespace == "from-env"
    assert Settings.load(namespace="from-code").namespace == "from-code"


def test_a_dotenv_file(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        "SESSIONHUB_COOKIE__NAME=from_dotenv\nSESSIONHUB_RETRY_AFTER=9\n"
    )
    settings = Settings.load()
    assert settings.cookie.name == "from_dotenv"
    assert settings.retry_after == 9


YAML = """\
profile: prod
redis:
  url: redis://sessions:6379/1
cookie:
  name: __Host-app
  max_age: 86400
timeouts:
  idle: 900
  absolute: 28800
"""

TOML = """\
profile = "prod"
resolvers = ["cookie", "header"]

[redis]
url = "redis://sessions:6379/1"

[cookie]
name = "__Host-app"
max_age = 86400

[timeouts]
idle = 900
absolute = 28800
"""


@pytest.mark.parametrize(("name", "text"), [("sessionhub.yaml", YAML), ("sessionhub.toml", TOML)])
def test_a_config_file(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    path = clean_environment / name
    path.write_text(text)
    settings = Settings.load(path)
    assert settings.profile == "prod"
    assert settings.redis.url == "redis://sessions:6379/1"
    assert settings.cookie.name == "__Host-app"
    assert settings.cookie.max_age == 86400
    assert (settings.timeouts.idle, settings.timeouts.absolute) == (900, 28800)
    # The environment overrides the file; the file is also found through the environment.
    monkeypatch.setenv("SESSIONHUB_CONFIG_FILE", str(path))
    monkeypatch.setenv("SESSIONHUB_TIMEOUTS__IDLE", "60")
    from_env = Settings.load()
    assert from_env.timeouts.idle == 60
    assert from_env.cookie.name == "__Host-app"


def test_config_file_problems_are_clear_errors(clean_environment: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(clean_environment / "missing.yaml")
    ini = clean_environment / "sessionhub.ini"
    ini.write_text("[x]\n")
    with pytest.raises(ConfigError, match=r"use a \.yaml, \.yml or \.toml file"):
        Settings.load(ini)
    broken = clean_environment / "broken.toml"
    broken.write_text("profile = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        Settings.load(broken)
    typo = clean_environment / "typo.yaml"
    typo.write_text("cooky:\n  name: x\n")
    with pytest.raises(ConfigError, match="cooky: Extra inputs are not permitted"):
        Settings.load(typo)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"profile": "staging"}, "profile: Input should be 'dev' or 'prod'"),
        ({"store": "postgres"}, "store: Input should be 'memory' or 'redis'"),
        ({"resolvers": ["url"]}, "resolvers.0: Input should be 'cookie' or 'header'"),
        ({"timeouts": {"idle": 0}}, "timeouts: timeouts must be positive"),
        ({"retry_after": -1}, "retry_after: Input should be greater than or equal to 0"),
        ({"header": "X Session"}, "header"),
    ],
)
def test_bad_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=message):
        Settings.load(**values).resolver()


def test_nest_turns_flat_config_keys_into_settings() -> None:
    flat = {
        "SESSIONHUB_PROFILE": "prod",
        "SESSIONHUB_REDIS__URL": "redis://r:6379/0",
        "SESSIONHUB_COOKIE__NAME": "sid",
        "SESSIONHUB_TIMEOUTS": {"idle": 60},
        "SESSION_COOKIE_NAME": "flask's own, not ours",
        "SECRET_KEY": "unrelated",
    }
    assert nest(flat) == {
        "profile": "prod",
        "redis": {"url": "redis://r:6379/0"},
        "cookie": {"name": "sid"},
        "timeouts": {"idle": 60},
    }
    assert Settings.load(**nest(flat)).timeouts.idle == 60


# -- what the settings build ----------------------------------------------------------


def test_memory_managers_share_one_store() -> None:
    settings = Settings.load()
    sync = settings.session_manager()
    asynchronous = settings.async_session_manager()
    assert isinstance(sync.store, MemoryStore)
    assert sync.store is asynchronous.store is settings.memory_store()
    session = sync.new_session()
    session["a"] = 1
    session_id = sync.commit(session).id

    async def read() -> object:
        return dict(await asynchronous.load(session_id))

    assert asyncio.run(read()) == {"a": 1}


def test_redis_managers(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.flushall()
    settings = Settings.load(
        store="redis",
        namespace="app1",
        redis={"host": "127.0.0.1", "port": redis_server.port},
        timeouts={"idle": 120, "absolute": 600},
    )
    manager = settings.session_manager()
    assert isinstance(manager.store, RedisStore)
    session = manager.new_session()
    session["cart"] = ["pear"]
    session_id = manager.commit(session).id
    [key] = client.keys("app1:s:*")
    assert 0 < client.pttl(key) <= 120_000

    async def read() -> object:
        asynchronous = settings.async_session_manager()
        assert isinstance(asynchronous.store, AsyncRedisStore)
        loaded = dict(await asynchronous.load(session_id))
        await asynchronous.store.client.aclose()
        return loaded

    assert asyncio.run(read()) == {"cart": ["pear"]}
    client.close()


def test_digest_key_changes_the_handles() -> None:
    plain = Settings.load().lifecycle().ids
    keyed = Settings.load(digest_key="k" * 32).lifecycle().ids
    ref = plain.new()
    assert plain.parse(ref.id).handle == ref.handle  # type: ignore[union-attr]
    assert keyed.parse(ref.id).handle != ref.handle  # type: ignore[union-attr]


def test_lifecycle_options_pass_through() -> None:
    settings = Settings.load(degrade_when_unavailable=True, timeouts={"idle": 5})
    lifecycle = settings.lifecycle(clock=lambda: 42.0)
    assert lifecycle.degrade is True
    assert lifecycle.timeouts.idle == 5
    assert lifecycle.clock() == 42.0

"""Flask: bare, sessionhub, Flask-Session (Redis)."""

from __future__ import annotations

from collections.abc import Callable

import flask

from bench import scenario

GetSession = Callable[[str], scenario.Session]


def _app(get_session: GetSession) -> flask.Flask:
    app = flask.Flask(__name__)

    def endpoint(kind: str) -> Callable[[], bytes]:
        handler = getattr(scenario, kind)

        def run() -> bytes:
            return handler(get_session(kind))  # type: ignore[no-any-return]

        return run

    for kind in (*scenario.KINDS, "count"):
        app.add_url_rule(f"/{kind}", kind, endpoint(kind))

    def set_attribute(name: str) -> bytes:
        return scenario.set_attribute(get_session("set"), name)

    app.add_url_rule("/set/<name>", "set", set_attribute)
    return app


def _flask_session(kind: str) -> scenario.Session:
    return flask.session


def bare(redis_url: str) -> flask.Flask:
    return _app(scenario.bare_session)


def sessionhub(redis_url: str) -> flask.Flask:
    from bench.apps.sessionhub_web import flask_init

    app = _app(_flask_session)
    flask_init(app, redis_url)
    return app


def flask_session(redis_url: str) -> flask.Flask:
    import redis
    from flask_session import Session

    app = _app(_flask_session)
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(redis_url),
        SESSION_PERMANENT=False,  # a browser-session cookie, like the others
    )
    Session(app)
    return app

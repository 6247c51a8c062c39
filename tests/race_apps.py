"""Apps for the races between a page's requests and a login, served by real servers.

FastAPI (uvicorn) and Flask (gunicorn, threads), configured by SESSIONHUB_*
variables. ``POST /write?key=...&value=...&hold=1`` holds its view after the
middleware has loaded the session, until the test lets it go: it announces
itself on the Redis list ``race:loaded`` and waits on ``race:gate`` (of the
Redis RACE_GATE_URL names). A test can so make any number of requests load
the session before a login commits and write after it, whatever the timing.
"""

from __future__ import annotations

import os
from typing import Any

import flask
import redis
import redis.asyncio
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from sessionhub import auth
from sessionhub.web import flask as flask_integration
from sessionhub.web.asgi import SessionMiddleware

LOADED = "race:loaded"
GATE = "race:gate"
HOLD_SECONDS = 30


def fastapi_from_env() -> FastAPI:
    """``uvicorn --factory tests.race_apps:fastapi_from_env``."""
    app = FastAPI()
    app.add_middleware(SessionMiddleware)
    gate = redis.asyncio.Redis.from_url(os.environ["RACE_GATE_URL"])

    @app.get("/anon", response_class=PlainTextResponse)
    async def anon() -> str:
        return "anon"

    @app.post("/write", response_class=PlainTextResponse)
    async def write(request: Request, key: str, value: str, hold: bool = False) -> str:
        if hold:
            await gate.rpush(LOADED, key)
            await gate.blpop([GATE], timeout=HOLD_SECONDS)
        request.session[key] = value
        return "written"

    @app.post("/login", response_class=PlainTextResponse)
    async def login(request: Request, user: str) -> str:
        auth.login(request.session, user)
        return "in"

    @app.get("/read")
    async def read(request: Request) -> dict[str, Any]:
        session = auth.sessionhub_session(request.session)
        return {"data": dict(session), "principal": session.principal}

    return app


def flask_from_env() -> flask.Flask:
    """``gunicorn 'tests.race_apps:flask_from_env()'``."""
    app = flask.Flask(__name__)
    flask_integration.SessionHub(app)
    gate = redis.Redis.from_url(os.environ["RACE_GATE_URL"])

    @app.get("/anon")
    def anon() -> str:
        return "anon"

    @app.post("/write")
    def write() -> str:
        key = flask.request.args["key"]
        if flask.request.args.get("hold"):
            gate.rpush(LOADED, key)
            gate.blpop([GATE], timeout=HOLD_SECONDS)
        flask.session[key] = flask.request.args["value"]
        return "written"

    @app.post("/login")
    def login() -> str:
        auth.login(flask.session, flask.request.args["user"])
        return "in"

    @app.get("/read")
    def read() -> dict[str, Any]:
        session = auth.sessionhub_session(flask.session)
        return {"data": dict(session), "principal": session.principal}

    return app

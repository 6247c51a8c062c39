"""The same small app, run as several instances behind a load balancer (see run.py).

Its sessions are configured by the environment, as in production:

    SESSIONHUB_STORE=memory    each instance keeps its own sessions, in its memory
    SESSIONHUB_STORE=redis     every instance keeps them in the Redis at
    SESSIONHUB_REDIS__URL=redis://127.0.0.1:6379/0

    INSTANCE=A uvicorn app:app --port 8001
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessionhub.auth import login
from sessionhub.web.asgi import SessionMiddleware

INSTANCE = os.environ.get("INSTANCE", "?")


def _facts(request: Request) -> JSONResponse:
    session = request.session
    return JSONResponse(
        {
            "instance": INSTANCE,
            "pid": os.getpid(),
            "user": session.get("user"),
            "visits": session.get("visits", 0),
        }
    )


async def home(request: Request) -> JSONResponse:
    """A visit: counted in the session."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    return _facts(request)


async def sign_in(request: Request) -> JSONResponse:
    user = str((await request.json())["user"])
    login(request.session, user)  # binds the user; the session gets a new id
    request.session["user"] = user
    return _facts(request)


app = Starlette(
    routes=[Route("/", home), Route("/login", sign_in, methods=["POST"])],
    middleware=[Middleware(SessionMiddleware)],  # settings from SESSIONHUB_* variables
)

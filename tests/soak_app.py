"""The application the soak run loads: Starlette, the ASGI middleware, Redis, the expiry worker.

``uvicorn --factory tests.soak_app:create_app``, configured by ``SESSIONHUB_*``
variables (store, Redis URL, timeouts) and ``SOAK_STREAM_LENGTH`` (the event
streams' length per shard). Every view checks nothing itself; the load
generator (tests/soak.py) checks each answer against what it expects.

=================  ===========================================================
GET  /anon         "anon", without touching the session
GET  /read         {"cart": <the counter>, "user": <the principal>}
POST /write        the counter + 1, answered as /read
POST /login        `login(session, user)` (query: user), answered as /read
POST /logout       `logout(session)`
=================  ===========================================================
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sessionhub import AsyncExpiryWorker, AsyncRedisStore, AsyncSessionManager, Session, auth
from sessionhub.config import Settings
from sessionhub.connect import async_redis_client
from sessionhub.web.asgi import SessionMiddleware


def _state(session: Session) -> Response:
    return JSONResponse({"cart": session.get("cart", 0), "user": session.principal})


async def anon(request: Request) -> Response:
    return PlainTextResponse("anon")


async def read(request: Request) -> Response:
    return _state(request.session)  # type: ignore[arg-type]


async def write(request: Request) -> Response:
    session: Session = request.session  # type: ignore[assignment]
    cart = session.get("cart", 0)
    session["cart"] = (cart if isinstance(cart, int) else 0) + 1
    return _state(session)


async def login(request: Request) -> Response:
    session: Session = request.session  # type: ignore[assignment]
    auth.login(session, request.query_params["user"])
    return _state(session)


async def logout(request: Request) -> Response:
    auth.logout(request.session)
    return PlainTextResponse("out")


def create_app() -> Any:
    settings = Settings.load()
    stream_length = int(os.environ.get("SOAK_STREAM_LENGTH", "500"))
    client = async_redis_client(settings.redis)
    store = AsyncRedisStore(client, namespace=settings.namespace, stream_length=stream_length)
    manager = AsyncSessionManager(store, lifecycle=settings.lifecycle())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # What an application with events runs: expired sessions reported and
        # taken off the schedule (it would otherwise grow with every login).
        async with AsyncExpiryWorker(store, interval=1.0):
            yield
        await client.aclose()

    routes = [
        Route("/anon", anon),
        Route("/read", read),
        Route("/write", write, methods=["POST"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return SessionMiddleware(app, manager=manager, flow=settings.flow())

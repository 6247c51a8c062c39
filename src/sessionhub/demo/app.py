"""The demo app: a tiny shop on Starlette, one of several identical instances.

Nothing in it knows about the other instances or about Redis: it uses
`request.session` as any Starlette app does, and the sessionhub middleware
keeps that session in Redis, where every instance finds it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..auth import login as log_in
from ..auth import logout as log_out
from ..config import Settings
from ..session import Session
from ..web.asgi import SessionMiddleware
from .page import PRODUCTS, PageState, render

__all__ = ["create_app"]

TRAIL_LENGTH = 12
STARTED = time.time()


def _session(request: Request) -> Session:
    session: Session = request.scope["session"]
    return session


def _state(request: Request) -> PageState:
    session = _session(request)
    app = request.app.state
    cart = session.get("cart")
    return PageState(
        instance=app.instance,
        instances=app.instances,
        pid=os.getpid(),
        started=STARTED,
        user=session.principal,
        cart=dict(cart) if isinstance(cart, dict) else {},
        trail=[str(name) for name in _list(session.get("trail"))],
        views=int(session.get("views") or 0),  # type: ignore[arg-type]
        handle=session.handle,
        expires_at=session.expires_at if session.handle else None,
        contents=dict(session),
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _served(request: Request) -> None:
    """Note which instance served this request, in the session itself."""
    session = _session(request)
    trail = _list(session.get("trail"))
    session["trail"] = [*trail, request.app.state.instance][-TRAIL_LENGTH:]
    session["views"] = int(session.get("views") or 0) + 1  # type: ignore[arg-type]


def _back(request: Request) -> Response:
    """After a form: back to the page (the next instance in turn will render it)."""
    _served(request)
    return RedirectResponse("/", status_code=303)


async def page(request: Request) -> Response:
    _served(request)
    return HTMLResponse(render(_state(request)))


async def state(request: Request) -> Response:
    """The page's facts as JSON, for scripted clients."""
    _served(request)
    facts = _state(request)
    return JSONResponse(
        {
            "instance": facts.instance,
            "pid": facts.pid,
            "user": facts.user,
            "cart": facts.cart,
            "views": facts.views,
            "handle": facts.handle,
        }
    )


async def login(request: Request) -> Response:
    form = await request.form()
    user = str(form.get("user", "")).strip()[:40]
    if not user:
        return HTMLResponse("a name is needed to sign in", status_code=400)
    log_in(_session(request), user)  # a new session id too: none planted before works after

    return _back(request)


async def logout(request: Request) -> Response:
    log_out(_session(request))  # deleted from Redis; the cookie is cleared
    return _back(request)


async def add_to_cart(request: Request) -> Response:
    form = await request.form()
    item = str(form.get("item", ""))
    if item not in PRODUCTS:
        return HTMLResponse(f"no product {item!r}", status_code=400)
    session = _session(request)
    cart = session.setdefault("cart", {})
    assert isinstance(cart, dict)
    cart[item] = int(cart.get(item, 0)) + 1  # an in-place change is saved too
    return _back(request)


async def clear_cart(request: Request) -> Response:
    _session(request).pop("cart", None)
    return _back(request)


def create_app(instance: str, instances: str, redis_url: str, namespace: str = "demo") -> Starlette:
    """One instance of the demo app, keeping sessions in the Redis at `redis_url`."""
    settings = Settings.load(
        profile="dev", store="redis", namespace=namespace, redis={"url": redis_url}
    )
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/state", state),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/cart/add", add_to_cart, methods=["POST"]),
            Route("/cart/clear", clear_cart, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, settings=settings)],
    )
    app.state.instance = instance
    app.state.instances = instances
    return app

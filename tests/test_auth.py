"""sessionhub.auth takes each framework's session as the framework types it (this
module is type-checked with mypy --strict, without ignores), and refuses at run
time anything that is not a sessionhub session, changing nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessions
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sessionhub import Session, auth
from sessionhub.config import Settings
from sessionhub.web.asgi import SessionMiddleware

NOT_OURS = "is not a sessionhub session: install sessionhub's middleware"


async def sign_in(request: Request) -> Response:
    # request.session is typed dict[str, Any] by Starlette: no cast, no ignore.
    await auth.alogin_now(request.session, "alice")
    auth.rotate(request.session)
    session: Session = auth.sessionhub_session(request.session)
    return JSONResponse({"principal": session.principal})


async def sign_out(request: Request) -> Response:
    auth.logout(request.session)
    return PlainTextResponse("out")


async def with_starlette_sessions(request: Request) -> Response:
    """Starlette's own sessions: a plain dict, refused."""
    try:
        auth.login(request.session, "alice")
    except TypeError as exc:
        return PlainTextResponse(str(exc), status_code=500)
    return PlainTextResponse("in")


ROUTES = [
    Route("/sign-in", sign_in, methods=["POST"]),
    Route("/sign-out", sign_out, methods=["POST"]),
    Route("/starlette-sessions", with_starlette_sessions, methods=["POST"]),
]


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver")


async def test_starlette_request_session_works_as_typed() -> None:
    settings = Settings.load(store="memory")
    app = Starlette(routes=ROUTES, middleware=[Middleware(SessionMiddleware, settings=settings)])
    async with client(app) as browser:
        signed_in = await browser.post("/sign-in")
        assert signed_in.json() == {"principal": "alice"}
        assert browser.cookies.get("session")
        out = await browser.post("/sign-out")
        assert "Max-Age=0" in out.headers["set-cookie"]


async def test_a_framework_s_own_session_is_refused_clearly() -> None:
    app = Starlette(routes=ROUTES, middleware=[Middleware(StarletteSessions, secret_key="t")])
    async with client(app) as browser:
        answer = await browser.post("/starlette-sessions")
    # Named in full: Starlette's own session class is called Session too.
    assert answer.text.startswith("starlette.middleware.sessions.Session " + NOT_OURS)


@pytest.mark.parametrize("call", [auth.login, auth.login_now])
def test_a_plain_mapping_is_a_type_error_and_stays_as_it_was(call: Any) -> None:
    plain: dict[str, Any] = {"cart": ["book"]}
    with pytest.raises(TypeError, match="^dict " + NOT_OURS):
        call(plain, "alice")
    for change in (auth.logout, auth.rotate, auth.sessionhub_session):
        with pytest.raises(TypeError, match="^dict " + NOT_OURS):
            change(plain)
    assert plain == {"cart": ["book"]}

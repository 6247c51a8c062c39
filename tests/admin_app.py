"""An application with the admin dashboard mounted, as a user would build it.

``uvicorn --factory tests.admin_app:make_app`` (settings: SESSIONHUB_*). Users
sign in with ``POST /login?user=NAME``; the dashboard at ``/admin/sessions/``
lets in the users named in ADMINS, judged by the application's own session.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from sessionhub import Session, auth
from sessionhub.admin import AdminApp
from sessionhub.config import Settings
from sessionhub.web.asgi import SessionMiddleware

ADMINS = {"root"}


def operator_of(request: Request) -> str | None:
    """The application's hook: an operator is a signed-in user named in ADMINS."""
    session: Session = request.session  # type: ignore[assignment]
    return session.principal if session.principal in ADMINS else None


async def anon(request: Request) -> Response:
    return PlainTextResponse("anon")


async def login(request: Request) -> Response:
    session: Session = request.session  # type: ignore[assignment]
    auth.login(session, request.query_params["user"])
    session.client_info = {"ua": request.headers.get("user-agent", "")}
    return PlainTextResponse("in")


async def whoami(request: Request) -> Response:
    session: Session = request.session  # type: ignore[assignment]
    return JSONResponse({"principal": session.principal})


def make_app() -> Starlette:
    settings = Settings.load()
    admin = AdminApp.from_settings(settings, authenticate=operator_of)
    return Starlette(
        routes=[
            Route("/anon", anon),
            Route("/login", login, methods=["POST"]),
            Route("/whoami", whoami),
            Mount("/admin/sessions", admin),
        ],
        middleware=[Middleware(SessionMiddleware, settings=settings)],
    )

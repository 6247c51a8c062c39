"""Quart: ``quart.session`` becomes a sessionhub session.

::

    from sessionhub.web.quart import SessionHub

    app = Quart(__name__)
    SessionHub(app)

Settings come from ``app.config`` keys ``SESSIONHUB_*``, as for Flask. The work
is done by the ASGI middleware, which wraps ``app.asgi_app``; the session
interface only hands its session to Quart. A `LoginRefused` or a `SessionEnded`
a view lets through (from ``sessionhub.auth.alogin_now``) is answered with the
flow's 409.
"""

from __future__ import annotations

from quart import Quart
from quart.sessions import SessionInterface, SessionMixin
from quart.wrappers import BaseRequestWebsocket, Response
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response as WerkzeugResponse

from ..config import Settings, nest
from ..errors import LoginRefused, SessionEnded
from ..session import Session
from .asgi import SessionMiddleware
from .flask import FlaskSession, _NoSession

__all__ = ["QuartSessionInterface", "SessionHub"]


class QuartSessionInterface(SessionInterface):
    """Hands Quart the session the ASGI middleware loaded; saving is the middleware's job."""

    null_session_class = _NoSession

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> FlaskSession | None:
        session = request.scope.get("session")
        if not isinstance(session, Session):
            return None
        return FlaskSession(session, app)

    async def save_session(
        self,
        app: Quart,
        session: SessionMixin,
        response: Response | WerkzeugResponse | None,
    ) -> None:
        """Nothing to do: the middleware commits when the response starts."""


class SessionHub:
    """The Quart extension. ``app.extensions["sessionhub"]`` is the app's middleware."""

    def __init__(self, app: Quart | None = None, *, settings: Settings | None = None) -> None:
        self.settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Quart) -> None:
        settings = self.settings or Settings.load(**nest(app.config))
        middleware = SessionMiddleware(app.asgi_app, settings=settings)
        app.asgi_app = middleware  # type: ignore[method-assign]
        app.session_interface = QuartSessionInterface()  # type: ignore[assignment]
        flow = middleware.flow

        async def answer(exc: LoginRefused | SessionEnded) -> Response:
            # Quart would answer 500; the flow's 409 says why.
            answered = flow.answer(exc)
            return Response(answered.body, answered.status, Headers(answered.headers))

        app.register_error_handler(LoginRefused, answer)
        app.register_error_handler(SessionEnded, answer)
        app.extensions["sessionhub"] = middleware

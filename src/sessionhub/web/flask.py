"""Flask: ``flask.session`` becomes a sessionhub session.

::

    from sessionhub.web.flask import SessionHub

    app = Flask(__name__)
    SessionHub(app)                      # or: hub = SessionHub(); hub.init_app(app)

Settings come from ``app.config`` keys ``SESSIONHUB_*`` -- the same names as
the environment variables (``SESSIONHUB_PROFILE``, ``SESSIONHUB_REDIS__URL``,
``SESSIONHUB_COOKIE__NAME``...) -- over the environment and the config file.
Flask's own ``SESSION_COOKIE_*`` keys and ``secret_key`` are not used.

The work is done by the WSGI middleware (`sessionhub.web.wsgi`), which wraps
``app.wsgi_app``; the session interface only hands its session to Flask.
``session.permanent = True`` keeps the session for
``PERMANENT_SESSION_LIFETIME`` ("remember me"). A `LoginRefused` or a
`SessionEnded` a view lets through (from ``sessionhub.auth.login_now``) is
answered with the flow's 409.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, NoReturn, Protocol

from flask import Flask, Request, Response
from flask.sessions import NullSession, SessionInterface, SessionMixin

from ..config import Settings, nest
from ..errors import LoginRefused, SessionEnded
from ..session import Session
from .flow import SessionFlow
from .wsgi import ENVIRON_KEY, SessionMiddleware

__all__ = ["FlaskSession", "SessionHub", "SessionHubInterface"]


class PermanentLifetime(Protocol):
    """A Flask or Quart app: how long a permanent session lasts."""

    @property
    def permanent_session_lifetime(self) -> timedelta: ...


class FlaskSession(SessionMixin):
    """A sessionhub `Session` under Flask's session interface (Quart's too).

    `sessionhub_session` is the session itself, for `sessionhub.auth`.
    """

    def __init__(self, session: Session, app: PermanentLifetime) -> None:
        self.sessionhub_session = session
        self.new = session._state.ref is None
        self._app = app  # asked for PERMANENT_SESSION_LIFETIME when the session is made permanent

    def __getitem__(self, name: str) -> Any:
        return self.sessionhub_session[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.sessionhub_session.get(name, default)

    def __setitem__(self, name: str, value: Any) -> None:
        self.sessionhub_session[name] = value

    def __delitem__(self, name: str) -> None:
        del self.sessionhub_session[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.sessionhub_session)

    def __len__(self) -> int:
        return len(self.sessionhub_session)

    def __contains__(self, name: object) -> bool:
        return name in self.sessionhub_session

    def clear(self) -> None:
        self.sessionhub_session.clear()

    def __repr__(self) -> str:
        return f"<FlaskSession {self.sessionhub_session!r}>"

    @property
    def permanent(self) -> bool:
        """Whether the session outlives the browser session ("remember me")."""
        return self.sessionhub_session.persistent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if value:
            lifetime = self._app.permanent_session_lifetime.total_seconds()
            self.sessionhub_session.remember(idle=lifetime)
        elif self.sessionhub_session.persistent:
            raise ValueError(
                "a permanent sessionhub session cannot be made temporary again; "
                "end it with sessionhub.auth.logout() instead"
            )

    @property
    def modified(self) -> bool:
        return self.sessionhub_session.modified

    @modified.setter
    def modified(self, value: bool) -> None:
        # In-place changes to values read in this request are found at commit
        # without this flag; setting it is harmless.
        pass

    @property
    def accessed(self) -> bool:
        return self.sessionhub_session.accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        self.sessionhub_session.accessed = value


class _NoSession(NullSession):
    """What Flask gets when the middleware did not run (e.g. ``test_request_context``)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(
            "no sessionhub session for this request: the SessionHub middleware did not see it "
            "(was app.wsgi_app replaced after SessionHub(app), or is this a test_request_context?)"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _refuse


class SessionHubInterface(SessionInterface):
    """Hands Flask the session the WSGI middleware loaded; saving is the middleware's job."""

    null_session_class = _NoSession

    def open_session(self, app: Flask, request: Request) -> FlaskSession | None:
        session: Session | None = request.environ.get(ENVIRON_KEY)
        if session is None:
            return None
        return FlaskSession(session, app)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Nothing to do: the middleware commits when the response starts."""


class SessionHub:
    """The Flask extension. ``app.extensions["sessionhub"]`` is the app's middleware."""

    def __init__(self, app: Flask | None = None, *, settings: Settings | None = None) -> None:
        self.settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = self.settings or Settings.load(**nest(app.config))
        middleware = SessionMiddleware(app.wsgi_app, settings=settings)
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.session_interface = SessionHubInterface()
        answer = _answering(middleware.flow)
        app.register_error_handler(LoginRefused, answer)
        app.register_error_handler(SessionEnded, answer)
        app.extensions["sessionhub"] = middleware


def _answering(flow: SessionFlow) -> Callable[[LoginRefused | SessionEnded], Response]:
    """Flask's handler of a refused login or an ended session that a view let
    through (from ``login_now``): the flow's 409 (else Flask would answer 500)."""

    def answer(exc: LoginRefused | SessionEnded) -> Response:
        answered = flow.answer(exc)
        return Response(answered.body, answered.status, answered.headers)

    return answer

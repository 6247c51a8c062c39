"""Log in, log out, rotate: the same three calls in every framework.

::

    from sessionhub.auth import login, logout

    login(request.session, user_id)   # Starlette, FastAPI, Litestar, Django
    login(flask.session, user_id)     # Flask, Quart
    logout(request.session)

Each takes a sessionhub `Session` or a framework's wrapper of one (Flask's
and Quart's ``session``, Django's ``request.session``). The changes are carried
out when the request's session is committed, as the response starts.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from .session import Session

__all__ = ["login", "logout", "rotate", "sessionhub_session"]


def login(session: MutableMapping[str, Any], principal: str, *, now: float | None = None) -> None:
    """Bind `principal` (a user id) to the session and record when.

    The session gets a new id (the id the client had before logging in stops
    working: no session fixation), and, once logged in, lives in its
    principal's shard, where "log out everywhere" finds it.
    """
    _changing(session).login(principal, now=time.time() if now is None else now)


def logout(session: MutableMapping[str, Any]) -> None:
    """End the session: deleted from the store, the client told to drop its id.

    The response expires the cookie (or empties the id header) and, when the
    settings ask for it, carries ``Clear-Site-Data``. Writing to the session
    afterwards starts a new one, with a new id.
    """
    _changing(session).invalidate()


def rotate(session: MutableMapping[str, Any]) -> None:
    """Give the session a new id, keeping its data: call it on privilege changes."""
    _changing(session).rotate()


def sessionhub_session(session: MutableMapping[str, Any]) -> Session:
    """The sessionhub `Session` behind a framework's session object.

    TypeError if there is none (the framework's own sessions are in use).
    """
    if isinstance(session, Session):
        return session
    inner = getattr(session, "sessionhub_session", None)
    if not isinstance(inner, Session):
        raise TypeError(
            f"{type(session).__name__} is not a sessionhub session: "
            "install sessionhub's middleware or extension for your framework"
        )
    return inner


def _changing(session: MutableMapping[str, Any]) -> Session:
    inner = sessionhub_session(session)
    if inner is not session:
        # Wrappers that decide themselves whether to save (Django's) must save.
        session.modified = True  # type: ignore[attr-defined]
    return inner

"""Log in, log out, rotate: the same three calls in every framework.

::

    from sessionhub.auth import login, logout

    login(request.session, user_id)   # Starlette, FastAPI, Litestar, Django
    login(flask.session, user_id)     # Flask, Quart
    logout(request.session)

Each takes a sessionhub `Session` or a framework's wrapper of one (Flask's
and Quart's ``session``, Django's ``request.session``), typed as the mapping
every framework types its session as; anything else is a TypeError. The
changes are carried out when the request's session is committed, as the
response starts.

Under a session limit that refuses logins beyond it, that commit may refuse
the login: the response is then a 409. To find out in the view instead,
commit the login at once::

    try:
        login_now(flask.session, user_id)              # await alogin_now(...) under ASGI
    except LoginRefused:
        return render_template("too_many_devices.html"), 409
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from .session import Session
from .web.flow import current_committer

__all__ = ["alogin_now", "login", "login_now", "logout", "rotate", "sessionhub_session"]


def login(session: MutableMapping[str, Any], principal: str, *, now: float | None = None) -> None:
    """Bind `principal` (a user id) to the session and record when.

    The session gets a new id (the id the client had before logging in stops
    working: no session fixation), and, once logged in, lives in its
    principal's shard, where "log out everywhere" finds it.
    """
    _changing(session).login(principal, now=time.time() if now is None else now)


def login_now(
    session: MutableMapping[str, Any], principal: str, *, now: float | None = None
) -> None:
    """`login`, committed at once: `LoginRefused` is raised here if a session limit
    refuses it (the session then stays as it was before), for WSGI, Flask and
    Django views.

    The request's response still carries the new id. RuntimeError outside a
    request served by a sessionhub middleware, or in an asyncio app.
    """
    inner = sessionhub_session(session)
    committer = current_committer()  # before the login: a RuntimeError changes nothing
    login(session, principal, now=now)
    committer.commit(inner)


async def alogin_now(
    session: MutableMapping[str, Any], principal: str, *, now: float | None = None
) -> None:
    """`login_now` for asyncio apps: ASGI (Starlette, FastAPI, Litestar, Quart)
    and Django's async views."""
    inner = sessionhub_session(session)
    committer = current_committer()
    login(session, principal, now=now)
    await committer.acommit(inner)


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
        kind = type(session)
        named = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        raise TypeError(
            f"{named} is not a sessionhub session: "
            "install sessionhub's middleware or extension for your framework"
        )
    return inner


def _changing(session: MutableMapping[str, Any]) -> Session:
    inner = sessionhub_session(session)
    if inner is not session:
        # Wrappers that decide themselves whether to save (Django's) must save.
        session.modified = True  # type: ignore[attr-defined]
    return inner

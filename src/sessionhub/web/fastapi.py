"""FastAPI: the session as a typed dependency.

::

    from fastapi import FastAPI
    from sessionhub.web.asgi import SessionMiddleware
    from sessionhub.web.fastapi import CurrentSession

    app = FastAPI()
    app.add_middleware(SessionMiddleware)

    @app.get("/cart")
    async def cart(session: CurrentSession) -> dict:
        return session.get("cart", {})

``request.session`` works as well; the dependency adds the type (`Session`:
its id, principal, `remember()` and the rest).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from ..session import Session

__all__ = ["CurrentSession", "current_session"]


def current_session(connection: HTTPConnection) -> Session:
    """The request's session, as the middleware loaded it."""
    session = connection.scope.get("session")
    if not isinstance(session, Session):
        raise RuntimeError("no session: add sessionhub.web.asgi.SessionMiddleware to the app")
    return session


#: A path operation parameter annotated with this receives the session.
CurrentSession = Annotated[Session, Depends(current_session)]

"""The orders service (Flask): called by the gateway, never by browsers.

It reads the session id from the X-Session-Id header the gateway sends and
loads that session from the same Redis: it sees the same user, and what it
writes there the gateway sees too.

    SESSIONHUB_STORE=redis SESSIONHUB_REDIS__URL=redis://127.0.0.1:6379/0 \\
    gunicorn orders:app -b 127.0.0.1:8002
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request, session

from sessionhub.auth import sessionhub_session
from sessionhub.session import Session
from sessionhub.web.flask import SessionHub

app = Flask(__name__)
app.config["SESSIONHUB_RESOLVERS"] = ["header"]  # the id comes in X-Session-Id, not a cookie
SessionHub(app)


def _session() -> Session:
    return sessionhub_session(session)


def _view() -> dict[str, Any]:
    carried = _session()
    return {
        "user": carried.principal,
        "handle": carried.handle,
        "orders": session.get("orders", []),
    }


@app.get("/orders")
def list_orders() -> tuple[dict[str, Any], int]:
    if _session().principal is None:
        return {"error": "no signed-in session came with the request"}, 401
    return _view(), 200


@app.post("/orders")
def place_order() -> tuple[dict[str, Any], int]:
    if _session().principal is None:
        return {"error": "no signed-in session came with the request"}, 401
    item = str((request.get_json(silent=True) or {}).get("item", ""))
    if not item:
        return {"error": "an order needs an item"}, 400
    session.setdefault("orders", []).append(item)  # written to the shared session
    return _view(), 201

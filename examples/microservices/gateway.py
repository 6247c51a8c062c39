"""The gateway (FastAPI): the user signs in here; it calls the orders service for them.

Every call to the orders service carries the user's session id in the
X-Session-Id header -- and only calls to it: the propagation trusts that one
host.

    SESSIONHUB_STORE=redis SESSIONHUB_REDIS__URL=redis://127.0.0.1:6379/0 \\
    ORDERS_URL=http://127.0.0.1:8002 uvicorn gateway:app --port 8001
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from sessionhub.auth import login
from sessionhub.propagation import Propagation
from sessionhub.web.asgi import SessionMiddleware
from sessionhub.web.fastapi import CurrentSession

ORDERS_URL = os.environ["ORDERS_URL"]

propagation = Propagation([urlsplit(ORDERS_URL).netloc])  # e.g. "127.0.0.1:8002"
# One client for every user's requests: `install` also makes its cookie jar keep
# nothing the orders service sets, which was meant for one user only.
orders = propagation.install(httpx.AsyncClient(base_url=ORDERS_URL, timeout=10))

app = FastAPI(title="gateway")
app.add_middleware(SessionMiddleware)  # the cookie, for browsers


class SignIn(BaseModel):
    user: str


class Order(BaseModel):
    item: str


@app.post("/login")
async def sign_in(body: SignIn, session: CurrentSession) -> dict[str, Any]:
    login(session, body.user)
    return {"user": body.user}


def _signed_in(session: CurrentSession) -> None:
    if session.principal is None:
        raise HTTPException(401, "sign in first")


@app.post("/orders")
async def place_order(body: Order, session: CurrentSession) -> Any:
    _signed_in(session)
    answer = await orders.post("/orders", json={"item": body.item})
    answer.raise_for_status()
    return answer.json()


@app.get("/orders")
async def list_orders(session: CurrentSession) -> dict[str, Any]:
    """What the gateway and the orders service each see of the user's session."""
    _signed_in(session)
    answer = await orders.get("/orders")
    answer.raise_for_status()
    return {
        "gateway": {
            "user": session.principal,
            "handle": session.handle,
            "orders": session.get("orders", []),  # written by the orders service
        },
        "orders service": answer.json(),
    }

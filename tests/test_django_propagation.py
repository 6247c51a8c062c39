"""Django: a view calling another service sends the request's session id along.

The sessionhub middleware binds the id the request came with for the whole
request, sync views and async ones, under WSGI and ASGI, and resets it after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test.utils import override_settings

import tests.web_django as project
from sessionhub.propagation import Propagation, current_session_id
from tests.test_propagation import other_port, trusted_port
from tests.web_django_flows import Downstream

__all__ = ["other_port", "trusted_port"]  # fixtures shared with test_propagation

assert project.urlpatterns  # configures Django before anything below runs

BASE = "http://testserver"
CONCURRENT = 20


@pytest.fixture
def downstream(trusted_port: int, other_port: int) -> Iterator[None]:
    Downstream.echo = f"http://127.0.0.1:{trusted_port}/echo"
    Downstream.elsewhere = f"http://127.0.0.1:{other_port}/echo"
    Downstream.propagation = Propagation([f"127.0.0.1:{trusted_port}"])
    with override_settings(ROOT_URLCONF="tests.web_django_flows", SESSIONHUB={}):
        yield


def test_a_sync_view_under_wsgi_sends_the_id(downstream: None) -> None:
    with httpx.Client(transport=httpx.WSGITransport(WSGIHandler()), base_url=BASE) as client:
        client.get("/write", params={"key": "cart", "value": "book"})
        session_id = client.cookies["session"]
        seen = client.get("/downstream").json()
        client.cookies.clear()
        anonymous = client.get("/downstream").json()
    assert seen == {"current": session_id, "downstream": session_id, "elsewhere": None}
    assert anonymous == {"current": None, "downstream": None, "elsewhere": None}
    assert current_session_id() is None  # reset on the way out, in this very thread


@pytest.mark.parametrize("path", ["/async/downstream", "/downstream"])
async def test_concurrent_requests_under_asgi_each_send_their_own_id(
    downstream: None, path: str
) -> None:
    transport = httpx.ASGITransport(app=cast(Any, ASGIHandler()))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        ids = []
        for _ in range(CONCURRENT):
            await client.get("/write", params={"key": "cart", "value": "book"})
            ids.append(client.cookies["session"])
            client.cookies.clear()

        async def call(session_id: str | None) -> Any:
            cookie = {"Cookie": f"session={session_id}"} if session_id else {}
            return (await client.get(path, headers=cookie)).json()

        calls: list[str | None] = [*ids, None, None]
        seen = await asyncio.gather(*(call(each) for each in calls))
    assert [view["current"] for view in seen] == calls
    assert [view["downstream"] for view in seen] == calls
    assert {view["elsewhere"] for view in seen} == {None}
    assert current_session_id() is None

"""Steady request load for the failure tests: real requests, each one timed and classified.

A request increments a session's counter "n". Through a manager it loads the
session and commits it; through the ASGI middleware it is an HTTP request to a
Starlette app (in process, by httpx), which answers 503 when the store is down.
Each request is written once, as a generator of calls, and driven by a sync
worker (a thread) or an async one (a thread running its own event loop). Each
worker owns its sessions, so every stored counter can be checked against what
the workers were told.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request as HttpRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sessionhub import AsyncSessionManager, Session, SessionManager, StoreUnavailable
from sessionhub.config import Settings
from sessionhub.web.asgi import SessionMiddleware

__all__ = ["LOST", "OK", "UNAVAILABLE", "Request", "Traffic", "counter"]

OK, UNAVAILABLE, LOST = "ok", "unavailable", "lost"

# A step of a request: ("load", session id), ("commit", session) or ("bump", session id).
Step = tuple[str, Any]
Steps = Generator[Step, Any, str]


def counter(session: Session) -> int:
    value = session["n"]
    assert isinstance(value, int)
    return value


@dataclass(frozen=True, slots=True)
class Request:
    flavor: str
    started: float  # time.monotonic()
    ended: float
    slowest_call: float  # the longest store call (load or commit) in it
    outcome: str  # OK, UNAVAILABLE, LOST (the session was gone) or "error: ..."

    @property
    def duration(self) -> float:
        return self.ended - self.started


@dataclass
class Counters:
    """Per session: the last value a commit confirmed, and the highest it may hold.

    A commit that failed with StoreUnavailable may still have been applied, so
    it raises the upper bound without confirming anything.
    """

    confirmed: dict[str, int] = field(default_factory=dict)
    upper: dict[str, int] = field(default_factory=dict)

    def confirm(self, session_id: str, value: int) -> None:
        self.confirmed[session_id] = self.upper[session_id] = value

    def maybe(self, session_id: str, value: int) -> None:
        self.upper[session_id] = max(value, self.upper.get(session_id, 0))

    def accepts(self, session_id: str, stored: int) -> bool:
        """Whether `stored` is a value this session may hold now."""
        confirmed = self.confirmed.get(session_id, 0)
        return confirmed <= stored <= self.upper.get(session_id, confirmed)


def bump_app(settings: Settings, manager: AsyncSessionManager) -> Starlette:
    """A Starlette app whose /bump increments the session's counter and returns it."""

    async def bump(request: HttpRequest) -> PlainTextResponse:
        if "n" not in request.session:
            return PlainTextResponse(LOST)  # the session is gone: a new, empty one
        request.session["n"] += 1
        return PlainTextResponse(str(request.session["n"]))

    middleware = [Middleware(SessionMiddleware, manager=manager, flow=settings.flow())]
    return Starlette(routes=[Route("/bump", bump)], middleware=middleware)


class Traffic:
    def __init__(self, pause: float = 0.01) -> None:
        self.pause = pause  # between one worker's requests: leaves the two cores usable
        self.requests: list[Request] = []
        self.counters = Counters()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def sync_worker(self, manager: SessionManager, ids: list[str]) -> None:
        def call(step: Step) -> Any:
            verb, argument = step
            return manager.load(argument) if verb == "load" else manager.commit(argument)

        self._start(lambda: self._sync_loop(call, ids))

    def async_worker(self, make_manager: Callable[[], AsyncSessionManager], ids: list[str]) -> None:
        """`make_manager` runs on the worker's own loop (an asyncio client belongs to one)."""

        async def loop() -> None:
            manager = make_manager()

            async def call(step: Step) -> Any:
                verb, argument = step
                if verb == "load":
                    return await manager.load(argument)
                return await manager.commit(argument)

            await self._async_loop(call, ids, self._request)
            await manager.store.client.aclose()  # type: ignore[attr-defined]

        self._start(lambda: asyncio.run(loop()))

    def asgi_worker(self, settings: Settings, ids: list[str]) -> None:
        """Requests through `SessionMiddleware` on a Starlette app (`bump_app`)."""

        async def loop() -> None:
            manager = settings.async_session_manager()
            app = bump_app(settings, manager)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

                async def call(step: Step) -> httpx.Response:
                    cookie = f"{settings.cookie.name}={step[1]}"
                    return await http.get("/bump", headers={"cookie": cookie})

                await self._async_loop(call, ids, self._http_request)
            await manager.store.client.aclose()  # type: ignore[attr-defined]

        self._start(lambda: asyncio.run(loop()))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
            assert not thread.is_alive(), "a traffic worker hangs"

    # -- what the tests read ---------------------------------------------------------------

    def since(self, moment: float) -> list[Request]:
        return [r for r in self.requests if r.started >= moment]

    def outcomes(self, requests: list[Request] | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in self.requests if requests is None else requests:
            counts[request.outcome] = counts.get(request.outcome, 0) + 1
        return counts

    def wait_for(self, outcome: str, count: int, after: float, timeout: float) -> bool:
        """Wait until `count` requests started after `after` ended with `outcome`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(r.outcome == outcome for r in self.since(after)) >= count:
                return True
            time.sleep(0.05)
        return False

    # -- one request, written once ---------------------------------------------------------

    def _request(self, session_id: str) -> Steps:
        try:
            session: Session = yield ("load", session_id)
            if session.is_new:
                return LOST
            value = counter(session) + 1
            session["n"] = value
            try:
                yield ("commit", session)
            except StoreUnavailable:
                self.counters.maybe(session_id, value)  # it may have been applied
                raise
            self.counters.confirm(session_id, value)
            return OK
        except StoreUnavailable:
            return UNAVAILABLE
        except Exception as exc:  # recorded; the tests fail on it
            return f"error: {exc!r}"

    def _http_request(self, session_id: str) -> Steps:
        try:
            response: httpx.Response = yield ("bump", session_id)
        except Exception as exc:
            return f"error: {exc!r}"
        if response.status_code == 503:
            if "Service Unavailable" not in response.text or "Retry-After" not in response.headers:
                return f"error: an unclear 503: {response.text!r}"
            # Failed at load (nothing written) or at commit (maybe written): one more, at most.
            self.counters.maybe(session_id, self.counters.upper.get(session_id, 0) + 1)
            return UNAVAILABLE
        if response.status_code != 200:
            return f"error: HTTP {response.status_code} {response.text[:200]!r}"
        if response.text == LOST:
            return LOST
        self.counters.confirm(session_id, int(response.text))
        return OK

    # -- the two drivers -------------------------------------------------------------------

    def _start(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _sync_loop(self, call: Callable[[Step], Any], ids: list[str]) -> None:
        while not self._stop.is_set():
            for session_id in ids:
                run = _Run(self._request(session_id))
                while run.step is not None:
                    run.begin()
                    try:
                        result = call(run.step)
                    except Exception as exc:
                        run.failed(exc)
                    else:
                        run.returned(result)
                self._record("sync", run)
                if self._stop.wait(self.pause):
                    return

    async def _async_loop(
        self, call: Callable[[Step], Any], ids: list[str], request: Callable[[str], Steps]
    ) -> None:
        while not self._stop.is_set():
            for session_id in ids:
                run = _Run(request(session_id))
                while run.step is not None:
                    run.begin()
                    try:
                        result = await call(run.step)
                    except Exception as exc:
                        run.failed(exc)
                    else:
                        run.returned(result)
                self._record("asgi" if request == self._http_request else "async", run)
                await asyncio.sleep(self.pause)
                if self._stop.is_set():
                    return

    def _record(self, flavor: str, run: _Run) -> None:
        ended = time.monotonic()
        self.requests.append(Request(flavor, run.started, ended, run.slowest, run.outcome))


class _Run:
    """One request under way: its next step, its outcome once done, its slowest call."""

    def __init__(self, steps: Steps) -> None:
        self.steps = steps
        self.started = time.monotonic()
        self.slowest = 0.0
        self.outcome = ""
        self._begun = self.started
        self.step: Step | None = self._resume(lambda: next(steps))

    def begin(self) -> None:
        self._begun = time.monotonic()

    def returned(self, result: Any) -> None:
        self.slowest = max(self.slowest, time.monotonic() - self._begun)
        self.step = self._resume(lambda: self.steps.send(result))

    def failed(self, error: Exception) -> None:
        self.slowest = max(self.slowest, time.monotonic() - self._begun)
        self.step = self._resume(lambda: self.steps.throw(error))

    def _resume(self, advance: Callable[[], Step]) -> Step | None:
        try:
            return advance()
        except StopIteration as done:
            self.outcome = done.value
            return None

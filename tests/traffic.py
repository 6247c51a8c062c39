"""Steady request load for the failure tests: real requests, each one timed and classified.

A request loads a session, increments its counter "n" and commits: what a web
request does through the middleware, minus HTTP. It is written once, as a
generator of store calls (like the lifecycle), and driven by a sync worker (a
thread) or an async one (a thread running its own event loop). Each worker owns
its sessions, so every stored counter can be checked against what the workers
were told.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from sessionhub import AsyncSessionManager, Session, SessionManager, StoreUnavailable

__all__ = ["LOST", "OK", "UNAVAILABLE", "Request", "Traffic", "counter"]

OK, UNAVAILABLE, LOST = "ok", "unavailable", "lost"

# A step of a request: ("load", session id) or ("commit", session).
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
    """Per session: the last value a commit confirmed, and one a failed commit may have written."""

    confirmed: dict[str, int] = field(default_factory=dict)
    maybe: dict[str, int] = field(default_factory=dict)

    def accepts(self, session_id: str, stored: int) -> bool:
        """Whether `stored` is a value this session may hold now."""
        confirmed = self.confirmed.get(session_id, 0)
        return stored == confirmed or stored == self.maybe.get(session_id)


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

            await self._async_loop(call, ids)
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
                self.counters.maybe[session_id] = value  # it may have been applied
                raise
            self.counters.confirmed[session_id] = value
            self.counters.maybe.pop(session_id, None)
            return OK
        except StoreUnavailable:
            return UNAVAILABLE
        except Exception as exc:  # recorded; the tests fail on it
            return f"error: {exc!r}"

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

    async def _async_loop(self, call: Callable[[Step], Any], ids: list[str]) -> None:
        while not self._stop.is_set():
            for session_id in ids:
                run = _Run(self._request(session_id))
                while run.step is not None:
                    run.begin()
                    try:
                        result = await call(run.step)
                    except Exception as exc:
                        run.failed(exc)
                    else:
                        run.returned(result)
                self._record("async", run)
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

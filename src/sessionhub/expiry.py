"""The expiry sweep: `expired` events for sessions whose time has passed.

Redis forgets a session on its own (the record's TTL) and tells no one, and
keyspace notifications are lost whenever no listener is connected. So the
stores keep an expiry *schedule* next to the records (a sorted set per shard,
score = expiry, kept up to date by the same scripts that write the records),
and a sweep reports each scheduled session that is due and gone: its
`expired` event goes to the event stream, where consumers read it whenever
they come.

Every application instance may run a worker; only the one holding a lease in
the store sweeps (a key holding the holder's random token, with a TTL: taken
when free, renewed by its holder each tick; when the holder dies, another
takes over once the lease runs out). Even two sweeps at
once report each session once: reporting and leaving the schedule are one
atomic step. A tick costs one store call per shard plus the sessions actually
expiring; the number of live sessions does not enter into it.

The rules are written once (`ExpirySweep`, generators of store operations);
`ExpiryWorker` runs them in a thread, `AsyncExpiryWorker` in an asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .errors import StoreUnavailable
from .manager import Steps, arun_steps, run_steps
from .stores.base import AsyncStore, HoldLease, ReleaseLease, Store, Sweep

__all__ = ["AsyncExpiryWorker", "ExpirySweep", "ExpiryWorker"]

logger = logging.getLogger("sessionhub")


class ExpirySweep:
    """The rules of one worker (no I/O).

    `interval`: seconds between ticks; an expired session is reported within
    about one interval (plus `lease_ttl` after the sweeping instance died).
    `lease_ttl`: how long the lease lasts unless renewed (default 3 intervals).
    `batch`: the most sessions handled per store call.
    """

    def __init__(
        self,
        *,
        interval: float = 1.0,
        lease_ttl: float | None = None,
        batch: int = 500,
        lease_name: str = "expiry",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0 or batch < 1:
            raise ValueError("interval and batch must be positive")
        lease_ttl = 3 * interval if lease_ttl is None else lease_ttl
        if lease_ttl <= interval:
            raise ValueError("lease_ttl must be longer than interval, or the lease lapses")
        self.interval = interval
        self.lease_ttl = lease_ttl
        self.batch = batch
        self.lease_name = lease_name
        self.clock = clock
        self.token = secrets.token_urlsafe(16)
        #: Whether this worker held the lease at its last tick.
        self.leading = False

    def tick(self) -> Steps[int]:
        """Renew (or take) the lease; if held, sweep. How many sessions expired."""
        self.leading = yield HoldLease(self.lease_name, self.token, round(self.lease_ttl * 1000))
        if not self.leading:
            return 0
        expired: int = yield Sweep(int(self.clock() * 1000), self.batch)
        return expired

    def release(self) -> Steps[None]:
        """Give the lease up, so another instance takes over at once."""
        if self.leading:
            yield ReleaseLease(self.lease_name, self.token)
            self.leading = False


def _unavailable(exc: StoreUnavailable) -> int:
    logger.warning("expiry sweep skipped: %s", exc.reason)
    return 0


class ExpiryWorker:
    """Runs the sweep every `interval` seconds in a daemon thread.

    `start()`/`stop()`, or use it as a context manager. Options: `ExpirySweep`.
    """

    def __init__(self, store: Store, **options: Any) -> None:
        self.store = store
        self.sweep = ExpirySweep(**options)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        try:
            return run_steps(self.sweep.tick(), self.store)
        except StoreUnavailable as exc:
            return _unavailable(exc)

    def start(self) -> ExpiryWorker:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="sessionhub-expiry")
            self._thread.daemon = True
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("expiry sweep failed")
            self._stop.wait(self.sweep.interval)

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        try:
            run_steps(self.sweep.release(), self.store)
        except StoreUnavailable as exc:
            _unavailable(exc)

    def __enter__(self) -> ExpiryWorker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class AsyncExpiryWorker:
    """Runs the sweep every `interval` seconds in an asyncio task."""

    def __init__(self, store: AsyncStore, **options: Any) -> None:
        self.store = store
        self.sweep = ExpirySweep(**options)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def tick(self) -> int:
        try:
            return await arun_steps(self.sweep.tick(), self.store)
        except StoreUnavailable as exc:
            return _unavailable(exc)

    def start(self) -> AsyncExpiryWorker:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception:
                logger.exception("expiry sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.sweep.interval)

    async def stop(self) -> None:
        """Let the current tick finish (not cancelled: a cancelled Redis call can be
        swallowed on its way out), then give the lease up."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        await task
        try:
            await arun_steps(self.sweep.release(), self.store)
        except StoreUnavailable as exc:
            _unavailable(exc)

    async def __aenter__(self) -> AsyncExpiryWorker:
        return self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

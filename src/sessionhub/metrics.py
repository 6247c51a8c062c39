"""Prometheus metrics for sessions (needs ``prometheus-client``: the ``metrics`` extra).

::

    metrics = SessionMetrics()               # in prometheus_client's default registry
    metrics.install()                        # every manager Settings builds is measured
    app.mount("/metrics", metrics.asgi_app())  # or metrics.wsgi_app(), metrics.render()

=======================================  =================================================
metric                                   what
=======================================  =================================================
``sessionhub_sessions_created_total``    ``created`` events
``sessionhub_logins_total``              ``authenticated`` events (a login's id change
                                         counts here, not as rotated)
``sessionhub_sessions_rotated_total``    ``rotated`` events
``sessionhub_sessions_deleted_total``    ``deleted`` events, by ``reason``
``sessionhub_sessions_expired_total``    ``expired`` events (reported by the instance
                                         whose expiry worker holds the lease)
``sessionhub_store_latency_seconds``     histogram of store calls, by ``operation``
``sessionhub_store_errors_total``        failed store calls, by ``operation`` and
                                         ``error`` (``unavailable`` or the exception type)
``sessionhub_live_sessions``             live sessions, refreshed at most every
                                         `live_max_age` seconds when scraped
=======================================  =================================================

The counters come from the store's in-process events, so they count what
*this process* did (sum them over instances) and, like the events, cover
logged-in sessions, plus anonymous ones when the store has
``anonymous_events=True``. Latency and errors come from a wrapper around the
store (`sessionhub.hooks.observe_calls`). The live gauge reads the expiry
schedules (`sessionhub.stores.redis.survey.live_sessions`: 64 ``ZCOUNT``, no
scan), so it counts the same sessions; on a memory store, every session held.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .errors import StoreUnavailable
from .events import Event, EventType
from .hooks import add_manager_hook, base_store, listen, observe_calls, operation_name
from .manager import AsyncSessionManager, SessionManager
from .stores.base import Operation
from .stores.redis.survey import live_sessions

__all__ = ["SessionMetrics"]

logger = logging.getLogger("sessionhub")

M = TypeVar("M", bound=SessionManager | AsyncSessionManager)

#: Store calls take from a fraction of a millisecond (same host) to the client's timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

ASGIReceive = Callable[[], Awaitable[Any]]
ASGISend = Callable[[Any], Awaitable[None]]
WSGIStartResponse = Callable[[str, list[tuple[str, str]]], Any]


class SessionMetrics:
    """The session metrics of one Prometheus registry.

    `live_max_age`: how old (seconds) the live gauge may be before a scrape
    refreshes it.
    """

    def __init__(
        self, registry: CollectorRegistry = REGISTRY, *, live_max_age: float = 15.0
    ) -> None:
        self.registry = registry
        self.live_max_age = live_max_age
        self.created = Counter(
            "sessionhub_sessions_created", "Sessions stored for the first time.", registry=registry
        )
        self.logins = Counter(
            "sessionhub_logins", "Principals bound to sessions (logins).", registry=registry
        )
        self.rotated = Counter(
            "sessionhub_sessions_rotated", "Session ids changed, logins aside.", registry=registry
        )
        self.deleted = Counter(
            "sessionhub_sessions_deleted",
            "Sessions ended on purpose, by reason.",
            ["reason"],
            registry=registry,
        )
        self.expired = Counter(
            "sessionhub_sessions_expired", "Sessions that timed out.", registry=registry
        )
        self.latency = Histogram(
            "sessionhub_store_latency_seconds",
            "Time of one session store call, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "sessionhub_store_errors",
            "Session store calls that failed, by operation and error.",
            ["operation", "error"],
            registry=registry,
        )
        self.live = Gauge(
            "sessionhub_live_sessions",
            "Live sessions the store tracks (refreshed when older than the scrape allows).",
            registry=registry,
        )
        self._counters = {
            EventType.CREATED: self.created,
            EventType.AUTHENTICATED: self.logins,
            EventType.ROTATED: self.rotated,
            EventType.EXPIRED: self.expired,
        }
        # Where the live gauge is read from: the latest store of each kind seen.
        self._sync_source: Any = None
        self._async_source: Any = None
        self._live_at = float("-inf")
        self._live_lock = threading.Lock()

    # -- attaching --------------------------------------------------------------------

    def instrument(self, manager: M) -> M:
        """Measure `manager`'s store calls and count its store's events."""
        observe_calls(manager, self._measure)
        listen(manager, self._count)
        store = base_store(manager.store)
        if hasattr(store, "aexecute") and not hasattr(store, "execute"):
            self._async_source = store
        else:
            self._sync_source = store
        return manager

    def install(self) -> Callable[[], None]:
        """Instrument every manager `Settings` builds from now on (all integrations);
        returns a function that stops instrumenting new ones."""
        return add_manager_hook(self.instrument)

    @contextmanager
    def _measure(self, operation: Operation) -> Iterator[None]:
        name = operation_name(operation)
        started = time.perf_counter()
        try:
            yield
        except StoreUnavailable:
            self.errors.labels(name, "unavailable").inc()
            raise
        except Exception as exc:
            self.errors.labels(name, type(exc).__name__).inc()
            raise
        finally:
            self.latency.labels(name).observe(time.perf_counter() - started)

    def _count(self, event: Event) -> None:
        if event.type is EventType.DELETED:
            self.deleted.labels(event.reason.value if event.reason else "unknown").inc()
        else:
            self._counters[event.type].inc()

    # -- the live gauge -----------------------------------------------------------------

    def _stale(self) -> bool:
        return time.monotonic() - self._live_at >= self.live_max_age

    def refresh(self) -> None:
        """Refresh the live gauge now if it is stale (blocking: the sync store's call)."""
        store = self._sync_source
        if store is None or not self._stale():
            return
        with self._live_lock:
            if not self._stale():
                return
            if hasattr(store, "run"):
                self._set_live(lambda: store.run(live_sessions(store.commands, _now_ms())))
            else:
                self._set_live(lambda: len(store))

    async def arefresh(self) -> None:
        """Refresh the live gauge if it is stale, without blocking the event loop."""
        store = self._async_source
        if store is None or not hasattr(store, "arun"):
            await asyncio.to_thread(self.refresh)
            return
        if not self._stale():
            return
        self._live_at = time.monotonic()  # one refresh at a time
        try:
            counts = await store.arun(live_sessions(store.commands, _now_ms()))
        except Exception as exc:
            self._live_failed(exc)
        else:
            self.live.set(_total(counts))

    def _set_live(self, read: Callable[[], Any]) -> None:
        self._live_at = time.monotonic()
        try:
            value = read()
        except Exception as exc:
            self._live_failed(exc)
        else:
            self.live.set(value if isinstance(value, int) else _total(value))

    def _live_failed(self, exc: Exception) -> None:
        # The gauge keeps its last value; the failure shows in the errors counter.
        error = "unavailable" if isinstance(exc, StoreUnavailable) else type(exc).__name__
        self.errors.labels("live_sessions", error).inc()
        logger.warning(
            "live session count not refreshed",
            extra={"operation": "live_sessions", "reason": str(exc)},
        )

    # -- exposing ---------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition (body, content type), the live gauge refreshed if stale.

        For any framework: Django ``HttpResponse(*metrics.render())``, Flask
        ``(body, 200, {"Content-Type": content_type})``.
        """
        self.refresh()
        return self._exposition(), CONTENT_TYPE_LATEST

    def _exposition(self) -> bytes:
        return generate_latest(self.registry)

    def asgi_app(self) -> Callable[[Any, ASGIReceive, ASGISend], Awaitable[None]]:
        """An ASGI app answering every GET with the exposition (mount it at /metrics)."""

        async def app(scope: Any, receive: ASGIReceive, send: ASGISend) -> None:
            if scope["type"] != "http":
                return
            await self.arefresh()
            body = self._exposition()
            headers = [
                (b"content-type", CONTENT_TYPE_LATEST.encode()),
                (b"cache-control", b"no-store"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return app

    def wsgi_app(self) -> Callable[[dict[str, Any], WSGIStartResponse], Iterable[bytes]]:
        """A WSGI app answering every request with the exposition."""

        def app(environ: dict[str, Any], start_response: WSGIStartResponse) -> Iterable[bytes]:
            body, content_type = self.render()
            start_response(
                "200 OK", [("Content-Type", content_type), ("Cache-Control", "no-store")]
            )
            return [body]

        return app


def _now_ms() -> int:
    return int(time.time() * 1000)


def _total(counts: dict[str, int]) -> int:
    return sum(counts.values())

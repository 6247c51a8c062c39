"""OpenTelemetry spans around session store calls (needs ``opentelemetry-api``: the
``otel`` extra).

::

    from sessionhub.tracing import SessionTracing

    SessionTracing().install()    # every manager Settings builds from now on

Each store call becomes a span ``sessionhub.<operation>`` (``sessionhub.read``,
``sessionhub.rotate``...) of kind CLIENT, a child of whatever span is current
(the request's, under an instrumented framework), with the attributes
``db.system`` = ``redis`` (or ``memory``), ``sessionhub.operation`` and, when the
operation is about one session, ``sessionhub.session_handle``: the handle, never
the id. A failed call records its exception and an error status. Where and
whether spans are exported is the application's OpenTelemetry SDK setup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from opentelemetry import trace

from .hooks import CallObserver, add_manager_hook, base_store, observe_calls, operation_name
from .manager import AsyncSessionManager, SessionManager
from .stores.base import Operation

__all__ = ["SessionTracing"]

M = TypeVar("M", bound=SessionManager | AsyncSessionManager)


class SessionTracing:
    """Spans for store calls, from `tracer_provider` (the global one unless given)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("sessionhub", tracer_provider=tracer_provider)
        self._observers: dict[str, CallObserver] = {}

    def instrument(self, manager: M) -> M:
        system = "redis" if hasattr(base_store(manager.store), "commands") else "memory"
        if system not in self._observers:
            self._observers[system] = self._span_for(system)
        observe_calls(manager, self._observers[system])
        return manager

    def install(self) -> Callable[[], None]:
        """Trace every manager `Settings` builds from now on; returns a function that stops it."""
        return add_manager_hook(self.instrument)

    def _span_for(self, system: str) -> CallObserver:
        tracer = self.tracer

        @contextmanager
        def span(operation: Operation) -> Iterator[None]:
            name = operation_name(operation)
            attributes: dict[str, str] = {"db.system": system, "sessionhub.operation": name}
            handle = getattr(operation, "handle", None)
            if isinstance(handle, str):
                attributes["sessionhub.session_handle"] = handle
            with tracer.start_as_current_span(
                f"sessionhub.{name}", kind=trace.SpanKind.CLIENT, attributes=attributes
            ):
                yield  # start_as_current_span records an exception and sets the error status

        return span

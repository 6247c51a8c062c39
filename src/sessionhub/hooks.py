"""Hooks: how metrics, logs and traces attach to session managers.

Two ways in, neither touching the lifecycle:

* **Store calls.** `observe_calls(manager, observer)` puts an `ObservedStore`
  in front of the manager's store. An observer is a context manager factory:
  it is entered around every store call (``observer(operation)``), so it can
  time the call, open a span, or see the exception it raised. One wrapper
  serves sync and async stores (`execute` and `aexecute`).
* **Events.** `listen(manager, listener)` adds an event listener to the store
  behind the manager (once, however many managers share that store).

Every integration (ASGI, WSGI, Flask, Quart, Django) gets its managers from
`Settings.session_manager()` / `async_session_manager()`, some of them lazily
(Django makes one asyncio manager per event loop). A *manager hook*
(`add_manager_hook`) sees each of them as it is made, so one line attaches
metrics or logs to all of them: ``SessionMetrics().install()``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, TypeVar

from .events import Listener
from .manager import AsyncSessionManager, SessionManager
from .stores.base import Operation

__all__ = [
    "CallObserver",
    "ManagerHook",
    "ObservedStore",
    "add_manager_hook",
    "base_store",
    "instrumented",
    "listen",
    "observe_calls",
    "operation_name",
]

M = TypeVar("M", bound=SessionManager | AsyncSessionManager)
AnyManager = SessionManager | AsyncSessionManager
ManagerHook = Callable[[AnyManager], object]
CallObserver = Callable[[Operation], AbstractContextManager[object]]

_hooks: tuple[ManagerHook, ...] = ()
_lock = threading.Lock()


def add_manager_hook(hook: ManagerHook) -> Callable[[], None]:
    """Call `hook` on every manager `Settings` builds from now on; returns a
    function that stops it."""
    global _hooks
    with _lock:
        _hooks = (*_hooks, hook)

    def remove() -> None:
        global _hooks
        with _lock:
            _hooks = tuple(each for each in _hooks if each is not hook)

    return remove


def instrumented(manager: M) -> M:
    """`manager`, after every manager hook has seen it (what `Settings` returns)."""
    for hook in _hooks:
        hook(manager)
    return manager


def operation_name(operation: Operation) -> str:
    """An operation's name for labels and spans: "read", "end_sessions"..."""
    name = type(operation).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class ObservedStore:
    """A store that runs each call inside its observers (first added, outermost).

    Anything else is the wrapped store's: ``observed.listeners``,
    ``observed.commands`` and so on.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.observers: tuple[CallObserver, ...] = ()

    def execute(self, operation: Operation) -> Any:
        with self._observed(operation):
            return self.inner.execute(operation)

    async def aexecute(self, operation: Operation) -> Any:
        with self._observed(operation):
            return await self.inner.aexecute(operation)

    @contextmanager
    def _observed(self, operation: Operation) -> Iterator[None]:
        with ExitStack() as stack:
            for observer in self.observers:
                stack.enter_context(observer(operation))
            yield

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def base_store(store: Any) -> Any:
    """The store behind any `ObservedStore`."""
    while isinstance(store, ObservedStore):
        store = store.inner
    return store


def observe_calls(manager: AnyManager, observer: CallObserver) -> None:
    """Run every store call of `manager` inside `observer` (once, if added twice)."""
    store = manager.store
    if not isinstance(store, ObservedStore):
        store = ObservedStore(store)
        manager.store = store
    if observer not in store.observers:
        store.observers = (*store.observers, observer)


# Which listeners each store already has from here: managers may share a store
# (a sync and an asyncio manager on one memory store), and an event must be
# counted once.
_listening: weakref.WeakKeyDictionary[Any, list[Listener]] = weakref.WeakKeyDictionary()


def listen(manager: AnyManager, listener: Listener) -> None:
    """Tell `listener` about the events of `manager`'s store (a no-op for a
    store without listeners)."""
    store = base_store(manager.store)
    listeners = getattr(store, "listeners", None)
    if listeners is None:
        return
    with _lock:
        added = _listening.setdefault(store, [])
        if listener in added:
            return
        added.append(listener)
    listeners.add(listener)

"""Structured logs: session lifecycle and store failures, and a JSON formatter.

Every record goes to the ``sessionhub`` logger with its facts in ``extra``
fields, so a log pipeline can filter on them:

===================  ===============================================================
field                value
===================  ===============================================================
``event``            created, rotated, authenticated, deleted, expired
``session_handle``   the session's handle (never its id: a handle is no cookie)
``previous_handle``  the handle that stopped working (rotated, authenticated)
``principal_digest`` the principal's digest (what its Redis keys are named by),
                     not the principal: logs are often kept longer than sessions
``reason``           why: the deletion reason, or a failure's message
``operation``        the store operation that failed (read, apply, rotate...)
===================  ===============================================================

::

    SessionLog().install()                     # every manager Settings builds
    logging.getLogger("sessionhub").addHandler(json_handler())

The lifecycle itself also logs a few things (an unreadable session, a store
down under degrade mode), with ``session_handle`` and ``reason`` too.
"""

from __future__ import annotations

import datetime
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

import orjson

from .errors import StoreUnavailable
from .events import Event
from .hooks import add_manager_hook, listen, observe_calls, operation_name
from .ids import IdScheme
from .manager import AsyncSessionManager, SessionManager
from .stores.base import Operation

__all__ = ["JsonFormatter", "SessionLog", "json_handler"]

logger = logging.getLogger("sessionhub")

M = TypeVar("M", bound=SessionManager | AsyncSessionManager)

# What every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class SessionLog:
    """Logs each session event at `level`, and each failed store call as a warning."""

    def __init__(self, *, level: int = logging.INFO) -> None:
        self.level = level
        self._listeners: dict[int, Callable[[Event], None]] = {}

    def instrument(self, manager: M) -> M:
        ids = manager.lifecycle.ids
        # One listener per id scheme: managers sharing a store share it, and log once.
        listener = self._listeners.setdefault(id(ids), self._event_logger(ids))
        listen(manager, listener)
        observe_calls(manager, self._failures)
        return manager

    def install(self) -> Callable[[], None]:
        """Log for every manager `Settings` builds from now on; returns a function that stops it."""
        return add_manager_hook(self.instrument)

    def _event_logger(self, ids: IdScheme) -> Callable[[Event], None]:
        def log(event: Event) -> None:
            if not logger.isEnabledFor(self.level):
                return
            extra: dict[str, Any] = {"event": event.type.value, "session_handle": event.handle}
            if event.previous:
                extra["previous_handle"] = event.previous
            if event.principal:
                extra["principal_digest"] = ids.principal_digest(event.principal)
            if event.reason:
                extra["reason"] = event.reason.value
            logger.log(self.level, "session %s", event.type.value, extra=extra)

        return log

    @staticmethod
    @contextmanager
    def _failures(operation: Operation) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            extra: dict[str, Any] = {"operation": operation_name(operation)}
            handle = getattr(operation, "handle", None)
            if isinstance(handle, str):
                extra["session_handle"] = handle
            if isinstance(exc, StoreUnavailable):
                extra["reason"] = exc.reason
                logger.warning("session store unavailable", extra=extra)
            else:
                extra["reason"] = f"{type(exc).__name__}: {exc}"
                logger.error("session store call failed", extra=extra)
            raise


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message,
    every ``extra`` field, and the exception's traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def json_handler(stream: IO[str] | None = None, level: int = logging.NOTSET) -> logging.Handler:
    """A handler writing `JsonFormatter` lines to `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(level)
    return handler

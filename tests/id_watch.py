"""Watching the whole test run for a session id in a log record.

Every id the library issues passes through `IdScheme.new`; the watch keeps
them. Every log record any logger makes (at DEBUG and up: the root logger is
set to DEBUG, and set back to DEBUG whenever something reconfigures logging,
as Litestar does when its app is made) is looked at when it is made, with its
``extra`` fields: an id
can only be logged after it was issued, so checking each record against the
ids issued so far misses nothing. The check is a set lookup per id-shaped
substring, so a long run with many ids stays cheap.
"""

from __future__ import annotations

import logging
import logging.config
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sessionhub.ids import IdScheme, SessionRef

__all__ = ["IdWatch"]

_URLSAFE = re.compile(r"[A-Za-z0-9_-]+")
# HTTP clients' wire traces: at DEBUG, httpcore logs every header sent and received, the
# test clients' Cookie and Set-Cookie among them (as it would an application's outgoing
# X-Session-Id under propagation; docs/metrics.md says not to run it at DEBUG).
WIRE_TRACES = ("httpcore", "hpack")
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


def _text(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # a malformed format: logging reports it; the raw parts are checked
        message = f"{record.msg!r} {record.args!r}"
    parts = [message]
    parts += [repr(value) for name, value in vars(record).items() if name not in _STANDARD]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


class IdWatch:
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.lengths: set[int] = set()
        self.unusual: set[str] = set()  # ids of custom schemes outside the URL-safe alphabet
        self.leaks: list[str] = []
        self.records = 0
        self._lock = threading.Lock()

    def issued(self, session_id: str) -> None:
        with self._lock:
            if _URLSAFE.fullmatch(session_id):
                self.ids.add(session_id)
                self.lengths.add(len(session_id))
            else:
                self.unusual.add(session_id)

    def check(self, record: logging.LogRecord) -> None:
        if record.name.startswith(WIRE_TRACES):
            return
        self.records += 1
        text = _text(record)
        ids, lengths = self.ids, sorted(self.lengths)
        shortest = lengths[0] if lengths else 0
        found = [odd for odd in list(self.unusual) if odd in text]
        if shortest:
            for run in _URLSAFE.findall(text):
                if len(run) < shortest:
                    continue
                for length in lengths:
                    found += [
                        run[i : i + length]
                        for i in range(len(run) - length + 1)
                        if run[i : i + length] in ids
                    ]
        if found:
            self.leaks.append(f"{record.name} {record.levelname}: {text[:300]!r}")

    @contextmanager
    def installed(self) -> Iterator[IdWatch]:
        watch = self
        new, make_record = IdScheme.new, logging.Logger.makeRecord

        def issuing(scheme: IdScheme, shard: str | None = None) -> SessionRef:
            ref = new(scheme, shard)
            watch.issued(ref.id)
            return ref

        def making(logger: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(logger, *args, **kwargs)  # `extra` is on it by now
            try:
                watch.check(record)
            except Exception as exc:  # never into the code that logs; fail the run instead
                watch.leaks.append(f"{record.name}: record not checkable: {exc!r}")
            return record

        root = logging.getLogger()
        level, dict_config = root.level, logging.config.dictConfig

        def configuring(config: dict[str, Any]) -> None:
            dict_config(config)
            root.setLevel(logging.DEBUG)

        IdScheme.new = issuing  # type: ignore[method-assign,assignment]
        logging.Logger.makeRecord = making  # type: ignore[method-assign,assignment]
        logging.config.dictConfig = configuring  # type: ignore[assignment]
        root.setLevel(logging.DEBUG)
        try:
            yield self
        finally:
            root.setLevel(level)
            logging.config.dictConfig = dict_config
            logging.Logger.makeRecord = make_record  # type: ignore[method-assign]
            IdScheme.new = new  # type: ignore[method-assign]

"""Catch what loggers emit, whatever the frameworks do to the logging setup.

pytest's caplog hangs its handler on the root logger, which does not survive
Litestar (it configures logging when its app is made); a handler on the logger
itself does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class Records(logging.Handler):
    """Every record a logger (and its children) emits, at any level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]

    def everything(self) -> str:
        """All of every record, as text: message, arguments, extra fields, traceback."""
        texts = []
        for record in self.records:
            texts.append(record.getMessage())
            texts.append(self.format(record) if record.exc_info else "")
            texts.append(repr(vars(record)))
        return "\n".join(texts)


@contextmanager
def recording(name: str = "") -> Iterator[Records]:
    """Records of logger `name` ("" is the root: every logger) at DEBUG while inside."""
    logger = logging.getLogger(name)
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

"""Waiting for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["eventually"]

T = TypeVar("T")


def eventually(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    Fails after `timeout` seconds, saying `what` was awaited. An exception raised
    by `condition` counts as "not yet" (a server busy failing over may refuse).
    """
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while True:
        try:
            value = condition()
        except Exception as exc:  # not yet; reported if it lasts
            error, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}") from error
        time.sleep(interval)

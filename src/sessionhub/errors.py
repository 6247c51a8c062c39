"""The errors sessionhub raises on purpose."""

from __future__ import annotations

__all__ = ["SessionError", "StoreUnavailable"]


class SessionError(Exception):
    """Base of sessionhub's own errors."""


class StoreUnavailable(SessionError):
    """The store could not be reached, or did not answer in time.

    Web integrations answer 503 with `reason`; nothing stored was changed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

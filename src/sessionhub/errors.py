"""The errors sessionhub raises on purpose."""

from __future__ import annotations

__all__ = ["LoginRefused", "SessionEnded", "SessionError", "StoreUnavailable"]


class SessionError(Exception):
    """Base of sessionhub's own errors."""


class StoreUnavailable(SessionError):
    """The store could not be reached, or did not answer in time.

    Web integrations answer 503 with `reason`; nothing stored was changed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LoginRefused(SessionError):
    """A login would exceed the principal's session limit (policy "refuse").

    Raised by `commit`; nothing was stored, and the session stays as it was
    before `login` (still anonymous, its other changes still pending).
    """

    def __init__(self, principal: str, max_sessions: int) -> None:
        super().__init__(f"{principal!r} already has {max_sessions} sessions, the most allowed")
        self.principal = principal
        self.max_sessions = max_sessions


class SessionEnded(SessionError):
    """The session ended while this request held it: its changes were dropped.

    Raised by `commit` when another request logged the session out (or ended
    it: "log out everywhere", a session limit, an operator) or it expired
    between load and commit -- an end wins over concurrent writes -- and when
    the id the request came with had just been rotated by another request (a
    login), which this request may not write through. Nothing was stored. Web
    integrations answer 409 and leave the client's cookie alone: only the
    request that ended the session tells the client to forget it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

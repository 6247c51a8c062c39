"""The per-user view of sessions: who is logged in where, and how many at once.

Every logged-in session is in its principal's *index*, so the sessions of one
user can be listed (`SessionInfo`) and ended together ("log out everywhere").
A `SessionLimit` caps how many sessions one principal may have at once; the
store enforces it atomically with the login that would exceed it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .codec import CodecError, loads
from .record import Meta

__all__ = ["LimitPolicy", "SessionInfo", "SessionLimit", "UserRef", "session_info"]


class LimitPolicy(enum.StrEnum):
    #: End the user's oldest sessions (by login time) to make room.
    END_OLDEST = "end_oldest"
    #: Refuse the new login: `LoginRefused` is raised at commit.
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class SessionLimit:
    """At most `max_sessions` sessions per principal, kept by `policy`."""

    max_sessions: int
    policy: LimitPolicy = LimitPolicy.END_OLDEST

    def __post_init__(self) -> None:
        if isinstance(self.max_sessions, bool) or not isinstance(self.max_sessions, int):
            raise TypeError("max_sessions must be an int")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        object.__setattr__(self, "policy", LimitPolicy(self.policy))


@dataclass(frozen=True, slots=True)
class UserRef:
    """A principal and what the store knows it by: its shard and digest."""

    principal: str
    shard: str
    digest: str


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session of a user, as `sessions_of` lists it (times in seconds since the epoch)."""

    handle: str
    principal: str
    created_at: float
    accessed_at: float
    expires_at: float
    authenticated_at: float | None
    client_info: dict[str, Any] = field(default_factory=dict)


def session_info(
    handle: str, principal: str, meta: Meta, auth_time: bytes | None, client: bytes | None
) -> SessionInfo:
    """A listing entry from a record's header and its `!a` and `!c` fields."""
    try:
        client_info = {} if client is None else dict(loads(client))
    except (CodecError, TypeError, ValueError):
        client_info = {}  # one unreadable entry must not break the listing
    return SessionInfo(
        handle=handle,
        principal=principal,
        created_at=meta.created / 1000,
        accessed_at=meta.accessed / 1000,
        expires_at=meta.expires / 1000,
        authenticated_at=int(auth_time) / 1000 if auth_time and auth_time.isdigit() else None,
        client_info=client_info,
    )

"""Timeouts and flush behaviour: the knobs of the session lifecycle."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["FlushMode", "Timeouts"]


class FlushMode(enum.Enum):
    #: Changes are written once, when the request ends (one round trip).
    ON_COMMIT = "on_commit"
    #: Every change is written as it is made (a round trip per change).
    IMMEDIATE = "immediate"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long sessions live, in seconds.

    `idle`: a session not used for this long is gone. `absolute`: no session
    outlives this, however busy (sliding never extends it). `refresh_share`: a
    read refreshes the idle expiry only once this share of `idle` has passed
    since the last refresh, so read-mostly traffic rarely writes. A session is
    therefore kept at least `idle * (1 - refresh_share)` after its last use and
    never more than `idle`.
    """

    idle: float = 30 * 60
    absolute: float = 12 * 60 * 60
    refresh_share: float = 0.1

    def __post_init__(self) -> None:
        if self.idle <= 0 or self.absolute <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 <= self.refresh_share < 1:
            raise ValueError("refresh_share must be in [0, 1)")

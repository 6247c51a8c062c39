"""What a store must do: the operations the lifecycle asks of it.

The lifecycle (`sessionhub.manager`) never does I/O. It yields these
operations; a store carries each out and returns its result:

==========  ===================================================  ======================
operation   effect                                               result
==========  ===================================================  ======================
`Read`      return the record, refreshing its idle expiry        `Record` or None
            when `refresh_share` of it has passed
`Create`    store a new record, unless the handle exists         True if stored
`Apply`     merge a `Delta` into an existing record              new `Meta`, or None if
                                                                 the session is gone
`Rotate`    like `Apply`, then move the record to a new handle   new `Meta`, or None
`Delete`    remove the record                                    True if it existed
==========  ===================================================  ======================

No operation may bring back a session that is gone: `Apply` and `Rotate` on a
missing record change nothing and return None. Every operation must be safe to
retry after a lost reply (a retried `Rotate` whose first attempt succeeded
returns the new record's `Meta`).

Times are milliseconds since the epoch, from the application's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from ..record import Delta, Record

__all__ = ["AsyncStore", "Create", "Delete", "Operation", "Read", "Rotate", "Store"]


@dataclass(frozen=True, slots=True)
class Read:
    handle: str
    now: int
    refresh_share: float


@dataclass(frozen=True, slots=True)
class Create:
    handle: str
    record: Record


@dataclass(frozen=True, slots=True)
class Apply:
    handle: str
    delta: Delta
    now: int


@dataclass(frozen=True, slots=True)
class Rotate:
    handle: str
    new_handle: str
    delta: Delta
    now: int


@dataclass(frozen=True, slots=True)
class Delete:
    handle: str


Operation: TypeAlias = Read | Create | Apply | Rotate | Delete


class Store(Protocol):
    """A store used from synchronous code."""

    def execute(self, operation: Operation) -> Any: ...


class AsyncStore(Protocol):
    """A store used from asyncio code."""

    async def aexecute(self, operation: Operation) -> Any: ...


def refresh_due(record: Record, now: int, share: float) -> bool:
    """Whether a read at `now` should push the idle expiry forward."""
    meta = record.meta
    return now - meta.accessed >= meta.idle * share and meta.accessed < now

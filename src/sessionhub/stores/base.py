"""What a store must do: the operations the lifecycle asks of it.

The lifecycle (`sessionhub.manager`) never does I/O. It yields these
operations; a store carries each out and returns its result:

================  ===============================================  ======================
operation         effect                                           result
================  ===============================================  ======================
`Read`            return the record, refreshing its idle expiry    `Record`, None, or
                  when `refresh_share` of it has passed            `FORWARDED`
`Create`          store a new record, unless the handle exists     True if stored, or
                                                                   `LIMIT_REACHED`
`Apply`           merge a `Delta` into an existing record          new `Meta`, `Followed`,
                  (or store `expected` if nobody wrote since)      or None if the session
                                                                   is gone
`Rotate`          like `Apply`, then move the record to a new      new `Meta`, None,
                  handle                                           `LIMIT_REACHED` or
                                                                   `PRINCIPAL_CHANGED`
`Delete`          remove the record                                True if it existed
`ListSessions`    the live sessions of one principal               list of `SessionInfo`
`EndSessions`     delete all sessions of a principal but `keep`    handles ended
`Sweep`           report every tracked session that expired        how many expired
`HoldLease`       take or renew a named lease for `token`          True if held
`ReleaseLease`    give the lease up if `token` holds it            None
================  ===============================================  ======================

**Forwards.** A `Rotate` leaves a *forward* at the old handle for
`FORWARD_WINDOW` ms: the requests that loaded the session before the rotation
(a page's other requests, racing a login) commit to the old handle, and their
changes must land in the rotated session. `Apply`, `Rotate` and `Delete`
follow forwards (a chain of them, if the session was rotated again); `Apply`
then answers `Followed`, so that the request is not told to change its id.
`Read` never follows one: nobody may open a session through an id it was
rotated away from (that is what rotation on login is for); it answers
`FORWARDED`, so that the request does not start a new session in its place.
A `Rotate` that binds a principal (a login) and finds, at the end of a
forward, a session bound to another principal changes nothing and answers
`PRINCIPAL_CHANGED`: one user's login never inherits another's session.

No operation may bring back a session that is gone: `Apply` and `Rotate` on a
missing record change nothing and return None. Every operation must be safe to
retry after a lost reply (a retried `Rotate` whose first attempt succeeded
returns the new record's `Meta`; a retried `Create` of the same record returns
True; on a store that can lose replies, False if the session was ended
meanwhile -- a retry never brings it back).

**Users.** A record with a principal (`!p`) is *logged in*: it is in that
principal's index (ordered by login time, `!a`) until it is deleted or
expires, so `ListSessions` and `EndSessions` find it. A `Create` or `Rotate`
that binds a principal (its record or delta sets `!p`) carries the
`SessionLimit`, if any: with the principal already at the limit it ends the
oldest sessions (reason `limit`) or changes nothing and returns
`LIMIT_REACHED`, atomically with the check.

**Events.** A store reports every change to its `listeners`
(`sessionhub.events.Listeners`) as `Event`s: `created` (and `authenticated`
when the record has a principal) for `Create`; `authenticated` for a
`Rotate` whose delta sets the principal, else `rotated`; `deleted` with the
`Reason` for `Delete` (nothing when the record was already gone), for each
session `EndSessions` ends and for each session a limit pushes out; `expired`
from `Sweep` for each tracked session whose time has passed. Events of
anonymous sessions are reported only when the store tracks them
(`anonymous_events=True`); each expired session is reported once.

Times are milliseconds since the epoch, from the application's clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from ..events import Reason
from ..record import Delta, Meta, Record
from ..users import SessionLimit, UserRef

__all__ = [
    "FORWARDED",
    "FORWARD_WINDOW",
    "LIMIT_REACHED",
    "PRINCIPAL_CHANGED",
    "AsyncStore",
    "Create",
    "Delete",
    "EndSessions",
    "Followed",
    "Forward",
    "HoldLease",
    "ListSessions",
    "Operation",
    "Read",
    "ReleaseLease",
    "Rotate",
    "Store",
    "Sweep",
]


class Refusal(enum.Enum):
    LIMIT_REACHED = "limit reached"
    PRINCIPAL_CHANGED = "principal changed"


#: What `Create` and `Rotate` return when a session limit refuses the login.
LIMIT_REACHED = Refusal.LIMIT_REACHED
#: What `Rotate` returns for a login that found, at the end of a forward, a
#: session another principal logged in to meanwhile.
PRINCIPAL_CHANGED = Refusal.PRINCIPAL_CHANGED


class Forward(enum.Enum):
    FORWARDED = "forwarded"


#: What `Read` returns for an id whose session was rotated away from it.
FORWARDED = Forward.FORWARDED

#: How long a rotated id forwards commits to the rotated session (ms): longer
#: than a request that loaded the session before the rotation takes to commit.
FORWARD_WINDOW = 60_000


@dataclass(frozen=True, slots=True)
class Followed:
    """What `Apply` returns when it followed a forward: another request rotated
    the session since it was read, and the changes landed in the rotated
    session, whose `meta` this is (and whose id the committing request never
    learns)."""

    meta: Meta


@dataclass(frozen=True, slots=True)
class Read:
    handle: str
    now: int
    refresh_share: float


@dataclass(frozen=True, slots=True)
class Create:
    handle: str
    record: Record
    limit: SessionLimit | None = None


@dataclass(frozen=True, slots=True)
class Apply:
    handle: str
    delta: Delta
    now: int
    #: The record as this commit leaves it if nobody wrote since the session
    #: was read (its version is the read one's plus one), or None. A store may
    #: store it as it is when the stored version is still the read one
    #: instead of merging `delta` (Redis: a blind SET, no merge in Lua).
    expected: Record | None = None


@dataclass(frozen=True, slots=True)
class Rotate:
    handle: str
    new_handle: str
    delta: Delta
    now: int
    limit: SessionLimit | None = None
    #: The user digest (`!u`) of the record as it was read, if any: a hint that
    #: lets a store name the user's index without reading the record first (a
    #: wrong or missing hint may cost a round trip, never correctness).
    user: bytes | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    handle: str
    now: int
    reason: Reason = Reason.LOGOUT
    user: bytes | None = None  # as for `Rotate`


@dataclass(frozen=True, slots=True)
class ListSessions:
    user: UserRef
    now: int


@dataclass(frozen=True, slots=True)
class EndSessions:
    user: UserRef
    now: int
    reason: Reason
    keep: str | None = None  # a handle to leave alone (the current session)


@dataclass(frozen=True, slots=True)
class Sweep:
    now: int
    batch: int = 500  # the most sessions handled per shard per store call


@dataclass(frozen=True, slots=True)
class HoldLease:
    name: str
    token: str
    ttl: int  # ms


@dataclass(frozen=True, slots=True)
class ReleaseLease:
    name: str
    token: str


Operation: TypeAlias = (
    Read
    | Create
    | Apply
    | Rotate
    | Delete
    | ListSessions
    | EndSessions
    | Sweep
    | HoldLease
    | ReleaseLease
)


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

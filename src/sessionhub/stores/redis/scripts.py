"""The Lua scripts, loaded once and called by SHA.

Each script is its own file in `lua/`, preceded by the libraries it uses:
`record.lua` (the record format) and `track.lua` (the books kept next to the
records: user indexes, expiry schedules, event streams).

A script that Redis has forgotten (after `SCRIPT FLUSH`, a restart or a
failover to a replica that never saw it) is sent again in full with `EVAL`,
which also caches it: one extra round trip, once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from ..base import FORWARD_WINDOW

__all__ = [
    "APPLY",
    "CREATE",
    "DELETE",
    "END_SESSIONS",
    "HAND_OVER",
    "LEASE",
    "READ",
    "ROTATE",
    "SWEEP",
    "Script",
]


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str


# The constants the scripts share with the Python side, defined there.
_CONSTANTS = f"local FORWARD_WINDOW = {FORWARD_WINDOW}\n"


def _load(name: str, libraries: tuple[str, ...] = ("record", "track")) -> Script:
    folder = files(__package__) / "lua"
    parts = [(folder / f"{part}.lua").read_text() for part in (*libraries, name)]
    source = _CONSTANTS + "\n".join(parts)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324


READ = _load("read")
APPLY = _load("apply")
CREATE = _load("create")
ROTATE = _load("rotate")
DELETE = _load("delete")
HAND_OVER = _load("hand_over")
END_SESSIONS = _load("end_sessions")
SWEEP = _load("sweep")
LEASE = _load("lease", libraries=())

"""The Lua scripts, loaded once and called by SHA.

A script that Redis has forgotten (after `SCRIPT FLUSH`, a restart or a
failover to a replica that never saw it) is sent again in full with `EVAL`,
which also caches it: one extra round trip, once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

__all__ = ["APPLY", "READ", "ROTATE", "Script"]


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str


def _load(name: str) -> Script:
    folder = files(__package__) / "lua"
    source = (folder / "record.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324


READ = _load("read")
APPLY = _load("apply")
ROTATE = _load("rotate")

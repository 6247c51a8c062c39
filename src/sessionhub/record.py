"""The stored form of one session, and the change set a commit sends.

One session is one record, a short text (a Redis string value, or an entry of
the memory store)::

    1764063375000 1764063375000 1800000 1764106575000 3
    !p<TAB>"alice"
    "user_id"<TAB>12345
    "cart"<TAB>{"sku-1":2}

The first line holds, in milliseconds since the epoch: created, last access,
idle timeout, absolute deadline; then the version. Every further line is a
*field*: its name, a tab, and its value. Attribute names are JSON strings (so
they start with a quote and can hold any character); names starting with "!"
are metadata (principal, auth time, client info, binding, user digest). Values are the
codec's output and never contain a newline, so a line is a field.

Why a string and not a hash: for a typical session (a user id and a small
dict) a Redis hash with a value over 64 bytes leaves the compact listpack
encoding and costs 480-680 bytes; this record costs about 310. Atomic
per-attribute writes do not need a hash -- the commit script merges the
changed fields into the record inside Redis, so two overlapping requests that
change different attributes both survive. `apply` below is that merge for the
stores that run in Python; `lua/` holds the same merge for Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

__all__ = [
    "AUTH_TIME",
    "BINDING",
    "CLIENT_INFO",
    "PRINCIPAL",
    "USER",
    "Delta",
    "Meta",
    "Record",
    "RecordError",
    "apply",
    "attribute_name",
    "field_name",
    "format_record",
    "parse_record",
]

PRINCIPAL = b"!p"
AUTH_TIME = b"!a"
CLIENT_INFO = b"!c"
BINDING = b"!b"
#: The principal's digest: names the user's index key (the Redis scripts read it).
USER = b"!u"


class RecordError(ValueError):
    """Stored bytes that are not a record."""


@dataclass(slots=True)
class Meta:
    created: int
    accessed: int
    idle: int
    deadline: int
    version: int

    @property
    def expires(self) -> int:
        """When the store forgets the session (ms): idle expiry capped by the deadline."""
        return min(self.accessed + self.idle, self.deadline)


@dataclass(slots=True)
class Record:
    meta: Meta
    fields: dict[bytes, bytes] = field(default_factory=dict)
    #: Set by a store's read that moved the idle expiry (to `meta.accessed`): a
    #: remembered session's cookie is then renewed.
    refreshed: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Delta:
    """What one commit changes: fields set and removed, and timeout changes."""

    sets: dict[bytes, bytes] = field(default_factory=dict)
    deletes: tuple[bytes, ...] = ()
    clear: bool = False  # drop every attribute field first (metadata stays)
    idle: int | None = None
    deadline: int | None = None


def parse_record(blob: bytes) -> Record:
    head, _, body = blob.partition(b"\n")
    # The header exactly as the Lua scripts read it (lua/record.lua): five runs of
    # ASCII digits, of at most 15 digits each so that Lua's doubles hold them
    # exactly. A header Python read but Redis would refuse would fail the commit
    # instead of the load.
    numbers = head.split(b" ")
    if len(numbers) != 5 or not all(0 < len(n) <= 15 and n.isdigit() for n in numbers):
        raise RecordError("malformed record header")
    created, accessed, idle, deadline, version = map(int, numbers)
    fields: dict[bytes, bytes] = {}
    if body:
        for line in body.split(b"\n"):
            name, tab, value = line.partition(b"\t")
            if not tab or not name:
                raise RecordError("malformed record field")
            fields[name] = value
    return Record(Meta(created, accessed, idle, deadline, version), fields)


def format_record(record: Record) -> bytes:
    meta = record.meta
    head = b"%d %d %d %d %d" % (
        meta.created,
        meta.accessed,
        meta.idle,
        meta.deadline,
        meta.version,
    )
    if not record.fields:
        return head
    lines = [name + b"\t" + value for name, value in record.fields.items()]
    return head + b"\n" + b"\n".join(lines)


def apply(record: Record, delta: Delta, now: int) -> Record:
    """The record after a commit at `now` (ms); the input is not changed."""
    meta = record.meta
    fields = dict(record.fields)
    if delta.clear:
        fields = {name: value for name, value in fields.items() if name[:1] == b"!"}
    for name in delta.deletes:
        fields.pop(name, None)
    fields.update(delta.sets)
    new_meta = Meta(
        created=meta.created,
        accessed=now,
        idle=meta.idle if delta.idle is None else delta.idle,
        deadline=meta.deadline if delta.deadline is None else delta.deadline,
        version=meta.version + 1,
    )
    return Record(new_meta, fields)


_NAME_CACHE: dict[str, bytes] = {}
_ATTRIBUTE_CACHE: dict[bytes, str] = {}
_CACHE_LIMIT = 4096


def field_name(attribute: str) -> bytes:
    """The field name of an attribute: its JSON string form."""
    cached = _NAME_CACHE.get(attribute)
    if cached is None:
        cached = orjson.dumps(attribute)
        if len(_NAME_CACHE) >= _CACHE_LIMIT:
            _NAME_CACHE.clear()
        _NAME_CACHE[attribute] = cached
    return cached


def attribute_name(name: bytes) -> str:
    """The attribute a field name stands for (the inverse of `field_name`)."""
    cached = _ATTRIBUTE_CACHE.get(name)
    if cached is None:
        try:
            decoded = orjson.loads(name)
        except orjson.JSONDecodeError:
            raise RecordError("malformed field name") from None
        if not isinstance(decoded, str):
            raise RecordError("malformed field name")
        if len(_ATTRIBUTE_CACHE) >= _CACHE_LIMIT:
            _ATTRIBUTE_CACHE.clear()
        _ATTRIBUTE_CACHE[name] = cached = decoded
    return cached

"""The session an application reads and writes: a mapping with a change log.

What is saved at commit:

* assignment (`session[k] = v`), including re-assigning a value that was
  mutated in place (`cart = session["cart"]; cart.append(x); session["cart"] = cart`);
* `del session[k]`, `pop`, `popitem`, `clear`, `update`, `setdefault`;
* in-place mutation of a dict or list that was *read* during this request,
  even without re-assignment: such values are re-encoded at commit and saved
  if their encoding changed.

What is not: changes made to a value after the session was committed, and
mutation of an object that was never read from or assigned to the session in
this request. Values whose JSON is exactly what is stored are not sent, so
re-assigning an unchanged value costs nothing -- also under encryption: the
session compares JSON, and the codec seals only the values that changed.

Each changed attribute is written on its own: two overlapping requests that
change different attributes both keep their change; two that change the same
attribute keep the last one written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar, overload

from .codec import JSON, Codec, dumps, from_json, loads, to_json
from .ids import SessionRef
from .record import (
    AUTH_TIME,
    BINDING,
    CLIENT_INFO,
    PRINCIPAL,
    USER,
    Delta,
    Meta,
    Record,
    RecordError,
    attribute_name,
    field_name,
)

__all__ = ["Session"]

T = TypeVar("T")

_REMEMBER = b"!r"
_MUTABLE = (dict, list)


class Session(MutableMapping[str, JSON]):
    """One user's session. Create it through a `SessionManager`, not directly."""

    # One is built for every request, anonymous ones included: slots make that cheaper.
    __slots__ = (
        "__weakref__",
        "_assigned",
        "_base",
        "_cleared",
        "_codec",
        "_deadline_change",
        "_degraded",
        "_doomed",
        "_doomed_user",
        "_idle_change",
        "_meta",
        "_meta_changes",
        "_meta_fields",
        "_on_change",
        "_pending_flush",
        "_read",
        "_ref",
        "_refreshed",
        "_removed",
        "_rotate",
        "_stored",
        "_superseded",
        "_values",
        "accessed",
    )

    _ref: SessionRef | None
    _meta: Meta
    _values: dict[str, JSON]
    # attribute -> its JSON as last stored; None if stored in an older form
    # (plaintext, an older key): sealed again when the application touches it
    _stored: dict[str, bytes | None]
    _assigned: set[str]
    _removed: set[str]
    _read: set[str]  # mutable values handed out this request
    _cleared: bool
    _meta_fields: dict[bytes, bytes]
    _meta_changes: dict[bytes, bytes | None]
    _idle_change: int | None
    _deadline_change: int | None
    _rotate: bool
    _doomed: SessionRef | None
    _doomed_user: bytes | None  # the doomed record's user digest, if it had one
    # The id the request came with, when another request had just rotated the
    # session away from it: this session starts empty (that id may not open
    # the rotated one), a write to it is refused rather than given a new id
    # that would replace the client's new one, and a logout follows the id.
    _superseded: SessionRef | None
    # The record as stored, when this process knows it exactly (after a load,
    # a create or an unmerged commit): a commit can then send the record it
    # leaves, which the store keeps as it is unless someone wrote meanwhile.
    _base: Record | None

    def __init__(self, codec: Codec, meta: Meta, ref: SessionRef | None = None) -> None:
        self._codec = codec
        self._forget(ref, meta)
        self._superseded = None
        self._refreshed = False
        self._on_change: Callable[[], None] | None = None
        self._pending_flush: Any = None  # the asyncio task of an immediate flush
        self._degraded = False  # made up because the store was unavailable: never stored
        #: True once the application looked at or changed the session.
        self.accessed = False

    # -- construction from a stored record --------------------------------

    @classmethod
    def from_record(cls, codec: Codec, ref: SessionRef, record: Record) -> Session:
        """The session a record describes; RecordError/CodecError if it cannot be read."""
        session = cls(codec, record.meta, ref)
        session._base = record
        values, stored, meta = session._values, session._stored, session._meta_fields
        binding = record.fields.get(BINDING, b"").decode("ascii", "replace")
        plain = codec.stores_plaintext
        for name, raw in record.fields.items():
            if name[:1] == b"!":
                meta[name] = raw
                continue
            attribute = attribute_name(name)
            if plain:
                values[attribute] = from_json(raw, attribute)
                stored[attribute] = raw
                continue
            plaintext = codec.open(raw, attribute, binding)
            values[attribute] = from_json(plaintext, attribute)
            stored[attribute] = plaintext if codec.is_current(raw) else None
        if not meta:
            return session
        # Metadata is checked now, so that a damaged record fails the load (a new
        # session) and not a property read or a commit later on.
        if PRINCIPAL in meta and not isinstance(loads(meta[PRINCIPAL]), str):
            raise RecordError("principal is not a string")
        if AUTH_TIME in meta and not (meta[AUTH_TIME].isdigit() and len(meta[AUTH_TIME]) <= 15):
            raise RecordError("auth time is not a number")
        if CLIENT_INFO in meta and not isinstance(loads(meta[CLIENT_INFO]), dict):
            raise RecordError("client info is not an object")
        if BINDING in meta and not meta[BINDING].isascii():
            raise RecordError("binding is not ASCII")
        return session

    # -- the mapping --------------------------------------------------------

    def __getitem__(self, name: str) -> JSON:
        self.accessed = True
        value = self._values[name]
        if isinstance(value, _MUTABLE):
            self._read.add(name)
        return value

    @overload
    def get(self, name: str, /) -> JSON | None: ...

    @overload
    def get(self, name: str, /, default: JSON | T) -> JSON | T: ...

    def get(self, name: str, /, default: object = None) -> object:
        # Mapping's get goes through a KeyError for every missing name: the
        # anonymous request's "am I logged in?" would pay for it.
        if name in self._values:
            return self[name]
        self.accessed = True
        return default

    def __setitem__(self, name: str, value: JSON) -> None:
        if not isinstance(name, str):
            raise TypeError("session attribute names are strings")
        to_json(value, name)  # refuse non-JSON values now
        self.accessed = True
        self._values[name] = value
        self._assigned.add(name)
        self._removed.discard(name)
        self._changed()

    def __delitem__(self, name: str) -> None:
        self.accessed = True
        del self._values[name]
        self._assigned.discard(name)
        self._read.discard(name)
        self._removed.add(name)
        self._changed()

    def __iter__(self) -> Iterator[str]:
        self.accessed = True
        return iter(self._values)

    def __len__(self) -> int:
        self.accessed = True
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        self.accessed = True
        return name in self._values

    def clear(self) -> None:
        self.accessed = True
        self._values.clear()
        self._assigned.clear()
        self._removed.clear()
        self._read.clear()
        self._cleared = True
        self._changed()

    def __repr__(self) -> str:
        # Never the id: reprs end up in logs and tracebacks.
        return f"<Session handle={self._handle()!r} attributes={len(self._values)}>"

    # -- metadata -------------------------------------------------------------
    #
    # Reading any of these counts as a look at the session, as reading a key
    # does: a response that shows who is logged in depends on the cookie
    # (`Vary`). sessionhub's own code reads the private forms below instead.

    @property
    def id(self) -> str | None:
        """The id the client holds; None until the session is first stored."""
        self.accessed = True
        return self._ref.id if self._ref else None

    @property
    def handle(self) -> str | None:
        """The store's name for this session: safe to log and to show operators."""
        self.accessed = True
        return self._ref.handle if self._ref else None

    @property
    def is_new(self) -> bool:
        self.accessed = True
        return self._ref is None

    @property
    def created_at(self) -> float:
        self.accessed = True
        return self._meta.created / 1000

    @property
    def accessed_at(self) -> float:
        self.accessed = True
        return self._meta.accessed / 1000

    @property
    def idle_timeout(self) -> float:
        self.accessed = True
        return (self._idle_change or self._meta.idle) / 1000

    @property
    def deadline(self) -> float:
        """The absolute deadline (seconds since the epoch)."""
        self.accessed = True
        return (self._deadline_change or self._meta.deadline) / 1000

    @property
    def expires_at(self) -> float:
        """When the session ends if not used again (seconds since the epoch)."""
        self.accessed = True
        return self._expires_at()

    @property
    def version(self) -> int:
        self.accessed = True
        return self._meta.version

    @property
    def principal(self) -> str | None:
        self.accessed = True
        return self._principal()

    @property
    def authenticated_at(self) -> float | None:
        self.accessed = True
        return self._authenticated_at()

    @property
    def client_info(self) -> dict[str, Any]:
        """What the application chose to record about the client (user agent, IP...)."""
        self.accessed = True
        return self._client_info()

    @client_info.setter
    def client_info(self, info: dict[str, Any]) -> None:
        self._set_meta(CLIENT_INFO, dumps(info))

    @property
    def binding(self) -> str:
        """A random token fixed for the session's life, which codecs may bind values to."""
        self.accessed = True
        return self._binding()

    @property
    def persistent(self) -> bool:
        """Whether the client should keep the id beyond the browser session ("remember me")."""
        self.accessed = True
        return self._persistent()

    @property
    def modified(self) -> bool:
        """Whether a commit would write anything (in-place mutation aside)."""
        return bool(
            self._assigned
            or self._removed
            or self._cleared
            or self._meta_changes
            or self._idle_change is not None
            or self._deadline_change is not None
            or self._rotate
            or self._doomed is not None
        )

    # -- lifecycle requests, carried out at commit ------------------------------

    def rotate(self) -> None:
        """Give the session a new id at commit; the old id stops working."""
        self.accessed = True
        self._rotate = True
        self._changed()

    def login(self, principal: str, *, now: float) -> None:
        """Bind the session to `principal` and rotate its id (fixation protection).

        An anonymous session, or one of the same principal, keeps its data (a
        cart survives signing in). A session of another principal is ended
        and `principal` starts with an empty one: one user never sees what
        another left in the session (Django's `login()` does the same).
        """
        if not isinstance(principal, str) or not principal:
            raise ValueError("principal must be a non-empty string")
        stored = self._meta_fields.get(PRINCIPAL)
        if stored is not None and loads(stored) != principal:
            self.invalidate()
        self._set_meta(PRINCIPAL, dumps(principal))
        self._set_meta(AUTH_TIME, b"%d" % int(now * 1000))
        self.rotate()

    def invalidate(self) -> None:
        """End the session: deleted from the store at commit, empty from now on.

        Writing to the session afterwards starts a new one, with a new id.
        """
        self.accessed = True
        doomed: SessionRef | None = self._doomed
        user = self._doomed_user
        if doomed is None:
            doomed, user = self._ref or self._superseded, self._meta_fields.get(USER)
        self._forget(self._ref, self._meta)
        self._ref = None
        self._doomed, self._doomed_user = doomed, user
        self._superseded = None
        self._changed()

    def remember(self, idle: float, absolute: float | None = None) -> None:
        """Keep this session longer than the default ("remember me").

        `idle` replaces the idle timeout for this session; `absolute`, if
        given, moves the absolute deadline to `absolute` seconds after creation.
        The client is told to keep the id across browser restarts.
        """
        if idle <= 0 or (absolute is not None and absolute <= 0):
            raise ValueError("timeouts must be positive")
        self._idle_change = int(idle * 1000)
        if absolute is not None:
            self._deadline_change = self._meta.created + int(absolute * 1000)
        self._set_meta(_REMEMBER, b"1")

    # -- for the manager ----------------------------------------------------------

    def _id(self) -> str | None:
        return self._ref.id if self._ref else None

    def _handle(self) -> str | None:
        return self._ref.handle if self._ref else None

    def _principal(self) -> str | None:
        raw = self._meta_value(PRINCIPAL)
        return None if raw is None else str(loads(raw))

    def _authenticated_at(self) -> float | None:
        raw = self._meta_value(AUTH_TIME)
        return None if raw is None else int(raw) / 1000

    def _client_info(self) -> dict[str, Any]:
        raw = self._meta_value(CLIENT_INFO)
        return {} if raw is None else dict(loads(raw))

    def _binding(self) -> str:
        raw = self._meta_value(BINDING)
        return "" if raw is None else raw.decode("ascii")

    def _persistent(self) -> bool:
        return self._meta_value(_REMEMBER) is not None

    def _expires_at(self) -> float:
        idle = self._idle_change or self._meta.idle
        deadline = self._deadline_change or self._meta.deadline
        return min(self._meta.accessed + idle, deadline) / 1000

    def _meta_value(self, name: bytes) -> bytes | None:
        if name in self._meta_changes:
            changed: bytes | None = self._meta_changes[name]
            return changed
        stored: bytes | None = self._meta_fields.get(name)
        return stored

    def _set_meta(self, name: bytes, value: bytes | None) -> None:
        self.accessed = True
        self._meta_changes[name] = value
        self._changed()

    def _pending_principal(self) -> str | None:
        """The principal a pending login binds, if any."""
        raw = self._meta_changes.get(PRINCIPAL)
        if raw is None or raw == self._meta_fields.get(PRINCIPAL):
            return None
        return str(loads(raw))

    def _bind_user(self, digest: bytes) -> None:
        """Record the pending login's user digest (part of the login: no flush of its own)."""
        self._meta_changes[USER] = digest

    def _cancel_login(self) -> None:
        """Drop a pending login (refused): the session stays as it was before it."""
        for name in (PRINCIPAL, AUTH_TIME, USER):
            self._meta_changes.pop(name, None)
        self._rotate = False

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _json(self, name: str) -> bytes:
        return to_json(self._values[name], name)

    def _seal(self, name: str, plaintext: bytes) -> bytes:
        return self._codec.seal(plaintext, name, self._binding())

    def _delta(self) -> Delta | None:
        """The changes since load or the last commit; None when there are none."""
        sets: dict[bytes, bytes] = {}
        for name in self._assigned | self._read:
            if name not in self._values:
                continue
            plaintext = self._json(name)
            if self._cleared or self._stored.get(name) != plaintext:
                sets[field_name(name)] = self._seal(name, plaintext)
        deletes = tuple(field_name(name) for name in self._removed if name in self._stored)
        for meta_name, value in self._meta_changes.items():
            if value is None:
                deletes += (meta_name,)
            elif self._meta_fields.get(meta_name) != value:
                sets[meta_name] = value
        if not (
            sets
            or deletes
            or self._cleared
            or self._idle_change is not None
            or self._deadline_change is not None
        ):
            return None
        return Delta(sets, deletes, self._cleared, self._idle_change, self._deadline_change)

    def _fields(self) -> dict[bytes, bytes]:
        """Every field, for a session stored for the first time."""
        fields = dict(self._meta_fields)
        for meta_name, value in self._meta_changes.items():
            if value is None:
                fields.pop(meta_name, None)
            else:
                fields[meta_name] = value
        for name in self._values:
            fields[field_name(name)] = self._seal(name, self._json(name))
        return fields

    def _committed(self, ref: SessionRef, meta: Meta, delta: Delta | None) -> None:
        """Record that the store now holds this session under `ref` as `meta`.

        `delta` is what was sent; None when every field was (a new record).
        """
        stored: dict[str, bytes | None]
        if delta is None or delta.clear:
            stored = {name: self._json(name) for name in self._values}
        else:
            stored = self._stored
            for name in self._removed:
                stored.pop(name, None)
            for name in self._assigned | self._read:
                if name in self._values:
                    stored[name] = self._json(name)
        fields = self._meta_fields
        for meta_name, value in self._meta_changes.items():
            if value is None:
                fields.pop(meta_name, None)
            else:
                fields[meta_name] = value
        values = self._values
        self._forget(ref, meta)
        self._values, self._stored, self._meta_fields = values, stored, fields

    def _lost(self, meta: Meta) -> None:
        """The stored session vanished (ended elsewhere): continue as a new, empty one."""
        self._forget(None, meta)

    def _forget(self, ref: SessionRef | None, meta: Meta) -> None:
        """Reset to an unchanged session `ref` with no attributes."""
        self._ref = ref
        self._meta = meta
        self._values = {}
        self._stored = {}
        self._meta_fields = {}
        self._meta_changes = {}
        self._assigned = set()
        self._removed = set()
        self._read = set()
        self._cleared = False
        self._rotate = False
        self._doomed = None
        self._doomed_user = None
        self._idle_change = None
        self._deadline_change = None
        self._base = None

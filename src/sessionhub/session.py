"""The session an application reads and writes: a `dict`, whose changes are tracked.

A `Session` is a real `dict` of JSON values, as Starlette's and Flask's sessions
are: ``json.dumps(session)``, ``session |= data``, ``popitem()`` and the rest
work as on any dict. What the lifecycle needs besides the values -- what the
store holds, what changed since, what is to happen at commit -- is the
session's `SessionState` (``session._state``), kept apart from the mapping.

What is saved at commit:

* assignment (`session[k] = v`), including re-assigning a value that was
  mutated in place (`cart = session["cart"]; cart.append(x); session["cart"] = cart`);
* `del session[k]`, `pop`, `popitem`, `update`, `setdefault`, `|=`;
* in-place mutation of a dict or list that was *read* during this request,
  even without re-assignment: such values are re-encoded at commit and saved
  if their encoding changed;
* `clear()`: the session is ended (deleted from the store, no longer anyone's),
  as a cookie session is when emptied; values set afterwards start a new one.

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

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, overload

from .codec import JSON, Codec, JsonCodec, dumps, loads
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

__all__ = ["Session", "SessionState"]

T = TypeVar("T")

_REMEMBER = b"!r"
_MUTABLE = (dict, list)
_MISSING: Any = object()


class SessionState:
    """What the lifecycle knows of a session besides its values.

    What the store holds (its id, header, metadata, each attribute's JSON as
    stored) and what changed since (attributes assigned, removed, mutable ones
    handed out; metadata set; a rotation, an end, new timeouts asked for).
    The `Session` records changes here; the lifecycle (`sessionhub.manager`)
    reads them and records what a commit stored. No I/O.
    """

    __slots__ = (
        "assigned",
        "base",
        "cleared",
        "codec",
        "deadline_change",
        "degraded",
        "doomed",
        "doomed_user",
        "idle_change",
        "meta",
        "meta_changes",
        "meta_fields",
        "on_change",
        "pending_flush",
        "read",
        "ref",
        "refreshed",
        "removed",
        "rotating",
        "stored",
        "superseded",
    )

    ref: SessionRef | None
    meta: Meta
    #: attribute -> its JSON as last stored; None if stored in an older form
    #: (plaintext, an older key): sealed again when the application touches it
    stored: dict[str, bytes | None]
    assigned: set[str]
    removed: set[str]
    read: set[str]  # mutable values handed out this request
    cleared: bool
    meta_fields: dict[bytes, bytes]
    meta_changes: dict[bytes, bytes | None]
    idle_change: int | None
    deadline_change: int | None
    rotating: bool
    doomed: SessionRef | None  # a stored session this one ended, deleted at commit
    doomed_user: bytes | None  # its user digest, if it had one
    #: The id the request came with, when another request had just rotated the
    #: session away from it: the session starts empty (that id may not open the
    #: rotated one), a write to it is refused rather than given a new id that
    #: would replace the client's new one, and a logout follows the id.
    superseded: SessionRef | None
    #: The record as stored, when this process knows it exactly (after a load,
    #: a create or an unmerged commit): a commit can then send the record it
    #: leaves, which the store keeps as it is unless someone wrote meanwhile.
    base: Record | None

    def __init__(self, codec: Codec, meta: Meta, ref: SessionRef | None = None) -> None:
        self.codec = codec
        self.forget(ref, meta)
        self.superseded = None
        self.refreshed = False  # the load moved the idle expiry
        self.on_change: Callable[[], None] | None = None
        self.pending_flush: Any = None  # the asyncio task of an immediate flush
        self.degraded = False  # made up because the store was unavailable: never stored

    # -- who and when ---------------------------------------------------------

    @property
    def id(self) -> str | None:
        return self.ref.id if self.ref else None

    @property
    def handle(self) -> str | None:
        return self.ref.handle if self.ref else None

    def meta_value(self, name: bytes) -> bytes | None:
        if name in self.meta_changes:
            changed: bytes | None = self.meta_changes[name]
            return changed
        stored: bytes | None = self.meta_fields.get(name)
        return stored

    def principal(self) -> str | None:
        raw = self.meta_value(PRINCIPAL)
        return None if raw is None else str(loads(raw))

    def authenticated_at(self) -> float | None:
        raw = self.meta_value(AUTH_TIME)
        return None if raw is None else int(raw) / 1000

    def client_info(self) -> dict[str, Any]:
        raw = self.meta_value(CLIENT_INFO)
        return {} if raw is None else dict(loads(raw))

    def binding(self) -> str:
        raw = self.meta_value(BINDING)
        return "" if raw is None else raw.decode("ascii")

    def persistent(self) -> bool:
        return self.meta_value(_REMEMBER) is not None

    def idle(self) -> int:
        return self.idle_change or self.meta.idle

    def deadline(self) -> int:
        return self.deadline_change or self.meta.deadline

    def expires_at(self) -> float:
        return min(self.meta.accessed + self.idle(), self.deadline()) / 1000

    @property
    def modified(self) -> bool:
        """Whether a commit would write anything (in-place mutation aside)."""
        return bool(
            self.assigned
            or self.removed
            or self.cleared
            or self.meta_changes
            or self.idle_change is not None
            or self.deadline_change is not None
            or self.rotating
            or self.doomed is not None
        )

    # -- changes, as the session records them ------------------------------------

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def set_meta(self, name: bytes, value: bytes | None) -> None:
        self.meta_changes[name] = value
        self.changed()

    def pending_principal(self) -> str | None:
        """The principal a pending login binds, if any."""
        raw = self.meta_changes.get(PRINCIPAL)
        if raw is None or raw == self.meta_fields.get(PRINCIPAL):
            return None
        return str(loads(raw))

    def bind_user(self, digest: bytes) -> None:
        """Record the pending login's user digest (part of the login: no flush of its own)."""
        self.meta_changes[USER] = digest

    def cancel_login(self) -> None:
        """Drop a pending login (refused): the session stays as it was before it."""
        for name in (PRINCIPAL, AUTH_TIME, USER):
            self.meta_changes.pop(name, None)
        self.rotating = False

    def end(self, values: dict[str, JSON]) -> None:
        """End the stored session at commit; `values` (the session's) are emptied."""
        doomed, user = self.doomed, self.doomed_user
        if doomed is None:
            doomed, user = self.ref or self.superseded, self.meta_fields.get(USER)
        self.forget(self.ref, self.meta)
        dict.clear(values)
        self.ref = None
        self.doomed, self.doomed_user = doomed, user
        self.superseded = None
        self.changed()

    # -- what a commit sends, and what it stored -------------------------------------

    def seal(self, name: str, plaintext: bytes) -> bytes:
        return self.codec.seal(plaintext, name, self.binding())

    def delta(self, values: dict[str, JSON]) -> Delta | None:
        """The changes since load or the last commit; None when there are none."""
        sets: dict[bytes, bytes] = {}
        for name in self.assigned | self.read:
            if name not in values:
                continue
            plaintext = self.codec.to_json(values[name], name)
            if self.cleared or self.stored.get(name) != plaintext:
                sets[field_name(name)] = self.seal(name, plaintext)
        deletes = tuple(field_name(name) for name in self.removed if name in self.stored)
        for meta_name, value in self.meta_changes.items():
            if value is None:
                deletes += (meta_name,)
            elif self.meta_fields.get(meta_name) != value:
                sets[meta_name] = value
        if not (
            sets
            or deletes
            or self.cleared
            or self.idle_change is not None
            or self.deadline_change is not None
        ):
            return None
        return Delta(sets, deletes, self.cleared, self.idle_change, self.deadline_change)

    def fields(self, values: dict[str, JSON]) -> dict[bytes, bytes]:
        """Every field, for a session stored for the first time."""
        fields = dict(self.meta_fields)
        for meta_name, value in self.meta_changes.items():
            if value is None:
                fields.pop(meta_name, None)
            else:
                fields[meta_name] = value
        for name in values:
            fields[field_name(name)] = self.seal(name, self.codec.to_json(values[name], name))
        return fields

    def committed(
        self, ref: SessionRef, meta: Meta, delta: Delta | None, values: dict[str, JSON]
    ) -> None:
        """Record that the store now holds the session under `ref` as `meta`.

        `delta` is what was sent; None when every field was (a new record).
        """
        stored: dict[str, bytes | None]
        if delta is None or delta.clear:
            stored = {name: self.codec.to_json(values[name], name) for name in values}
        else:
            stored = self.stored
            for name in self.removed:
                stored.pop(name, None)
            for name in self.assigned | self.read:
                if name in values:
                    stored[name] = self.codec.to_json(values[name], name)
        fields = self.meta_fields
        for meta_name, value in self.meta_changes.items():
            if value is None:
                fields.pop(meta_name, None)
            else:
                fields[meta_name] = value
        self.forget(ref, meta)
        self.stored, self.meta_fields = stored, fields

    def lost(self, meta: Meta, values: dict[str, JSON]) -> None:
        """The stored session vanished (ended elsewhere): continue as a new, empty one."""
        self.forget(None, meta)
        dict.clear(values)

    def forget(self, ref: SessionRef | None, meta: Meta) -> None:
        """Reset to an unchanged session `ref` with nothing stored."""
        self.ref = ref
        self.meta = meta
        self.stored = {}
        self.meta_fields = {}
        self.meta_changes = {}
        self.assigned = set()
        self.removed = set()
        self.read = set()
        self.cleared = False
        self.rotating = False
        self.doomed = None
        self.doomed_user = None
        self.idle_change = None
        self.deadline_change = None
        self.base = None


class Session(dict[str, JSON]):
    """One user's session: a `dict` of JSON values. Create it through a
    `SessionManager`, not directly.

    Reading any of its state -- a key, or who is logged in -- marks it
    `accessed`: the response then depends on the session (`Vary`).
    """

    # One is built for every request, anonymous ones included: slots make that cheaper.
    __slots__ = ("__weakref__", "_state", "accessed")

    def __init__(self, data: Any = (), /, **values: JSON) -> None:
        """A session holding `data` as if the store held it (unchanged, never stored):
        for tests, as ``Session({"a": 1})``. Sessions of requests come from a manager."""
        super().__init__()
        now = int(time.time() * 1000)
        self._state = SessionState(JsonCodec(), Meta(now, now, 0, now, 0))
        self.accessed = False
        for name, value in dict(data, **values).items():
            json = self._state.codec.to_json(value, name)
            dict.__setitem__(self, name, value)
            self._state.stored[name] = json

    @classmethod
    def blank(cls, codec: Codec, meta: Meta, ref: SessionRef | None = None) -> Session:
        """An empty session of the lifecycle's: nothing stored yet under `ref`."""
        session = cls.__new__(cls)
        dict.__init__(session)
        session._state = SessionState(codec, meta, ref)
        session.accessed = False
        return session

    # -- construction from a stored record --------------------------------

    @classmethod
    def from_record(cls, codec: Codec, ref: SessionRef, record: Record) -> Session:
        """The session a record describes; RecordError/CodecError if it cannot be read."""
        session = cls.blank(codec, record.meta, ref)
        state = session._state
        state.base = record
        state.refreshed = record.refreshed
        stored, meta = state.stored, state.meta_fields
        binding = record.fields.get(BINDING, b"").decode("ascii", "replace")
        plain = codec.stores_plaintext
        put = dict.__setitem__
        for name, raw in record.fields.items():
            if name[:1] == b"!":
                meta[name] = raw
                continue
            attribute = attribute_name(name)
            if plain:
                put(session, attribute, codec.from_json(raw, attribute))
                stored[attribute] = raw
                continue
            plaintext = codec.open(raw, attribute, binding)
            put(session, attribute, codec.from_json(plaintext, attribute))
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

    # -- reading ------------------------------------------------------------------

    def __getitem__(self, name: str) -> JSON:
        self.accessed = True
        value = dict.__getitem__(self, name)
        if isinstance(value, _MUTABLE):
            self._state.read.add(name)
        return value

    @overload
    def get(self, name: str, default: None = None, /) -> JSON: ...

    @overload
    def get(self, name: str, default: JSON, /) -> JSON: ...

    @overload
    def get(self, name: str, default: T, /) -> JSON | T: ...

    def get(self, name: str, default: object = None, /) -> object:
        # No KeyError for a missing name: the anonymous request's "am I logged in?"
        # would pay for it.
        self.accessed = True
        value = dict.get(self, name, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, _MUTABLE):
            self._state.read.add(name)
        return value

    def __contains__(self, name: object) -> bool:
        self.accessed = True
        return dict.__contains__(self, name)

    def __iter__(self) -> Iterator[str]:
        self.accessed = True
        return dict.__iter__(self)

    def __len__(self) -> int:
        self.accessed = True
        return dict.__len__(self)

    def keys(self) -> Any:
        self.accessed = True
        return dict.keys(self)

    def values(self) -> Any:
        self._handing_out_all()
        return dict.values(self)

    def items(self) -> Any:
        self._handing_out_all()
        return dict.items(self)

    def copy(self) -> dict[str, JSON]:
        """A plain dict of the values (they are not copied: changing one changes the session's)."""
        self._handing_out_all()
        return dict(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self.accessed = True
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self.accessed = True
        return dict.__ne__(self, other)

    def __or__(self, other: Any) -> Any:
        self._handing_out_all()
        return dict.__or__(self, other)

    def __ror__(self, other: Any) -> Any:
        self._handing_out_all()
        return dict.__ror__(self, other)

    def __repr__(self) -> str:
        # The values, as a dict shows them (the id is not one of them); not a look.
        return f"<Session {dict.__repr__(self)}>"

    def _handing_out_all(self) -> None:
        self.accessed = True
        read = self._state.read
        for name, value in dict.items(self):
            if isinstance(value, _MUTABLE):
                read.add(name)

    # -- changing -----------------------------------------------------------------

    def __setitem__(self, name: str, value: JSON) -> None:
        if not isinstance(name, str):
            raise TypeError("session attribute names are strings")
        self._state.codec.to_json(value, name)  # refuse what cannot be stored, now
        self.accessed = True
        dict.__setitem__(self, name, value)
        state = self._state
        state.assigned.add(name)
        state.removed.discard(name)
        state.changed()

    def __delitem__(self, name: str) -> None:
        self.accessed = True
        dict.__delitem__(self, name)
        self._removed(name)

    def pop(self, name: str, default: Any = _MISSING, /) -> Any:
        if not dict.__contains__(self, name):
            # Not a look at what the session holds (as Starlette counts it).
            if default is _MISSING:
                raise KeyError(name)
            return default
        self.accessed = True
        value = dict.pop(self, name)
        self._removed(name)
        return value

    def popitem(self) -> tuple[str, JSON]:
        """The last item set, removed (as a dict does)."""
        self.accessed = True
        name, value = dict.popitem(self)
        self._removed(name)
        return name, value

    def setdefault(self, name: str, default: JSON = None, /) -> JSON:  # type: ignore[override]
        if dict.__contains__(self, name):
            return self[name]
        self[name] = default
        return default

    def update(self, other: Any = (), /, **more: JSON) -> None:
        pairs: Iterable[tuple[str, JSON]]
        if isinstance(other, Mapping):
            pairs = [(name, other[name]) for name in other]
        elif hasattr(other, "keys"):  # a mapping in all but name, as dict.update takes it
            pairs = [(name, other[name]) for name in other.keys()]  # noqa: SIM118
        else:
            pairs = other
        for name, value in pairs:
            self[name] = value
        for name, value in more.items():
            self[name] = value

    def __ior__(self, other: Any) -> Session:  # type: ignore[override]
        self.update(other)
        return self

    def clear(self) -> None:
        """Empty the session: it ends (deleted from the store at commit, the client
        told to drop its id), as a cookie session ends when emptied. Values set
        afterwards start a new session, with a new id."""
        self.invalidate()

    def _removed(self, name: str) -> None:
        state = self._state
        state.assigned.discard(name)
        state.read.discard(name)
        state.removed.add(name)
        state.changed()

    # -- metadata -------------------------------------------------------------
    #
    # Reading any of these counts as a look at the session, as reading a key
    # does: a response that shows who is logged in depends on the cookie
    # (`Vary`). sessionhub's own code reads `_state` instead.

    @property
    def id(self) -> str | None:
        """The id the client holds; None until the session is first stored."""
        self.accessed = True
        return self._state.id

    @property
    def handle(self) -> str | None:
        """The store's name for this session: safe to log and to show operators."""
        self.accessed = True
        return self._state.handle

    @property
    def is_new(self) -> bool:
        self.accessed = True
        return self._state.ref is None

    @property
    def created_at(self) -> float:
        self.accessed = True
        return self._state.meta.created / 1000

    @property
    def accessed_at(self) -> float:
        self.accessed = True
        return self._state.meta.accessed / 1000

    @property
    def idle_timeout(self) -> float:
        self.accessed = True
        return self._state.idle() / 1000

    @property
    def deadline(self) -> float:
        """The absolute deadline (seconds since the epoch)."""
        self.accessed = True
        return self._state.deadline() / 1000

    @property
    def expires_at(self) -> float:
        """When the session ends if not used again (seconds since the epoch)."""
        self.accessed = True
        return self._state.expires_at()

    @property
    def version(self) -> int:
        self.accessed = True
        return self._state.meta.version

    @property
    def principal(self) -> str | None:
        self.accessed = True
        return self._state.principal()

    @property
    def authenticated_at(self) -> float | None:
        self.accessed = True
        return self._state.authenticated_at()

    @property
    def client_info(self) -> dict[str, Any]:
        """What the application chose to record about the client (user agent, IP...)."""
        self.accessed = True
        return self._state.client_info()

    @client_info.setter
    def client_info(self, info: dict[str, Any]) -> None:
        self.accessed = True
        self._state.set_meta(CLIENT_INFO, dumps(info))

    @property
    def binding(self) -> str:
        """A random token fixed for the session's life, which codecs may bind values to."""
        self.accessed = True
        return self._state.binding()

    @property
    def persistent(self) -> bool:
        """Whether the client should keep the id beyond the browser session ("remember me")."""
        self.accessed = True
        return self._state.persistent()

    @property
    def modified(self) -> bool:
        """Whether a commit would write anything (in-place mutation aside)."""
        return self._state.modified

    # -- lifecycle requests, carried out at commit ------------------------------

    def rotate(self) -> None:
        """Give the session a new id at commit; the old id stops working."""
        self.accessed = True
        self._state.rotating = True
        self._state.changed()

    def login(self, principal: str, *, now: float) -> None:
        """Bind the session to `principal` and rotate its id (fixation protection).

        An anonymous session, or one of the same principal, keeps its data (a
        cart survives signing in). A session of another principal is ended
        and `principal` starts with an empty one: one user never sees what
        another left in the session (Django's `login()` does the same).
        """
        if not isinstance(principal, str) or not principal:
            raise ValueError("principal must be a non-empty string")
        state = self._state
        stored = state.meta_fields.get(PRINCIPAL)
        if stored is not None and loads(stored) != principal:
            self.invalidate()
        self.accessed = True
        state.set_meta(PRINCIPAL, dumps(principal))
        state.set_meta(AUTH_TIME, b"%d" % int(now * 1000))
        self.rotate()

    def invalidate(self) -> None:
        """End the session: deleted from the store at commit, empty from now on.

        Writing to the session afterwards starts a new one, with a new id.
        """
        self.accessed = True
        self._state.end(self)

    def remember(self, idle: float, absolute: float | None = None) -> None:
        """Keep this session longer than the default ("remember me").

        `idle` replaces the idle timeout for this session; the absolute limit
        becomes `absolute` seconds after creation (by default `idle`), unless
        the session's own is later already. The client is told to keep the id
        across browser restarts.
        """
        if idle <= 0 or (absolute is not None and absolute <= 0):
            raise ValueError("timeouts must be positive")
        self.accessed = True
        state = self._state
        state.idle_change = int(idle * 1000)
        span = int((idle if absolute is None else absolute) * 1000)
        deadline = state.meta.created + span
        if absolute is not None or deadline > state.deadline():
            state.deadline_change = deadline
        state.set_meta(_REMEMBER, b"1")

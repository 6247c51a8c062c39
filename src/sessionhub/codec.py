"""How one attribute value becomes bytes in the store, and back.

Two layers. First JSON (orjson), always: a store that can be written by
someone else must never be able to make the application run code, so there is
no pickle anywhere. Values are JSON types -- dict (str keys), list, str, int,
float, bool, None; anything else is refused when it is assigned, not when the
response is half sent.

Then the codec's `seal`, which turns the JSON bytes into what is stored (and
`open`, back). `JsonCodec` stores the JSON as it is; an encrypting codec
(`sessionhub.crypto.EncryptedCodec`) seals it with a key. A session decides
"changed?" by comparing JSON, so sealing runs only for values that changed,
and a codec need not give the same bytes twice for the same value.

A codec sees the attribute's name and the session's *binding* (a stable token
of the session) so that it can bind each value to where it belongs. Stored
values never contain a newline: the record format relies on it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import orjson

__all__ = ["JSON", "Codec", "CodecError", "JsonCodec", "from_json", "to_json"]

JSON: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None

# Refuse datetimes and dataclasses instead of silently turning them into
# strings or dicts that would come back as something else.
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class CodecError(ValueError):
    """Stored bytes that cannot be turned back into a value."""


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON type")


def to_json(value: JSON, name: str) -> bytes:
    """The JSON of attribute `name`'s value; TypeError naming it if it is not JSON."""
    try:
        return dumps(value)
    except TypeError as exc:
        raise TypeError(f"session attribute {name!r}: {exc}") from None


def from_json(data: bytes, name: str) -> JSON:
    try:
        value: JSON = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"attribute {name!r} is not valid JSON") from exc
    return value


class Codec:
    """What becomes of an attribute's JSON on its way into the store: here, nothing.

    Subclasses change `seal` and `open` (and `is_current`); `encode` and
    `decode` are the whole way, value to stored bytes and back. `to_json` and
    `from_json` are the first layer: plain JSON here; a framework whose
    sessions hold more types (Flask's tagged JSON) changes them.
    """

    def to_json(self, value: Any, name: str) -> bytes:
        """The JSON of attribute `name`'s value; TypeError naming it if it has none."""
        return to_json(value, name)

    def from_json(self, data: bytes, name: str) -> Any:
        """The value `to_json` gave `data` for; CodecError if it is not such JSON."""
        return from_json(data, name)

    #: Whether sealed values are bound to the session's binding token (the
    #: lifecycle then gives every stored session one).
    binds_values = False

    def seal(self, plaintext: bytes, name: str, binding: str) -> bytes:
        """The stored form of `plaintext`, the JSON of attribute `name`."""
        return plaintext

    def open(self, stored: bytes, name: str, binding: str) -> bytes:
        """The JSON a stored value holds; CodecError if it cannot be opened."""
        return stored

    def is_current(self, stored: bytes) -> bool:
        """Whether `stored` is as `seal` writes it now (False: rewrite it when touched)."""
        return True

    @property
    def stores_plaintext(self) -> bool:
        """Whether stored values are the JSON itself (`open` and `is_current` do nothing)."""
        cls = type(self)
        return cls.open is Codec.open and cls.is_current is Codec.is_current

    def encode(self, value: Any, name: str, binding: str) -> bytes:
        return self.seal(self.to_json(value, name), name, binding)

    def decode(self, stored: bytes, name: str, binding: str) -> Any:
        return self.from_json(self.open(stored, name, binding), name)


class JsonCodec(Codec):
    """Plain JSON, readable in `redis-cli MONITOR`."""


def dumps(value: Any) -> bytes:
    """JSON for metadata (principal, client info) -- never sealed."""
    return orjson.dumps(value, default=_refuse, option=_STRICT)


def loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError("metadata is not valid JSON") from exc

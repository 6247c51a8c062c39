"""How one attribute value becomes bytes in the store, and back.

JSON only (orjson): a store that can be written by someone else must never be
able to make the application run code, so there is no pickle anywhere. Values
are JSON types -- dict (str keys), list, str, int, float, bool, None; anything
else is refused when it is assigned, not when the response is half sent.

A codec sees the attribute's name and the session's *binding* (a stable token
of the session) so that an encrypting codec can bind each value to where it
belongs. Encoded values never contain a newline: the record format relies on it.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias

import orjson

__all__ = ["JSON", "Codec", "CodecError", "JsonCodec"]

JSON: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None

# Refuse datetimes and dataclasses instead of silently turning them into
# strings or dicts that would come back as something else.
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class CodecError(ValueError):
    """Stored bytes that cannot be turned back into a value."""


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON type")


class Codec(Protocol):
    """Turns attribute values into store bytes and back."""

    def encode(self, value: JSON, name: str, binding: str) -> bytes: ...

    def decode(self, data: bytes, name: str, binding: str) -> JSON: ...


class JsonCodec:
    """Plain JSON, readable in `redis-cli MONITOR`."""

    def encode(self, value: JSON, name: str, binding: str) -> bytes:
        try:
            return orjson.dumps(value, default=_refuse, option=_STRICT)
        except TypeError as exc:
            raise TypeError(f"session attribute {name!r}: {exc}") from None

    def decode(self, data: bytes, name: str, binding: str) -> JSON:
        try:
            value: JSON = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CodecError(f"attribute {name!r} is not valid JSON") from exc
        return value


def dumps(value: Any) -> bytes:
    """JSON for metadata (principal, client info) -- never encrypted."""
    return orjson.dumps(value, default=_refuse, option=_STRICT)


def loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError("metadata is not valid JSON") from exc

"""Session ids, their shape check, and the handles stored in place of them.

An id is what the client holds: one shard character followed by a secret token
(43 URL-safe characters, 256 bits from `secrets`). The store never sees the id;
it sees the *handle*, the shard character plus a 128-bit BLAKE2b digest of the
id. A keyspace dump is therefore a list of handles, none of which works as a
cookie.

The shard character puts every key of one session (and, after login, of one
user) into one Redis Cluster hash slot, so the scripts that touch them stay
single-slot. It carries no secret.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SHARD_ALPHABET", "IdScheme", "SessionRef", "hide_ids", "is_handle", "looks_like_id"]

#: One shard per character: 64 shards spread over the Cluster hash slots.
SHARD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SHARD_INDEX = {char: index for index, char in enumerate(SHARD_ALPHABET)}

_DEFAULT_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_HANDLE = re.compile(r"[A-Za-z0-9_-]{23}")
# A run of the characters ids are made of, at least as long as a default id (a shard
# character and 43): it may be an id, or hold one.
_ID_LIKE = re.compile(r"[A-Za-z0-9_-]{44,}")
#: Longest raw id we even look at; anything longer is rejected before parsing.
MAX_ID_LENGTH = 256


def _default_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(data: bytes, key: bytes) -> str:
    raw = hashlib.blake2b(data, digest_size=16, key=key).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A well-formed session id and what the store knows it by."""

    id: str
    shard: str
    handle: str


class IdScheme:
    """Generates ids, checks their shape and derives handles.

    `token_factory` replaces the secret part's generator; `token_pattern` must
    then match exactly what it produces (it is the shape check applied to every
    id a client presents, before any store call). `digest_key` makes handles a
    keyed hash, so they cannot even be linked to ids by someone who has one.
    """

    def __init__(
        self,
        *,
        token_factory: Callable[[], str] | None = None,
        token_pattern: str | None = None,
        digest_key: bytes = b"",
    ) -> None:
        if (token_factory is None) != (token_pattern is None):
            raise ValueError("token_factory and token_pattern go together")
        self._token_factory = token_factory or _default_token
        self._token_shape = re.compile(token_pattern) if token_pattern else _DEFAULT_TOKEN
        if len(digest_key) > 64:
            raise ValueError("digest_key is at most 64 bytes")
        self._digest_key = digest_key
        sample = self._token_factory()
        if not self._token_shape.fullmatch(sample):
            raise ValueError("token_factory produced a token that token_pattern rejects")
        if len(sample) < 22:
            raise ValueError("tokens must carry at least 128 bits (22 URL-safe characters)")

    def new(self, shard: str | None = None) -> SessionRef:
        """A fresh id, in `shard` (random when not given)."""
        if shard is None:
            # 64 divides 256: the low six bits of a random byte pick a shard evenly.
            shard = SHARD_ALPHABET[os.urandom(1)[0] & 63]
        session_id = shard + self._token_factory()
        return SessionRef(session_id, shard, shard + _digest(session_id.encode(), self._digest_key))

    def well_formed(self, raw: str) -> bool:
        """Whether `raw` has exactly the shape this scheme issues (no digest is made)."""
        return (
            0 < len(raw) <= MAX_ID_LENGTH
            and raw[0] in _SHARD_INDEX
            and self._token_shape.fullmatch(raw, 1) is not None
        )

    def parse(self, raw: str | None) -> SessionRef | None:
        """The id if `raw` is `well_formed`, else None."""
        if not raw or not self.well_formed(raw):
            return None
        shard = raw[0]
        return SessionRef(raw, shard, shard + _digest(raw.encode(), self._digest_key))

    def shard_of(self, principal: str) -> str:
        """The shard every session of `principal` lives in once logged in."""
        raw = hashlib.blake2b(principal.encode(), digest_size=8, key=self._digest_key).digest()
        return SHARD_ALPHABET[raw[0] % len(SHARD_ALPHABET)]

    def principal_digest(self, principal: str) -> str:
        """A stable, non-reversible name for a principal's keys."""
        return _digest(b"principal:" + principal.encode(), self._digest_key)


def is_handle(value: str) -> bool:
    """Whether `value` has the shape of a handle (admin input is checked with it)."""
    return bool(_HANDLE.fullmatch(value)) and value[0] in _SHARD_INDEX


def looks_like_id(text: str) -> bool:
    """Whether `text` holds something shaped like a session id (operator input is
    checked with it: a cookie's value pasted by mistake is refused, not repeated)."""
    return _ID_LIKE.search(text) is not None


def hide_ids(text: str) -> str:
    """`text` with whatever `looks_like_id` finds in it replaced, for messages that
    repeat what someone typed: no message ever shows a session id."""
    return _ID_LIKE.sub("<hidden: shaped like a session id>", text)

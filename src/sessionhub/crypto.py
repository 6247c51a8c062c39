"""Encryption at rest: attribute values sealed with AES-256-GCM.

`EncryptedCodec` wraps the JSON codec. Each value is encrypted with a fresh
random 96-bit nonce under the *current* key; any listed key decrypts, so keys
can be rotated without ending sessions. A stored value looks like::

    ~k2.<base64url of nonce + ciphertext + tag>

"~" marks ciphertext (no JSON text starts with it), "k2" is the key id. The
authenticated data is the session's binding (a random token in the record's
"!b" field) and the attribute name, so a value copied into another session or
another attribute fails to decrypt. Every failure -- unknown key id, tampered
bytes, a moved value, plaintext where ciphertext was expected -- is a
`CodecError`, which the lifecycle turns into a new session.

Metadata fields (principal, auth time, client info, binding) are not values
and stay readable: operators and admin tools list sessions by them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from collections.abc import Mapping

from .codec import JSON, Codec, CodecError, JsonCodec

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "sessionhub.crypto needs the 'cryptography' package: pip install 'sessionhub[crypto]'"
    ) from exc

__all__ = ["EncryptedCodec", "new_key"]

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the 96-bit nonce GCM is designed for
TAG_BYTES = 16
MARKER = b"~"
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")
# What the memo below may hold before it starts over (bytes of ciphertext).
_MEMO_LIMIT = 8 * 1024 * 1024


def new_key() -> str:
    """A fresh random key, as the base64 string `EncryptedCodec` accepts."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64decode(text: bytes) -> bytes:
    """Strict base64 or base64url, padding optional; binascii.Error otherwise."""
    text = text.translate(_FROM_URLSAFE).rstrip(b"=")
    return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)


def _key_bytes(key_id: str, key: bytes | str) -> bytes:
    if isinstance(key, str):
        try:
            raw = _b64decode(key.strip().encode("ascii"))
        except (UnicodeEncodeError, binascii.Error):
            raise ValueError(f"key {key_id!r} is not valid base64") from None
        if len(raw) != KEY_BYTES:
            raise ValueError(
                f"key {key_id!r} decodes to {len(raw)} bytes; AES-256 needs {KEY_BYTES} "
                "(make one with sessionhub.crypto.new_key())"
            )
        return raw
    if isinstance(key, bytes):
        if len(key) != KEY_BYTES:
            raise ValueError(
                f"key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES} raw bytes "
                "(or pass the key as a base64 string)"
            )
        return key
    raise TypeError(f"key {key_id!r} must be bytes or a base64 str, not {type(key).__name__}")


def _associated_data(name: str, binding: str) -> bytes:
    # Length-prefixed, so no (binding, name) pair can pass for another.
    bound = binding.encode("utf-8", "surrogatepass")
    return b"%d:%s%s" % (len(bound), bound, name.encode("utf-8", "surrogatepass"))


class EncryptedCodec:
    """Encrypts attribute values with AES-256-GCM; see the module docstring.

    `keys` maps key ids (1-16 letters, digits, "_" or "-") to 32-byte keys,
    raw bytes or base64 strings. The first key encrypts; all of them decrypt.
    `accept_plaintext` reads values stored before encryption was turned on (a
    migration window: such values are not authenticated; they are encrypted
    when next written). `inner` turns values into plaintext bytes (JSON).
    """

    #: Asks the lifecycle to give every new session a binding token.
    binds_values = True

    def __init__(
        self,
        keys: Mapping[str, bytes | str],
        *,
        accept_plaintext: bool = False,
        inner: Codec | None = None,
    ) -> None:
        if not isinstance(keys, Mapping) or not keys:
            raise ValueError("keys must be a non-empty mapping of key id to key")
        self._ciphers: dict[bytes, AESGCM] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"key id {key_id!r} must be 1-16 letters, digits, '_' or '-'")
            self._ciphers[key_id.encode("ascii")] = AESGCM(_key_bytes(key_id, key))
        self.current_key_id = next(iter(keys))
        self._prefix = MARKER + self.current_key_id.encode("ascii") + b"."
        self._current = self._ciphers[self.current_key_id.encode("ascii")]
        self.accept_plaintext = accept_plaintext
        self.inner: Codec = inner or JsonCodec()
        self._memo: dict[tuple[str, str, bytes], bytes] = {}
        self._memo_size = 0
        self._memo_lock = threading.Lock()

    def __repr__(self) -> str:
        # Never the keys.
        return f"<EncryptedCodec current={self.current_key_id!r} keys={len(self._ciphers)}>"

    def encode(self, value: JSON, name: str, binding: str) -> bytes:
        plaintext = self.inner.encode(value, name, binding)  # refuses non-JSON values
        # A fresh nonce makes every encryption differ, but the session saves a
        # value only when its encoding changes. So an unchanged value gets back
        # the ciphertext it was read as (or last encrypted to), and reading a
        # session does not turn into a write.
        memo_key = (binding, name, hashlib.blake2b(plaintext, digest_size=16).digest())
        sealed = self._memo.get(memo_key)
        if sealed is None:
            nonce = os.urandom(NONCE_BYTES)
            box = self._current.encrypt(nonce, plaintext, _associated_data(name, binding))
            sealed = self._prefix + base64.urlsafe_b64encode(nonce + box).rstrip(b"=")
            self._remember(memo_key, sealed)
        return sealed

    def decode(self, data: bytes, name: str, binding: str) -> JSON:
        if not data.startswith(MARKER):
            if self.accept_plaintext:
                return self.inner.decode(data, name, binding)
            raise CodecError(f"attribute {name!r} is not encrypted")
        key_id, dot, body = data[1:].partition(b".")
        cipher = self._ciphers.get(key_id)
        if not dot or cipher is None:
            raise CodecError(f"attribute {name!r} is sealed with an unknown key id")
        if not _BASE64URL.fullmatch(body) or len(body) % 4 == 1:
            raise CodecError(f"attribute {name!r}: ciphertext is not base64url")
        raw = base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise CodecError(f"attribute {name!r}: ciphertext is truncated")
        try:
            plaintext = cipher.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated_data(name, binding)
            )
        except InvalidTag:
            raise CodecError(
                f"attribute {name!r} fails authentication "
                "(tampered, or moved from another session or attribute)"
            ) from None
        value = self.inner.decode(plaintext, name, binding)
        if cipher is self._current:
            # Values under an older key are not remembered: re-encoding them
            # (when the application changes them) moves them to the current key.
            memo_key = (binding, name, hashlib.blake2b(plaintext, digest_size=16).digest())
            self._remember(memo_key, data)
        return value

    def _remember(self, memo_key: tuple[str, str, bytes], sealed: bytes) -> None:
        # Bounded by bytes held; starting over only costs writes of unchanged
        # values, never a wrong answer (every entry is a valid encryption of
        # exactly that plaintext for exactly that session and attribute).
        if len(sealed) > _MEMO_LIMIT:
            return
        with self._memo_lock:
            if self._memo_size + len(sealed) > _MEMO_LIMIT:
                self._memo.clear()
                self._memo_size = 0
            replaced = self._memo.get(memo_key, b"")
            self._memo[memo_key] = sealed
            self._memo_size += len(sealed) - len(replaced)

"""Encryption at rest: attribute values sealed with AES-256-GCM.

`EncryptedCodec` seals the JSON of each value. Each value is encrypted with a
fresh random 96-bit nonce under the *current* key; any listed key decrypts, so keys
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

Sealing runs only for values that changed (the session compares their JSON),
so the random nonce never turns a read into a write.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping

from .codec import Codec, CodecError

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


class EncryptedCodec(Codec):
    """Encrypts attribute values with AES-256-GCM; see the module docstring.

    `keys` maps key ids (1-16 letters, digits, "_" or "-") to 32-byte keys,
    raw bytes or base64 strings. The first key encrypts; all of them decrypt.
    `accept_plaintext` reads values stored before encryption was turned on (a
    migration window: such values are not authenticated; they are encrypted
    when next written).
    """

    #: Asks the lifecycle to give every new session a binding token.
    binds_values = True

    def __init__(
        self,
        keys: Mapping[str, bytes | str],
        *,
        accept_plaintext: bool = False,
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

    def __repr__(self) -> str:
        # Never the keys.
        return f"<EncryptedCodec current={self.current_key_id!r} keys={len(self._ciphers)}>"

    def seal(self, plaintext: bytes, name: str, binding: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        box = self._current.encrypt(nonce, plaintext, _associated_data(name, binding))
        return self._prefix + base64.urlsafe_b64encode(nonce + box).rstrip(b"=")

    def open(self, stored: bytes, name: str, binding: str) -> bytes:
        if not stored.startswith(MARKER):
            if self.accept_plaintext:
                return stored
            raise CodecError(f"attribute {name!r} is not encrypted")
        key_id, dot, body = stored[1:].partition(b".")
        cipher = self._ciphers.get(key_id)
        if not dot or cipher is None:
            raise CodecError(f"attribute {name!r} is sealed with an unknown key id")
        if not _BASE64URL.fullmatch(body) or len(body) % 4 == 1:
            raise CodecError(f"attribute {name!r}: ciphertext is not base64url")
        raw = base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise CodecError(f"attribute {name!r}: ciphertext is truncated")
        try:
            return cipher.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated_data(name, binding)
            )
        except InvalidTag:
            raise CodecError(
                f"attribute {name!r} fails authentication "
                "(tampered, or moved from another session or attribute)"
            ) from None

    def is_current(self, stored: bytes) -> bool:
        # Plaintext (a migration window) and values under an older key are
        # sealed again under the current key when the application touches them.
        return stored.startswith(self._prefix)

"""Encryption at rest: EncryptedCodec on memory and Redis stores, sync and asyncio."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterator

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from sessionhub import (
    JSON,
    CodecError,
    JsonCodec,
    Lifecycle,
    RedisStore,
    Session,
    SessionEnded,
    SessionManager,
)
from sessionhub.crypto import EncryptedCodec, new_key
from sessionhub.record import BINDING, Record, format_record, parse_record
from sessionhub.stores.redis.store import RedisCommands
from tests.harness import FakeClock, Harness
from tests.servers import RedisServer
from tests.test_contract import KINDS
from tests.test_redis_store import PAYLOAD

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
SEALED = re.compile(rb"~[A-Za-z0-9_-]{1,16}\.[A-Za-z0-9_-]+")


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Harness]:
    redis_server.client().flushall()
    codec = EncryptedCodec({"k1": KEY_1})
    harness = Harness(request.param, redis_server.port, clock=FakeClock(), codec=codec)
    yield harness
    harness.close()


def use_codec(h: Harness, codec: EncryptedCodec | JsonCodec) -> None:
    """The same store, read from now on by a lifecycle with `codec` (a redeploy)."""
    h.manager.lifecycle = Lifecycle(codec=codec, clock=h.options["clock"])


def stored(h: Harness, handle: str | None) -> Record:
    """The record as the store holds it, read behind the manager's back."""
    assert handle is not None
    if not h.is_redis:
        return h.memory._records[handle]
    blob = redis.Redis(port=h.redis_port).get(RedisCommands().key(handle))
    assert isinstance(blob, bytes)
    return parse_record(blob)


def overwrite(h: Harness, handle: str | None, record: Record) -> None:
    """Replace the stored record, as someone with write access to the store could."""
    assert handle is not None
    if not h.is_redis:
        h.memory._records[handle] = record
        return
    key = RedisCommands().key(handle)
    redis.Redis(port=h.redis_port).set(key, format_record(record), keepttl=True)


def attribute(name: str) -> bytes:
    return f'"{name}"'.encode()


def assert_rejected_and_logged(
    h: Harness, caplog: pytest.LogCaptureFixture, session_id: str, handle: str | None
) -> None:
    """Loading `session_id` gives a new session, logged with the handle, never the id."""
    with caplog.at_level(logging.WARNING, logger="sessionhub"):
        loaded = h.load(session_id)
    assert loaded.is_new
    assert dict(loaded) == {}
    [warning] = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert warning.session_handle == handle  # type: ignore[attr-defined]
    for record in caplog.records:
        assert session_id not in record.getMessage()
        assert session_id not in repr(vars(record))


# -- the codec on its own ----------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(value=json_values, name=st.text(), binding=st.text())
def test_any_json_value_round_trips_as_one_line_of_base64url(
    value: JSON, name: str, binding: str
) -> None:
    codec = EncryptedCodec({"k1": KEY_1})
    sealed = codec.encode(value, name, binding)
    assert SEALED.fullmatch(sealed)  # no newline or tab can reach the record
    assert EncryptedCodec({"k1": KEY_1}).decode(sealed, name, binding) == value


def changed_character(sealed: bytes) -> bytes:
    """`sealed` with one base64url character in its middle replaced by another."""
    middle = len(sealed) // 2
    other = b"B" if sealed[middle : middle + 1] == b"A" else b"A"
    return sealed[:middle] + other + sealed[middle + 1 :]


def nonce(sealed: bytes) -> bytes:
    return base64.urlsafe_b64decode(sealed[4:] + b"==")[:12]


def test_each_encryption_uses_a_fresh_nonce() -> None:
    first = EncryptedCodec({"k1": KEY_1}).encode({"a": 1}, "cart", "bind")
    second = EncryptedCodec({"k1": KEY_1}).encode({"a": 1}, "cart", "bind")
    assert first != second
    assert nonce(first) != nonce(second)


def test_keys_as_bytes_base64_and_base64url_are_the_same_key() -> None:
    sealed = EncryptedCodec({"k1": KEY_1}).encode("x", "a", "b")
    for text in (
        base64.b64encode(KEY_1).decode(),
        base64.urlsafe_b64encode(KEY_1).decode(),
        base64.urlsafe_b64encode(KEY_1).decode().rstrip("="),
        " " + base64.b64encode(KEY_1).decode() + "\n",  # pasted from a file
    ):
        assert EncryptedCodec({"k1": text}).decode(sealed, "a", "b") == "x"
    assert len(base64.urlsafe_b64decode(new_key())) == 32
    assert new_key() != new_key()


@pytest.mark.parametrize(
    ("keys", "error", "message"),
    [
        ({}, ValueError, "non-empty mapping"),
        ([("k1", KEY_1)], ValueError, "non-empty mapping"),
        ({"k1": KEY_1[:16]}, ValueError, r"'k1' is 16 bytes; AES-256 needs 32"),
        ({"k1": base64.b64encode(KEY_1)}, ValueError, r"is 44 bytes; .* base64 string"),
        ({"k1": base64.b64encode(KEY_1[:24]).decode()}, ValueError, "decodes to 24 bytes"),
        ({"k1": "correct horse battery staple!"}, ValueError, "'k1' is not valid base64"),
        ({"k1": "é" * 44}, ValueError, "not valid base64"),
        ({"k1": 12345}, TypeError, "bytes or a base64 str, not int"),
        ({"": KEY_1}, ValueError, "key id '' must be"),
        ({"k.1": KEY_1}, ValueError, "key id 'k.1' must be"),
        ({"k" * 17: KEY_1}, ValueError, "must be 1-16"),
        ({1: KEY_1}, ValueError, "key id 1 must be"),
        ({"k2": KEY_2, "k1": b"short"}, ValueError, "'k1' is 5 bytes"),
    ],
)
def test_bad_keys_are_refused_with_a_clear_error(
    keys: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        EncryptedCodec(keys)  # type: ignore[arg-type]


def test_a_key_listed_second_decrypts_but_does_not_encrypt() -> None:
    # Step 1 of a rotation: every instance learns k2 before any writes with it.
    sealed_with_k2 = EncryptedCodec({"k2": KEY_2}).encode("x", "a", "b")
    learning = EncryptedCodec({"k1": KEY_1, "k2": KEY_2})
    assert learning.decode(sealed_with_k2, "a", "b") == "x"
    assert learning.encode("y", "a", "b").startswith(b"~k1.")
    assert learning.encode("x", "a", "b").startswith(b"~k1.")  # not the k2 ciphertext read


def test_repr_shows_no_key_material() -> None:
    codec = EncryptedCodec({"k2": KEY_2, "k1": base64.b64encode(KEY_1).decode()})
    assert repr(codec) == "<EncryptedCodec current='k2' keys=2>"
    assert codec.current_key_id == "k2"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda sealed: sealed.replace(b"~k1.", b"~k9."), "unknown key id"),
        (lambda sealed: sealed.replace(b".", b""), "unknown key id"),
        (lambda sealed: sealed[:20], "truncated"),
        (lambda sealed: sealed[:-1] + b"!", "not base64url"),
        (lambda sealed: sealed[:-1] + b"+", "not base64url"),
        (lambda sealed: sealed + b"=", "not base64url"),
        (lambda sealed: sealed + b"A" * ((1 - len(sealed[4:])) % 4), "not base64url"),  # 4n+1
        (changed_character, "fails auth"),
        (lambda sealed: sealed[:-2], "fails auth"),
        (lambda sealed: b'{"sku":1}', "not encrypted"),
    ],
)
def test_damaged_values_are_codec_errors(change: Callable[[bytes], bytes], message: str) -> None:
    codec = EncryptedCodec({"k1": KEY_1})
    sealed = codec.encode({"sku": 1}, "cart", "bind")
    with pytest.raises(CodecError, match=message):
        EncryptedCodec({"k1": KEY_1}).decode(change(sealed), "cart", "bind")


def test_values_are_bound_to_their_attribute_and_session() -> None:
    codec = EncryptedCodec({"k1": KEY_1})
    sealed = codec.encode(1, "a", "session-1")
    assert codec.decode(sealed, "a", "session-1") == 1
    for name, binding in [("b", "session-1"), ("a", "session-2"), ("a", ""), ("", "session-1")]:
        with pytest.raises(CodecError, match="moved from another session or attribute"):
            codec.decode(sealed, name, binding)
    # The length prefix keeps (binding, name) pairs apart even when they concatenate alike.
    joined = codec.encode(1, "bc", "a")
    with pytest.raises(CodecError):
        codec.decode(joined, "c", "ab")


def test_non_json_values_are_refused_before_encryption() -> None:
    codec = EncryptedCodec({"k1": KEY_1})
    with pytest.raises(TypeError, match=r"attribute 'tags'.*not JSON serializable"):
        codec.encode({1, 2}, "tags", "bind")


def test_the_codec_keeps_nothing_per_value() -> None:
    # Change detection compares JSON in the session: the codec needs no memory.
    codec = EncryptedCodec({"k1": KEY_1})
    before = dict(vars(codec))
    for index in range(100):
        sealed = codec.encode({"n": index}, "cart", f"session-{index}")
        assert codec.decode(sealed, "cart", f"session-{index}") == {"n": index}
    assert vars(codec) == before


# -- through the lifecycle, on every store ----------------------------------------


def test_round_trip(h: Harness) -> None:
    values: dict[str, JSON] = {
        "user_id": 12345,
        "cart": {"sku-1": 2, "notes": "line one\nline two\ttabbed"},
        "flags": [True, False, None],
        "price": 9.5,
        "name": "Zoë",
        "": "empty name",
        "with\nnewline": 1,
    }
    session_id = h.store(**values)
    assert dict(h.load(session_id)) == values


def test_stored_bytes_contain_no_plaintext(h: Harness) -> None:
    session = h.load(None)
    session["card"] = "4111-1111-1111-1111"
    session["user_id"] = 987654321
    session["cart"] = {"secret-sku": 31337}
    h.commit(session)
    record = stored(h, session.handle)
    blob = format_record(record)
    for plaintext in (b"4111", b"987654321", b"secret-sku", b"31337"):
        assert plaintext not in blob
    for name in ("card", "user_id", "cart"):
        assert SEALED.fullmatch(record.fields[attribute(name)])
        assert record.fields[attribute(name)].startswith(b"~k1.")
    assert BINDING in record.fields
    # Field names stay readable: they say what is stored, not what it holds.
    assert attribute("card") in record.fields


def test_non_json_values_are_still_refused_when_assigned(h: Harness) -> None:
    session = h.load(None)
    with pytest.raises(TypeError, match=r"'tags'.*not JSON serializable"):
        session["tags"] = {1, 2}  # type: ignore[assignment]
    assert "tags" not in session


def test_reading_a_session_writes_nothing(h: Harness) -> None:
    session_id = h.store(**PAYLOAD)
    session = h.load(session_id)
    assert session["cart"] == PAYLOAD["cart"]  # a mutable value handed out
    session["user_id"] = 12345  # re-assigned, unchanged
    before = h.round_trips()
    outcome = h.commit(session)
    assert h.round_trips() == before
    assert not outcome.send
    assert h.load(session_id).version == 1


class SealCountingCodec(EncryptedCodec):
    """The real codec, noting which attributes it seals."""

    def __init__(self) -> None:
        super().__init__({"k1": KEY_1})
        self.sealed: list[str] = []

    def seal(self, plaintext: bytes, name: str, binding: str) -> bytes:
        self.sealed.append(name)
        return super().seal(plaintext, name, binding)


def test_only_changed_values_are_sealed(h: Harness) -> None:
    session_id = h.store(**PAYLOAD, theme="dark")
    codec = SealCountingCodec()
    use_codec(h, codec)
    session = h.load(session_id)
    assert session["cart"] == PAYLOAD["cart"]  # handed out: re-checked at commit
    session["user_id"] = PAYLOAD["user_id"]  # re-assigned, unchanged
    session["theme"] = "light"
    before = stored(h, session.handle).fields
    h.commit(session)
    assert codec.sealed == ["theme"]
    after = stored(h, session.handle).fields
    for name in ("cart", "user_id"):
        assert after[attribute(name)] == before[attribute(name)]
    assert dict(h.load(session_id)) == {**PAYLOAD, "theme": "light"}


def test_in_place_changes_are_saved(h: Harness) -> None:
    session_id = h.store(**PAYLOAD)
    session = h.load(session_id)
    cart = session["cart"]
    assert isinstance(cart, dict)
    cart["item-10"] = 10
    h.commit(session)
    again = h.load(session_id)
    assert again["cart"] == {**PAYLOAD["cart"], "item-10": 10}  # type: ignore[dict-item]
    assert again.version == 2


def test_overlapping_requests_keep_each_others_change(h: Harness) -> None:
    session_id = h.store(cart={"a": 1}, user_id=1)
    first, second = h.load(session_id), h.load(session_id)
    assert first["cart"] == {"a": 1}  # read, not changed
    first["user_id"] = 2
    second["cart"] = {"a": 1, "b": 2}
    h.commit(second)
    h.commit(first)  # must not write its unchanged copy of the cart back
    assert dict(h.load(session_id)) == {"cart": {"a": 1, "b": 2}, "user_id": 2}


def test_values_stay_readable_across_id_rotation_and_login(h: Harness) -> None:
    session_id = h.store(**PAYLOAD)
    session = h.load(session_id)
    binding = session.binding
    h.manager.login(session, "alice")
    rotated = h.commit(session).id
    assert rotated is not None
    assert rotated != session_id
    again = h.load(rotated)
    assert dict(again) == PAYLOAD
    assert again.binding == binding
    assert again.principal == "alice"


def ended_elsewhere(h: Harness, session_id: str) -> None:
    other = h.load(session_id)
    other.invalidate()
    h.commit(other)


def invalidated_then_written(h: Harness) -> Session:
    session = h.load(h.store(cart={"a": 1}))
    session.invalidate()
    session["cart"] = {"b": 2}
    return session


def committed_empty_then_written(h: Harness) -> Session:
    session = h.load(None)
    assert h.commit(session).id is None  # nothing worth storing yet
    session["cart"] = {"b": 2}
    return session


def lost_then_written(h: Harness) -> Session:
    session_id = h.store(cart={"a": 1})
    session = h.load(session_id)
    ended_elsewhere(h, session_id)
    session["cart"] = {"a": 2}
    with pytest.raises(SessionEnded):
        h.commit(session)  # gone: goes on as a new, empty session
    session["cart"] = {"b": 2}
    return session


@pytest.mark.parametrize(
    "start", [invalidated_then_written, committed_empty_then_written, lost_then_written]
)
def test_every_stored_session_binds_its_values(
    h: Harness, start: Callable[[Harness], Session]
) -> None:
    session = start(h)
    session_id = h.commit(session).id
    assert session_id is not None
    fields = stored(h, session.handle).fields
    binding = fields.get(BINDING, b"").decode()
    assert len(binding) == 16
    sealed = fields[attribute("cart")]
    codec = EncryptedCodec({"k1": KEY_1})
    assert codec.decode(sealed, "cart", binding) == {"b": 2}
    with pytest.raises(CodecError):
        codec.decode(sealed, "cart", "")  # bound to the session, not only the name
    assert h.load(session_id)["cart"] == {"b": 2}


def test_key_rotation(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    old_id = h.store(**PAYLOAD)
    old_handle = h.load(old_id).handle

    # Deploy 2: k2 is current, k1 still listed.
    use_codec(h, EncryptedCodec({"k2": KEY_2, "k1": KEY_1}))
    old = h.load(old_id)
    assert dict(old) == PAYLOAD
    old["visits"] = 1
    h.commit(old)
    fields = stored(h, old_handle).fields
    assert fields[attribute("visits")].startswith(b"~k2.")
    assert fields[attribute("user_id")].startswith(b"~k1.")  # unchanged: not rewritten
    new_id = h.store(**PAYLOAD)
    new_handle = h.load(new_id).handle
    for name in PAYLOAD:
        assert stored(h, new_handle).fields[attribute(name)].startswith(b"~k2.")

    # Deploy 3: k1 removed. Values still under k1 are refused cleanly.
    use_codec(h, EncryptedCodec({"k2": KEY_2}))
    assert dict(h.load(new_id)) == PAYLOAD
    assert_rejected_and_logged(h, caplog, old_id, old_handle)
    assert "unknown key id" in caplog.records[-1].reason  # type: ignore[attr-defined]
    assert dict(h.load(new_id)) == PAYLOAD  # nothing else lost


def test_changed_values_move_to_the_current_key(h: Harness) -> None:
    session_id = h.store(**PAYLOAD)
    use_codec(h, EncryptedCodec({"k2": KEY_2, "k1": KEY_1}))
    session = h.load(session_id)
    assert session["cart"] == PAYLOAD["cart"]  # read under k1: re-sealed under k2 at commit
    session["user_id"] = 54321
    h.commit(session)
    fields = stored(h, session.handle).fields
    assert fields[attribute("cart")].startswith(b"~k2.")
    assert fields[attribute("user_id")].startswith(b"~k2.")
    use_codec(h, EncryptedCodec({"k2": KEY_2}))  # k1 retired: nothing needs it
    assert dict(h.load(session_id)) == {**PAYLOAD, "user_id": 54321}


def test_value_swapped_between_sessions_is_detected(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    victim_id = h.store(cart={"owner": "victim"}, user_id=1)
    thief_id = h.store(cart={"owner": "thief"}, user_id=2)
    victim, thief = h.load(victim_id), h.load(thief_id)
    victim_record, thief_record = stored(h, victim.handle), stored(h, thief.handle)
    fields = dict(thief_record.fields)
    fields[attribute("cart")] = victim_record.fields[attribute("cart")]
    overwrite(h, thief.handle, Record(thief_record.meta, fields))

    assert_rejected_and_logged(h, caplog, thief_id, thief.handle)
    assert dict(h.load(victim_id)) == {"cart": {"owner": "victim"}, "user_id": 1}


def test_value_swapped_between_fields_is_detected(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    session_id = h.store(role="user", plan="admin")
    session = h.load(session_id)
    record = stored(h, session.handle)
    fields = dict(record.fields)
    fields[attribute("role")], fields[attribute("plan")] = (
        fields[attribute("plan")],
        fields[attribute("role")],
    )
    overwrite(h, session.handle, Record(record.meta, fields))
    assert_rejected_and_logged(h, caplog, session_id, session.handle)


def with_cart(change: Callable[[bytes], bytes]) -> Callable[[dict[bytes, bytes]], None]:
    def tamper(fields: dict[bytes, bytes]) -> None:
        fields[attribute("cart")] = change(fields[attribute("cart")])

    return tamper


def drop_binding(fields: dict[bytes, bytes]) -> None:
    del fields[BINDING]


TAMPERING: dict[str, Callable[[dict[bytes, bytes]], None]] = {
    "changed character": with_cart(changed_character),
    "truncated": with_cart(lambda sealed: sealed[:-8]),
    "plaintext": with_cart(lambda sealed: b'{"sku":1}'),
    "unknown key": with_cart(lambda sealed: b"~k7" + sealed[3:]),
    "new binding": lambda fields: fields.update({BINDING: b"AAAAAAAAAAAAAAAA"}),
    "binding removed": drop_binding,
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_is_detected(
    h: Harness,
    caplog: pytest.LogCaptureFixture,
    tamper: Callable[[dict[bytes, bytes]], None],
) -> None:
    session_id = h.store(cart={"sku": 1})
    session = h.load(session_id)
    record = stored(h, session.handle)
    fields = dict(record.fields)
    tamper(fields)
    assert fields != record.fields
    overwrite(h, session.handle, Record(record.meta, fields))
    assert_rejected_and_logged(h, caplog, session_id, session.handle)
    assert stored(h, session.handle).fields == fields  # left for an operator to look at


# -- turning encryption on for sessions stored in plaintext --------------------------


def test_turning_encryption_on_restarts_plaintext_sessions(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    use_codec(h, JsonCodec())
    session_id = h.store(**PAYLOAD)
    handle = h.load(session_id).handle
    use_codec(h, EncryptedCodec({"k1": KEY_1}))
    assert_rejected_and_logged(h, caplog, session_id, handle)
    assert "not encrypted" in caplog.records[-1].reason  # type: ignore[attr-defined]


def test_migration_window_reads_plaintext_and_encrypts_what_it_writes(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    use_codec(h, JsonCodec())
    session_id = h.store(**PAYLOAD, theme="dark")
    handle = h.load(session_id).handle

    use_codec(h, EncryptedCodec({"k1": KEY_1}, accept_plaintext=True))
    session = h.load(session_id)
    assert dict(session) == {**PAYLOAD, "theme": "dark"}
    assert session["cart"] == PAYLOAD["cart"]  # read: re-sealed at commit
    session["user_id"] = 777
    h.commit(session)
    fields = stored(h, handle).fields
    assert fields[attribute("cart")].startswith(b"~k1.")
    assert fields[attribute("user_id")].startswith(b"~k1.")
    assert fields[attribute("theme")] == b'"dark"'  # untouched: still plaintext
    assert dict(h.load(session_id)) == {**PAYLOAD, "user_id": 777, "theme": "dark"}

    # Ciphertext is still authenticated during the window.
    record = stored(h, handle)
    tampered = dict(record.fields)
    tampered[attribute("cart")] = tampered[attribute("user_id")]
    overwrite(h, handle, Record(record.meta, tampered))
    assert_rejected_and_logged(h, caplog, session_id, handle)


def test_after_the_window_fully_encrypted_sessions_stay(h: Harness) -> None:
    use_codec(h, EncryptedCodec({"k1": KEY_1}, accept_plaintext=True))
    session_id = h.store(**PAYLOAD)
    use_codec(h, EncryptedCodec({"k1": KEY_1}))
    assert dict(h.load(session_id)) == PAYLOAD


# -- what encryption costs in Redis ---------------------------------------------------


def stored_size(redis_client: redis.Redis, codec: EncryptedCodec | JsonCodec) -> tuple[int, int]:
    """Bytes of the record and Redis's `MEMORY USAGE` of the session the Redis tests use."""
    redis_client.flushall()
    manager = SessionManager(RedisStore(redis_client), codec=codec)
    session = manager.load(None)
    session.update(PAYLOAD)
    manager.commit(session)
    [key] = redis_client.keys("*")
    usage = redis_client.memory_usage(key)
    assert usage is not None
    return len(redis_client.get(key)), usage  # type: ignore[arg-type]


def test_bytes_per_session(redis_client: redis.Redis) -> None:
    """The figures in docs/encryption.md: a user id and a 10-item dict."""
    plain_record, plain_usage = stored_size(redis_client, JsonCodec())
    sealed_record, sealed_usage = stored_size(redis_client, EncryptedCodec({"k1": KEY_1}))
    # Per value "~k1." and base64url of nonce + ciphertext + tag (41 bytes + a third of
    # the plaintext); per session the 20-byte binding field.
    assert (plain_record, sealed_record) == (186, 328)
    # Redis rounds allocations up, by an amount that varies with the key's slot tag.
    assert 142 <= sealed_usage - plain_usage <= 240, (plain_usage, sealed_usage)

"""Coverage-guided fuzzing (atheris, libFuzzer) of the pure parsers.

    python tests/atheris_fuzz.py ids|cookies|records [libFuzzer options]

e.g. ``-runs=1000000`` or ``-max_total_time=600``. Each target feeds the
fuzzer's bytes to code that reads client input or stored data, and fails
(libFuzzer reports a crash and writes the input) on any exception other than
the ones that code documents. tests/test_fuzz.py runs each for a bounded
number of inputs.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["sessionhub"]):
    from sessionhub.codec import CodecError
    from sessionhub.ids import MAX_ID_LENGTH, IdScheme
    from sessionhub.manager import Lifecycle
    from sessionhub.record import RecordError, parse_record
    from sessionhub.session import Session
    from sessionhub.stores.base import Read
    from sessionhub.web.resolvers import CookieResolver, HeaderResolver

SCHEME = IdScheme()
LIFECYCLE = Lifecycle(ids=SCHEME)
SOME_ID = SCHEME.new().id
COOKIES = CookieResolver()
HEADERS = HeaderResolver()


def ids(data: bytes) -> None:
    """The shape check: an accepted id is exactly what the scheme issues."""
    raw = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(MAX_ID_LENGTH + 8)
    ref = SCHEME.parse(raw)
    if ref is not None and (len(raw) != 44 or ref.id != raw):
        raise AssertionError(f"accepted {raw!r}")


def cookies(data: bytes) -> None:
    """A Cookie and an id header, as a server decodes them (latin-1)."""
    text = data.decode("latin-1")
    for presented in [
        *COOKIES.candidates({"cookie": text}),
        *HEADERS.candidates({"x-session-id": text}),
    ]:
        if presented.value is not None:
            SCHEME.parse(presented.value)


def _load(blob: bytes) -> Session:
    """What `Lifecycle.load` makes of `blob` read from the store, as the Redis store reads it."""
    steps = LIFECYCLE.load(SOME_ID)
    read = next(steps)
    assert isinstance(read, Read)
    try:
        try:
            record = parse_record(blob)
        except RecordError as exc:
            steps.throw(exc)  # as a store's failed read is
        else:
            steps.send(record)
    except StopIteration as done:
        session: Session = done.value
        return session
    raise AssertionError("load asked for more than one read")


def records(data: bytes) -> None:
    """Stored bytes: always a session (a new one if unreadable), never an exception."""
    session = _load(data)
    dict(session)
    try:
        _ = (session.principal, session.client_info, session.authenticated_at)
    except (CodecError, RecordError, ValueError, TypeError) as exc:
        raise AssertionError(f"loaded a session whose metadata cannot be read: {exc}") from exc


TARGETS: dict[str, Callable[[bytes], None]] = {
    "ids": ids,
    "cookies": cookies,
    "records": records,
}


#: Inputs the fuzzer starts from (mutating a real record reaches far more code
#: than waiting for random bytes to spell one).
SEEDS = [
    SOME_ID.encode(),
    b"a=1; session=" + SOME_ID.encode() + b'; b="2"',
    b"1764063375000 1764063375000 1800000 1764106575000 3",
    b"1764063375000 1764063375000 1800000 1764106575000 3\n"
    b'!p\t"alice"\n!a\t1764063375000\n!c\t{"ua":"x"}\n!b\tAbC\n"cart"\t{"sku-1":2}',
]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(TARGETS)} [libFuzzer options] [corpus dirs]")
    target = TARGETS[sys.argv.pop(1)]
    logging.getLogger("sessionhub").setLevel(logging.ERROR)  # unreadable data is expected
    with tempfile.TemporaryDirectory(prefix="sessionhub-fuzz-") as seeds:
        for number, seed in enumerate(SEEDS):
            (Path(seeds) / f"seed-{number}").write_bytes(seed)
        atheris.Setup([*sys.argv, seeds], target)
        atheris.Fuzz()


if __name__ == "__main__":
    main()

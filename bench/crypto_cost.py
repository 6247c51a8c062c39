"""What encryption at rest costs: time per value and bytes per session.

    .venv/bin/python -m bench.crypto_cost

Times are the median of a few rounds of many calls, per value, for the plain
JSON codec and `EncryptedCodec` (a commit encrypts only the values that changed).
Bytes are measured
with a real redis-server's `MEMORY USAGE` on the session the Redis tests use (a
user id and a 10-item dict), and as the length of the stored record.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from tests.servers import RedisServer
from tests.test_crypto import stored_size

from sessionhub import JSON, JsonCodec
from sessionhub.crypto import EncryptedCodec, new_key

VALUES: dict[str, JSON] = {
    "int": 12345,
    "10-item dict": {f"item-{i}": i for i in range(10)},
    "1 KB string": "x" * 1024,
    "10 KB list": [{"sku": f"sku-{i}", "qty": i} for i in range(400)],
}
BINDING = "KriUjmghy3v93ufl"


def per_call_us(call: Callable[[], object], calls: int = 2000, rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter_ns() - start) / calls / 1000)
    return statistics.median(samples)


def timing_row(label: str, value: JSON) -> tuple[str, int, float, float, float, float]:
    plain, sealed = JsonCodec(), EncryptedCodec({"k1": new_key()})
    plain_bytes = plain.encode(value, "v", BINDING)
    stored = sealed.encode(value, "v", BINDING)

    return (
        label,
        len(plain_bytes),
        per_call_us(lambda: plain.encode(value, "v", BINDING)),
        per_call_us(lambda: plain.decode(plain_bytes, "v", BINDING)),
        per_call_us(lambda: sealed.encode(value, "v", BINDING)),
        per_call_us(lambda: sealed.decode(stored, "v", BINDING)),
    )


def main() -> None:
    print("time per value, µs (median of 5 rounds)")
    header = ("value", "JSON B", "json enc", "json dec", "aes enc", "aes dec")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, size, *times in (timing_row(label, value) for label, value in VALUES.items()):
        print(f"| {label} | {size} | " + " | ".join(f"{t:.1f}" for t in times) + " |")

    server = RedisServer().start()
    try:
        client = server.client()
        codecs: dict[str, EncryptedCodec | JsonCodec] = {
            "JSON": JsonCodec(),
            "encrypted": EncryptedCodec({"k1": new_key()}),
        }
        print("\nbytes per session (user id + 10-item dict)")
        print("| codec | record | MEMORY USAGE |")
        print("|---|---|---|")
        for name, codec in codecs.items():
            record, usage = stored_size(client, codec)
            print(f"| {name} | {record} | {usage} |")
        client.close()
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()

"""Slowing down password guessing at the dashboard's door.

Each failed sign-in costs a token from two buckets: its client's (the client's
address; for IPv6 its /64, which one machine usually holds whole) and the one
all clients share. A bucket holds at most `*_failures` tokens and regains one
every `*_interval` seconds. A request is only checked while both buckets hold a
token; otherwise it is answered 429 with Retry-After, unchecked, so the right
password gets in no sooner than a wrong one and a guesser learns nothing while
it waits.

Checking takes the tokens and a sign-in that succeeds gives them back, so
attempts running at once cannot overdraw a bucket. The buckets are this
process's: N processes serving the dashboard allow N times as many guesses.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SignInThrottle", "client_key"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # when `tokens` was last brought up to date


@dataclass(frozen=True, slots=True)
class _Allowance:
    """A bucket's rule: at most `failures` tokens, one more every `interval` seconds."""

    failures: int
    interval: float

    def __post_init__(self) -> None:
        if self.failures < 1 or not self.interval > 0:
            raise ValueError("sign-in limits need at least 1 failure and a positive interval")

    def refill(self, bucket: _Bucket, now: float) -> None:
        regained = max(0.0, now - bucket.at) / self.interval
        bucket.tokens = min(float(self.failures), bucket.tokens + regained)
        bucket.at = now

    def wait(self, bucket: _Bucket) -> float:
        """Seconds until `bucket` (just refilled) holds a whole token."""
        return max(0.0, 1 - bucket.tokens) * self.interval

    def give_back(self, bucket: _Bucket) -> None:
        bucket.tokens = min(float(self.failures), bucket.tokens + 1)


def client_key(host: str | None) -> str:
    """Whose bucket a request from `host` draws on: the address, or an IPv6 /64."""
    if not host:
        return ""  # a Unix socket: every client is the same one
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class SignInThrottle:
    """Failed sign-ins allowed per client and in total (see the module's docstring).

    `max_clients`: the most clients remembered; beyond, the one charged longest
    ago is forgotten (its bucket has most likely filled up again by then).
    """

    def __init__(
        self,
        *,
        client_failures: int = 5,
        client_interval: float = 20.0,
        total_failures: int = 50,
        total_interval: float = 2.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = _Allowance(client_failures, client_interval)
        self._everyone = _Allowance(total_failures, total_interval)
        self._max_clients = max_clients
        self._clock = clock
        self._total = _Bucket(float(total_failures), clock())
        # Least recently charged first: a dict keeps the order keys were (re)inserted in.
        self._clients: dict[str, _Bucket] = {}

    def admit(self, host: str | None) -> float:
        """Take a failure's tokens for a sign-in from `host`: 0.0 if it may be checked,
        else the seconds to wait (nothing taken)."""
        now = self._clock()
        key = client_key(host)
        mine = self._clients.pop(key, None) or _Bucket(float(self._client.failures), now)
        self._client.refill(mine, now)
        self._everyone.refill(self._total, now)
        wait = max(self._client.wait(mine), self._everyone.wait(self._total))
        if wait == 0:
            mine.tokens -= 1
            self._total.tokens -= 1
        if mine.tokens < self._client.failures:  # a full bucket is as good as none
            self._clients[key] = mine
            if len(self._clients) > self._max_clients:
                del self._clients[next(iter(self._clients))]
        return wait

    def succeeded(self, host: str | None) -> None:
        """The sign-in `admit` let through succeeded: its tokens come back."""
        self._everyone.give_back(self._total)
        mine = self._clients.get(client_key(host))
        if mine is not None:
            self._client.give_back(mine)

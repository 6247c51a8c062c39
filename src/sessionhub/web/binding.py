"""Client binding: notice a logged-in session being used from another client.

Off by default. When on, the request flow records at login what it sees of
the client -- its user agent and the network its address is in (a /24 for
IPv4, a /64 for IPv6, by default) -- in the session's client info, and
compares them on every later request of that session. When they differ it
logs a warning (with the session's handle, never its id), calls `on_mismatch`
with a `Mismatch`, and, with ``action="end"``, ends the session before the
application sees it (the application gets a new, empty session; the response
deletes the old one and clears the cookie).

The signals are weak on purpose of what they are: a user agent is easy to
copy, and honest clients change networks (mobile, VPN, IPv4 to IPv6). Binding
makes a stolen cookie harder to use from elsewhere; "alert" is the safe start.

Behind a proxy or load balancer the peer address is the proxy's. Which
proxies to trust is the application's decision: pass `client_ip`, e.g.
``forwarded_for(hops=1)`` for one proxy that appends to X-Forwarded-For.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..codec import CodecError
from ..session import Session
from .resolvers import HeaderSource

__all__ = [
    "BOUND_KEY",
    "ClientAddress",
    "ClientBinding",
    "ClientSignals",
    "Mismatch",
    "forwarded_for",
    "network_of",
]

logger = logging.getLogger("sessionhub")

#: The key of `Session.client_info` the recorded signals live under.
BOUND_KEY = "bound"
#: Longest user agent kept; longer ones are cut (both when recorded and compared).
MAX_USER_AGENT = 512

#: Finds the client's address from the request headers and the peer address.
ClientAddress = Callable[[HeaderSource, str | None], str | None]


@dataclass(frozen=True, slots=True)
class ClientSignals:
    """What the binding compares: None when the request does not tell."""

    user_agent: str | None
    network: str | None  # e.g. "203.0.113.0/24"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A logged-in session seen from a client other than the one it logged in from."""

    handle: str
    principal: str
    changed: tuple[str, ...]  # "user_agent", "network"
    recorded: ClientSignals
    seen: ClientSignals
    action: Literal["alert", "end"]


def _peer(headers: HeaderSource, peer: str | None) -> str | None:
    return peer


@dataclass(frozen=True, slots=True)
class ClientBinding:
    """Whether and how sessions are bound to their client.

    `action`: "off" (the default), "alert" (log and call `on_mismatch`) or
    "end" (that, and end the session). `user_agent`, `ip`: which signals to
    record and compare. `ipv4_prefix`, `ipv6_prefix`: how much of an address
    must stay the same. `client_ip`: where the client's address comes from
    (default: the peer address of the connection). `on_mismatch`: called on
    each mismatch; an exception it raises is logged and swallowed.
    """

    action: Literal["off", "alert", "end"] = "off"
    user_agent: bool = True
    ip: bool = True
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    client_ip: ClientAddress | None = None
    on_mismatch: Callable[[Mismatch], Any] | None = None

    def __post_init__(self) -> None:
        if self.action not in ("off", "alert", "end"):
            raise ValueError(f"action must be off, alert or end, not {self.action!r}")
        if not 0 <= self.ipv4_prefix <= 32:
            raise ValueError("ipv4_prefix must be between 0 and 32")
        if not 0 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be between 0 and 128")
        if self.action != "off" and not (self.user_agent or self.ip):
            raise ValueError("client binding needs user_agent or ip (or both) to compare")

    @property
    def enabled(self) -> bool:
        return self.action != "off"

    def observe(self, headers: HeaderSource, peer: str | None) -> ClientSignals | None:
        """The request's signals; None when binding is off (nothing to do)."""
        if not self.enabled:
            return None
        user_agent = headers.get("user-agent") if self.user_agent else None
        network = None
        if self.ip:
            address = (self.client_ip or _peer)(headers, peer)
            network = network_of(address, self.ipv4_prefix, self.ipv6_prefix)
        return ClientSignals(user_agent[:MAX_USER_AGENT] if user_agent else user_agent, network)

    def check(self, session: Session, seen: ClientSignals | None) -> bool:
        """Compare a loaded session's recorded signals with `seen`; True if it was ended."""
        # The session's own readers, not its public ones: a check is not the
        # application looking at the session (that would add Vary).
        if seen is None or session._state.ref is None:
            return False
        principal = session._state.principal()
        bound = _bound(session)
        if principal is None or bound is None:
            return False  # anonymous, or logged in before binding was on
        recorded = ClientSignals(bound.get("ua"), bound.get("net"))
        changed = []
        if self.user_agent and "ua" in bound and recorded.user_agent != seen.user_agent:
            changed.append("user_agent")
        if self.ip and "net" in bound and recorded.network != seen.network:
            changed.append("network")
        if not changed:
            return False
        action: Literal["alert", "end"] = "end" if self.action == "end" else "alert"
        handle = str(session._state.handle)
        mismatch = Mismatch(handle, principal, tuple(changed), recorded, seen, action)
        logger.warning(
            "session used from another client",
            extra={"session_handle": mismatch.handle, "changed": changed, "action": action},
        )
        self._tell(mismatch)
        if action == "end":
            session.invalidate()
        return action == "end"

    def record(self, session: Session, seen: ClientSignals | None) -> None:
        """Before a commit: record `seen` for a session that just logged in.

        A session whose recorded signals belong to an earlier login (or that
        has none) gets the current ones: the login is when the client proved
        who it is. Costs no round trip: it rides on the login's own write.
        """
        if seen is None or session._state.principal() is None:
            return
        authenticated = session._state.authenticated_at()
        at = None if authenticated is None else round(authenticated * 1000)
        bound = _bound(session)
        if bound is not None and bound.get("at") == at:
            return
        signals: dict[str, Any] = {"at": at}
        if self.user_agent:
            signals["ua"] = seen.user_agent
        if self.ip:
            signals["net"] = seen.network
        session.client_info = {**_client_info(session), BOUND_KEY: signals}

    def _tell(self, mismatch: Mismatch) -> None:
        if self.on_mismatch is None:
            return
        try:
            self.on_mismatch(mismatch)
        except Exception:
            logger.exception(
                "client binding callback failed", extra={"session_handle": mismatch.handle}
            )


def _client_info(session: Session) -> dict[str, Any]:
    try:
        return session._state.client_info()
    except (CodecError, TypeError, ValueError):
        return {}  # unreadable: treated as never recorded


def _bound(session: Session) -> dict[str, Any] | None:
    bound = _client_info(session).get(BOUND_KEY)
    return bound if isinstance(bound, dict) else None


def network_of(address: str | None, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str | None:
    """The network `address` is in, as text ("203.0.113.0/24"); None if it is no address.

    An IPv4 address written as IPv6 (``::ffff:203.0.113.9``) counts as IPv4.
    """
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        # ip.packed drops a %scope, which a network cannot have.
        ip = ip.ipv4_mapped or ipaddress.IPv6Address(ip.packed)
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network((ip, prefix), strict=False))


def forwarded_for(hops: int = 1, header: str = "X-Forwarded-For") -> ClientAddress:
    """The client address as the `hops` proxies in front of the application saw it.

    Each proxy appends the address it got the request from, so the entry
    `hops` places from the right was written by the outermost proxy you
    trust; entries left of it are whatever the client sent. None when the
    header has fewer entries (the request did not come through the proxies).
    """
    if hops < 1:
        raise ValueError("hops must be at least 1")
    name = header.lower()

    def client_ip(headers: HeaderSource, peer: str | None) -> str | None:
        value = headers.get(name)
        if not value:
            return None
        entries = [entry.strip() for entry in value.split(",")]
        return entries[-hops] if len(entries) >= hops else None

    return client_ip

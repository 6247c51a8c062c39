"""Where a request carries its session id, and how the answer gives it back.

Pure: a resolver reads request headers and writes response headers; it never
does I/O. Three kinds:

* `CookieResolver`: a cookie, shaped by a `CookiePolicy` (name, Secure,
  HttpOnly, SameSite, Domain, Path, lifetime, prefixes, Partitioned);
* `HeaderResolver`: a request header such as ``X-Session-Id``; a new id goes
  back in the same response header;
* `CompositeResolver`: several of them, tried in order.

A resolver gives every candidate a request presents, in order (a request may
carry two cookies of one name: one set on a parent domain, say); which one is
the id is `SessionFlow.read_id`'s choice: the first of the id's shape.

Ids are only ever read from headers, never from the URL, the query string or
the body (they would end up in logs, histories and Referer headers). A value
longer than `MAX_ID_LENGTH` is rejected here, before anyone looks it up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Protocol

from ..ids import MAX_ID_LENGTH
from ..manager import Outcome

__all__ = [
    "CompositeResolver",
    "CookiePolicy",
    "CookieResolver",
    "HeaderResolver",
    "HeaderSource",
    "IdResolver",
    "Presented",
]

# RFC 9110 token: what a header or cookie name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# What may appear in a Domain or Path attribute without breaking the header.
_ATTRIBUTE_VALUE = re.compile(r"[\x21-\x3a\x3c-\x7e]*")  # visible ASCII but ';'
_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
# What browsers keep: a cookie's name and value together up to 4096 bytes, an
# attribute value (Domain, Path) up to 1024 (RFC 6265bis 5.6); beyond, it is dropped.
_MAX_NAME_AND_VALUE = 4096
_MAX_ATTRIBUTE_VALUE = 1024


class HeaderSource(Protocol):
    """Request headers, looked up by lower-case name (None when absent).

    Werkzeug's `Headers`, Django's `HttpHeaders` and a plain dict with
    lower-case keys all fit.
    """

    def get(self, name: str, /) -> str | None: ...


@dataclass(slots=True)  # not frozen: made on every request with an id, at half the cost
class Presented:
    """A session id as a request presented it, and the resolver that found it.

    `value` is None when the carrier was there but its value cannot be an id
    (too long): the request is treated as having no session, at no cost.
    """

    value: str | None
    resolver: IdResolver


class IdResolver(Protocol):
    #: The request headers a response depends on once it used the session.
    vary: tuple[str, ...]

    def candidates(self, headers: HeaderSource) -> list[Presented]:
        """Every id the request presents through this resolver, in order (maybe none)."""
        ...

    def write(self, outcome: Outcome, now: float) -> list[tuple[str, str]]:
        """The response headers that tell the client about `outcome`."""
        ...


def _usable(value: str) -> str | None:
    return value if len(value) <= MAX_ID_LENGTH else None


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """How the session cookie is set.

    Lifetime: the cookie lasts for the browser session unless `max_age` is
    given; a "remember me" session (`Session.remember`) always gets a cookie
    that lasts as long as the session does. The server enforces the session's
    timeouts whatever the cookie says.

    Prefixes are checked as browsers check them: ``__Secure-`` needs Secure;
    ``__Host-`` needs Secure, Path=/ and no Domain (the cookie then cannot be
    set or shadowed by a sibling subdomain -- the strongest choice).
    """

    name: str = "session"
    secure: bool = True
    http_only: bool = True
    same_site: str = "lax"  # Lax, Strict or None (any case)
    domain: str | None = None
    path: str = "/"
    max_age: int | None = None
    partitioned: bool = False

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.name):
            raise ValueError(f"cookie name {self.name!r} is not a valid cookie name")
        if len(self.name) + 1 + MAX_ID_LENGTH > _MAX_NAME_AND_VALUE:
            raise ValueError(
                f"cookie name of {len(self.name)} characters: with an id it would pass "
                f"the {_MAX_NAME_AND_VALUE} bytes browsers keep"
            )
        for attribute in (self.domain, self.path):
            if attribute is not None and len(attribute) > _MAX_ATTRIBUTE_VALUE:
                raise ValueError(
                    f"cookie domain and path are at most {_MAX_ATTRIBUTE_VALUE} characters"
                )
        same_site = str(self.same_site).lower()
        if same_site not in ("lax", "strict", "none"):
            raise ValueError(f"same_site must be Lax, Strict or None, not {self.same_site!r}")
        object.__setattr__(self, "same_site", same_site)  # accept "Lax" as well as "lax"
        if self.domain is not None and (
            not self.domain or not _ATTRIBUTE_VALUE.fullmatch(self.domain)
        ):
            raise ValueError(f"cookie domain {self.domain!r} is not a valid domain")
        if not self.path.startswith("/") or not _ATTRIBUTE_VALUE.fullmatch(self.path):
            raise ValueError(f"cookie path {self.path!r} must start with '/' and hold no ';'")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError(
                "cookie max_age must be positive (leave it unset for a browser-session cookie)"
            )
        insecure = not self.secure
        if insecure and self.same_site == "none":
            raise ValueError("a SameSite=None cookie must be Secure (browsers drop it otherwise)")
        if insecure and self.partitioned:
            raise ValueError("a Partitioned cookie must be Secure")
        if self.name.startswith("__Secure-") and insecure:
            raise ValueError(f"cookie {self.name!r}: the __Secure- prefix requires Secure")
        if self.name.startswith("__Host-") and (
            insecure or self.path != "/" or self.domain is not None
        ):
            raise ValueError(
                f"cookie {self.name!r}: the __Host- prefix requires Secure, Path=/ and no Domain"
            )

    def values(self, cookie_header: str | None) -> list[str]:
        """This cookie's values in a request's Cookie header, in order (browsers send
        the one of the longest path first; of equal paths, the oldest)."""
        found: list[str] = []
        if not cookie_header:
            return found
        for pair in cookie_header.split(";"):
            name, sep, value = pair.partition("=")
            if sep and name.strip() == self.name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                found.append(value)
        return found

    def set_cookie(self, value: str, max_age: float | None, now: float) -> str:
        """A Set-Cookie value storing `value`; `max_age` None: a browser-session cookie."""
        if max_age is None:
            return self._render(value, "")
        seconds = max(0, math.ceil(max_age))
        expires = formatdate(now + seconds, usegmt=True)
        return self._render(value, f"; Max-Age={seconds}; Expires={expires}")

    def expire(self) -> str:
        """A Set-Cookie value that removes the cookie."""
        return self._render("", f"; Max-Age=0; Expires={_EPOCH}")

    def _render(self, value: str, lifetime: str) -> str:
        parts = [f"{self.name}={value}", f"Path={self.path}"]
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        header = "; ".join(parts) + lifetime
        if self.secure:
            header += "; Secure"
        if self.http_only:
            header += "; HttpOnly"
        header += f"; SameSite={self.same_site.capitalize()}"
        if self.partitioned:
            header += "; Partitioned"
        return header


class CookieResolver:
    """The id in a cookie."""

    vary: tuple[str, ...] = ("Cookie",)

    def __init__(self, policy: CookiePolicy | None = None) -> None:
        self.policy = policy or CookiePolicy()

    def candidates(self, headers: HeaderSource) -> list[Presented]:
        return [
            Presented(_usable(value), self) for value in self.policy.values(headers.get("cookie"))
        ]

    def write(self, outcome: Outcome, now: float) -> list[tuple[str, str]]:
        if outcome.id is None:
            return [("Set-Cookie", self.policy.expire())]
        if outcome.persistent and outcome.expires_at is not None:
            max_age: float | None = outcome.expires_at - now
        else:
            max_age = self.policy.max_age
        return [("Set-Cookie", self.policy.set_cookie(outcome.id, max_age, now))]


class HeaderResolver:
    """The id in a request header; a new id goes back in the response header of that name.

    An ended session is answered with the header present and empty. Clients
    that want an id by header but have none yet may send the header empty.
    """

    def __init__(self, name: str = "X-Session-Id") -> None:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() == "cookie":
            raise ValueError("use CookieResolver for the Cookie header")
        self.name = name
        self.vary: tuple[str, ...] = (name,)

    def candidates(self, headers: HeaderSource) -> list[Presented]:
        value = headers.get(self.name.lower())
        return [] if value is None else [Presented(_usable(value.strip()), self)]

    def write(self, outcome: Outcome, now: float) -> list[tuple[str, str]]:
        return [(self.name, outcome.id or "")]


class CompositeResolver:
    """Several resolvers, tried in order.

    A response answers through the resolver the request's id came by (a
    client using the header gets the header back, a browser the cookie); a
    request that presents none is answered through the first resolver.
    """

    def __init__(self, resolvers: Sequence[IdResolver]) -> None:
        if not resolvers:
            raise ValueError("a CompositeResolver needs at least one resolver")
        self.resolvers = tuple(resolvers)
        self.vary = tuple(dict.fromkeys(name for r in self.resolvers for name in r.vary))

    def candidates(self, headers: HeaderSource) -> list[Presented]:
        return [found for resolver in self.resolvers for found in resolver.candidates(headers)]

    def write(self, outcome: Outcome, now: float) -> list[tuple[str, str]]:
        return self.resolvers[0].write(outcome, now)

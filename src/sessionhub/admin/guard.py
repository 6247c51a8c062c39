"""Who may use the dashboard, and proof that a POST came from its own page.

Authentication is the application's: a hook gets the request and returns the
operator's name, or None to refuse. `PasswordAuth` is a ready hook (HTTP
Basic, one shared password) for `sessionhub admin`.

Actions are POST only and carry a *synchronizer token* minted for the
operator (an HMAC of the operator's name and the time it was issued, so it
needs no server state and expires) in a hidden form field; a POST also has to
come from the dashboard's own origin when the browser says where it comes
from (``Origin``, else ``Sec-Fetch-Site``). Either check alone refuses a
cross-site form: the token because the attacking page cannot read it, the
origin because browsers set it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["Authenticate", "CsrfTokens", "PasswordAuth", "same_origin"]

#: The application's hook: the operator's name, or None (refused).
Authenticate = Callable[[Request], Awaitable[str | None] | str | None]


class PasswordAuth:
    """HTTP Basic authentication against one password (any user name, shown as the
    operator's name; or exactly `user` when given). Compared in constant time."""

    def __init__(self, password: str, *, user: str | None = None, realm: str = "sessionhub admin"):
        if len(password) < 12:
            raise ValueError("the admin password must be at least 12 characters")
        self._password = password.encode()
        self._user = user
        #: Sent with 401 so that browsers ask for the password.
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'

    def __call__(self, request: Request) -> str | None:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not colon or not hmac.compare_digest(password.encode(), self._password):
            return None
        if self._user is not None and not hmac.compare_digest(user.encode(), self._user.encode()):
            return None
        return user or "admin"


class CsrfTokens:
    """Tokens bound to an operator, valid for `max_age` seconds.

    Give every dashboard instance behind one balancer the same `secret`, or a
    page served by one is refused by another.
    """

    def __init__(self, secret: bytes | None = None, *, max_age: float = 8 * 3600) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.max_age = max_age

    def _mac(self, operator: str, issued: int) -> str:
        message = f"{issued}\n{operator}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def mint(self, operator: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self._mac(operator, issued)}"

    def valid(self, token: str, operator: str, now: float | None = None) -> bool:
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit() or len(issued_text) > 12:
            return False
        issued = int(issued_text)
        age = (time.time() if now is None else now) - issued
        if not 0 <= age <= self.max_age:
            return False
        return hmac.compare_digest(mac, self._mac(operator, issued))


def same_origin(request: Request, trusted: Iterable[str] = ()) -> bool:
    """Whether the browser says this request comes from the dashboard's own origin.

    The origin's host must be the request's ``Host`` (schemes are not compared:
    behind a TLS-terminating proxy the app sees http). True when the browser
    says nothing (a non-browser client): the token decides then.
    """
    origin = request.headers.get("origin")
    if origin is not None:
        if origin in trusted:
            return True
        host = request.headers.get("host")
        return host is not None and urlsplit(origin).netloc == host
    site = request.headers.get("sec-fetch-site")
    return site is None or site in ("same-origin", "none")

"""The admin dashboard (needs the ``admin`` extra: starlette, python-multipart).

`AdminApp` is the ASGI app; `PasswordAuth` a ready authentication hook;
`SignInThrottle` how many failed sign-ins it takes.
"""

from .app import AdminApp
from .guard import Authenticate, CsrfTokens, PasswordAuth
from .throttle import SignInThrottle

__all__ = ["AdminApp", "Authenticate", "CsrfTokens", "PasswordAuth", "SignInThrottle"]

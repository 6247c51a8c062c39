"""The admin dashboard (needs the ``admin`` extra: starlette, python-multipart).

`AdminApp` is the ASGI app; `PasswordAuth` a ready authentication hook.
"""

from .app import AdminApp
from .guard import Authenticate, CsrfTokens, PasswordAuth

__all__ = ["AdminApp", "Authenticate", "CsrfTokens", "PasswordAuth"]

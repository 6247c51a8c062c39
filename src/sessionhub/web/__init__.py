"""Web integration: the id resolvers and the request flow every adapter shares.

The adapters live in their own modules, each importing only its framework:
`sessionhub.web.asgi`, `.wsgi`, `.flask`, `.quart`, `.django`, `.fastapi`.
"""

from .flow import PlainResponse, SessionFlow, merge_headers
from .resolvers import (
    CompositeResolver,
    CookiePolicy,
    CookieResolver,
    HeaderResolver,
    HeaderSource,
    IdResolver,
    Presented,
)

__all__ = [
    "CompositeResolver",
    "CookiePolicy",
    "CookieResolver",
    "HeaderResolver",
    "HeaderSource",
    "IdResolver",
    "PlainResponse",
    "Presented",
    "SessionFlow",
    "merge_headers",
]

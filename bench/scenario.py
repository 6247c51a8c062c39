"""What every benchmarked app does, whatever its framework and session library.

Each app serves the same paths, each a few lines of handler over a mapping
(the session, or a plain dict in the bare apps without sessions):

=========  ===================================================  ==============
path       handler                                              sent with
=========  ===================================================  ==============
/anon      looks for a user id ("am I logged in?")              no cookie
/read      reads the user id and the cart                       a session cookie
/write     changes one attribute                                a session cookie
/new       stores the payload in a new session                  no cookie
/set/NAME  sets attribute NAME (the concurrent-writes test)     a session cookie
/count     counts the attributes the concurrent writes set      a session cookie
=========  ===================================================  ==============
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

PAYLOAD: dict[str, Any] = {"user_id": 12345, "cart": {f"item-{i}": i for i in range(10)}}
KINDS = ("anon", "read", "write", "new")
#: Attribute names of the concurrent-writes test start with this.
CONCURRENT_PREFIX = "k-"
CONCURRENT_WRITES = 50

Session = MutableMapping[str, Any]


def anon(session: Session) -> bytes:
    return b"guest" if session.get("user_id") is None else b"user"


def read(session: Session) -> bytes:
    return b"%d:%d" % (session.get("user_id", 0), len(session.get("cart", ())))


def write(session: Session) -> bytes:
    session["counter"] = session.get("counter", 0) + 1
    return b"ok"


def new(session: Session) -> bytes:
    for name, value in PAYLOAD.items():
        session[name] = value
    return b"ok"


def set_attribute(session: Session, name: str) -> bytes:
    session[name] = 1
    return b"ok"


def count(session: Session) -> bytes:
    return b"%d" % sum(1 for name in list(session.keys()) if name.startswith(CONCURRENT_PREFIX))


def bare_session(kind: str) -> dict[str, Any]:
    """What the bare apps hand their handlers: the data a session would hold."""
    return {} if kind in ("anon", "new") else dict(PAYLOAD)

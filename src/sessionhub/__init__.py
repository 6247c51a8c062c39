"""sessionhub: distributed HTTP sessions for Python web applications, on Redis."""

from .codec import JSON, Codec, CodecError, JsonCodec
from .errors import SessionError, StoreUnavailable
from .ids import IdScheme
from .manager import AsyncSessionManager, Lifecycle, Outcome, SessionManager
from .policy import FlushMode, Timeouts
from .session import Session
from .stores import MemoryStore
from .stores.redis import AsyncRedisStore, RedisStore

__all__ = [
    "JSON",
    "AsyncRedisStore",
    "AsyncSessionManager",
    "Codec",
    "CodecError",
    "FlushMode",
    "IdScheme",
    "JsonCodec",
    "Lifecycle",
    "MemoryStore",
    "Outcome",
    "RedisStore",
    "Session",
    "SessionError",
    "SessionManager",
    "StoreUnavailable",
    "Timeouts",
]
__version__ = "0.1.0"

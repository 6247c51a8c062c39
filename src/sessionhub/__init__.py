"""sessionhub: distributed HTTP sessions for Python web applications, on Redis."""

from .codec import JSON, Codec, CodecError, JsonCodec
from .errors import LoginRefused, SessionEnded, SessionError, StoreUnavailable
from .events import Event, EventType, Reason
from .expiry import AsyncExpiryWorker, ExpiryWorker
from .ids import IdScheme
from .manager import AsyncSessionManager, Lifecycle, Outcome, SessionManager
from .policy import FlushMode, Timeouts
from .session import Session
from .stores import MemoryStore
from .stores.redis import AsyncRedisStore, RedisStore
from .stores.redis.consumer import AsyncEventConsumer, EventConsumer
from .users import LimitPolicy, SessionInfo, SessionLimit

__all__ = [
    "JSON",
    "AsyncEventConsumer",
    "AsyncExpiryWorker",
    "AsyncRedisStore",
    "AsyncSessionManager",
    "Codec",
    "CodecError",
    "Event",
    "EventConsumer",
    "EventType",
    "ExpiryWorker",
    "FlushMode",
    "IdScheme",
    "JsonCodec",
    "Lifecycle",
    "LimitPolicy",
    "LoginRefused",
    "MemoryStore",
    "Outcome",
    "Reason",
    "RedisStore",
    "Session",
    "SessionEnded",
    "SessionError",
    "SessionInfo",
    "SessionLimit",
    "SessionManager",
    "StoreUnavailable",
    "Timeouts",
]
__version__ = "0.1.0"

"""Where sessions are kept: `MemoryStore` in-process, `RedisStore`/`AsyncRedisStore` shared."""

from .base import AsyncStore, Store
from .memory import MemoryStore

__all__ = ["AsyncStore", "MemoryStore", "Store"]

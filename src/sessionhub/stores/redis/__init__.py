"""Redis-backed stores (standalone, Sentinel, Cluster; sync and asyncio)."""

from .store import AsyncRedisStore, RedisCommands, RedisStore

__all__ = ["AsyncRedisStore", "RedisCommands", "RedisStore"]

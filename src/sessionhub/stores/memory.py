"""An in-process store: one application instance, tests, the in-app mode.

Sessions live in this process only: another instance (or a restart) does not
see them. Thread-safe; expired records are dropped when met and when room is
needed; at most `max_sessions` are kept, the least recently used going first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from ..record import Meta, Record, apply
from .base import Apply, Create, Delete, Operation, Read, Rotate, refresh_due

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self, *, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be positive")
        self.max_sessions = max_sessions
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def execute(self, operation: Operation) -> Any:
        with self._lock:
            match operation:
                case Read(handle, now, share):
                    return self._read(handle, now, share)
                case Create(handle, record):
                    return self._create(handle, record)
                case Apply(handle, delta, now):
                    found = self._live(handle, now)
                    if found is None:
                        return None
                    return self._put(handle, apply(found, delta, now), now)
                case Rotate(handle, new_handle, delta, now):
                    found = self._live(handle, now)
                    if found is None:
                        moved = self._live(new_handle, now)  # a retry after success
                        return moved.meta if moved else None
                    del self._records[handle]
                    return self._put(new_handle, apply(found, delta, now), now)
                case Delete(handle):
                    return self._records.pop(handle, None) is not None
        raise TypeError(f"unknown operation {operation!r}")

    async def aexecute(self, operation: Operation) -> Any:
        return self.execute(operation)

    def _live(self, handle: str, now: int) -> Record | None:
        record = self._records.get(handle)
        if record is None:
            return None
        if record.meta.expires <= now:
            del self._records[handle]
            return None
        self._records.move_to_end(handle)
        return record

    def _read(self, handle: str, now: int, share: float) -> Record | None:
        record = self._live(handle, now)
        if record is None:
            return None
        if refresh_due(record, now, share):
            meta = record.meta
            record.meta = Meta(meta.created, now, meta.idle, meta.deadline, meta.version)
        return Record(record.meta, dict(record.fields))

    def _create(self, handle: str, record: Record) -> bool:
        if handle in self._records:
            return False
        self._put(handle, Record(record.meta, dict(record.fields)), record.meta.created)
        return True

    def _put(self, handle: str, record: Record, now: int) -> Meta | None:
        if record.meta.expires <= now:
            self._records.pop(handle, None)
            return None
        if handle not in self._records and len(self._records) >= self.max_sessions:
            self._make_room(now)
        self._records[handle] = record
        self._records.move_to_end(handle)
        return record.meta

    def _make_room(self, now: int) -> None:
        expired = [h for h, r in self._records.items() if r.meta.expires <= now]
        for handle in expired:
            del self._records[handle]
        while len(self._records) >= self.max_sessions:
            self._records.popitem(last=False)

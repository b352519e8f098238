"""A worker's in-memory voice cache: LRU bounded by SPEAKER_CACHE_MAX_SIZE, entries expire after
SPEAKER_CACHE_TTL seconds. Keys include the voice's revision, so a stale copy is never a hit."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0  # dropped to make room (LRU)
    expirations: int = 0  # dropped because older than the TTL
    invalidations: int = 0  # dropped because the voice was deleted or overwritten
    clears: int = 0


class VoiceCache(Generic[V]):
    def __init__(self, max_size: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_size = max(0, max_size)
        self.ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def get_or_load(self, key: Hashable, load: Callable[[], V]) -> V:
        """The cached value for `key`, or `load()` (counted as a miss) stored under it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._clock() - entry[0] > self.ttl:
                del self._entries[key]
                self.stats.expirations += 1
                entry = None
            if entry is not None:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return entry[1]
            self.stats.misses += 1
        value = load()  # outside the lock: loading reads the database
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.max_size == 0:
            return
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
                self.stats.evictions += 1

    def invalidate(self, match: Callable[[Hashable], bool]) -> int:
        with self._lock:
            doomed = [key for key in self._entries if match(key)]
            for key in doomed:
                del self._entries[key]
            self.stats.invalidations += len(doomed)
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.stats.clears += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **asdict(self.stats),
                "size": len(self._entries),
                "max_size": self.max_size,
                "ttl_seconds": self.ttl,
            }

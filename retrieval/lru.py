"""A small thread-safe LRU map: query vectors in the searcher, explanations in the service."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

_MISSING = object()


class LRUCache:
    """At most `size` entries, least recently used dropped first; `size` 0 turns it off."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if self.size <= 0:
            return make()
        value = self._lookup(key)
        if value is _MISSING:
            value = make()  # outside the lock: two racing misses both compute, one result is kept
            self.put(key, value)
        return value

    def get(self, key: Hashable) -> Any:
        """The cached value, or None (counted as a hit or a miss)."""
        value = self._lookup(key)
        return None if value is _MISSING else value

    def _lookup(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return _MISSING

    def put(self, key: Hashable, value: Any) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

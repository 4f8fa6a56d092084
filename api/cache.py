"""Serialized responses of catalogue reads, kept until the catalogue changes.

Circuits are immutable once stored (one transaction each), so a read over them stays right until a circuit
(or a knowledge edit) is added or removed. Each cached body is tagged with the catalogue's version: the
number of circuits, their largest id and newest creation time, and the number and largest id of edits (one
small aggregate); a new version empties the cache. The version is looked up at most every `check_seconds`
(0: on every request; `atlas serve`: every second, so a new circuit shows in the answers within a second).
Bounded by total bytes, least recently used out first; ATLAS_API_CACHE_MB sets the bound for `atlas serve`
(default 64; 0 turns the cache off).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from atlas.db.browse import CATALOGUE_VERSION
from atlas.spec.json_safe import dumps


def encode(value: Any) -> bytes:
    """JSON bytes (NaN and infinities as null), compact (orjson: atlas.spec.json_safe.dumps)."""
    return dumps(value)


def cache_from_environment() -> ResponseCache:
    """The cache `create_app()` uses: ATLAS_API_CACHE_MB megabytes (default 64; 0: no cache)."""
    text = os.environ.get("ATLAS_API_CACHE_MB", "").strip()
    try:
        megabytes = float(text) if text else 64.0
    except ValueError:
        raise ValueError(f"ATLAS_API_CACHE_MB must be a number of megabytes, got {text!r}") from None
    return ResponseCache(max_bytes=int(megabytes * (1 << 20)), check_seconds=1.0)


class ResponseCache:
    def __init__(self, max_bytes: int = 64 << 20, max_entry: int = 8 << 20, check_seconds: float = 0.0):
        self.max_bytes, self.max_entry, self.check_seconds = max_bytes, max_entry, check_seconds
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._version: Any = None
        self._checked = -float("inf")
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _current(self, engine: Engine) -> Any:
        now = time.monotonic()
        if self.check_seconds > 0 and now - self._checked < self.check_seconds:
            return self._version
        with engine.connect() as connection:  # Core, no ORM session: this runs on every request
            version = tuple(connection.execute(CATALOGUE_VERSION).one())
        with self._lock:
            if version != self._version:
                self._entries.clear()
                self._bytes = 0
                self._version = version
            self._checked = now
        return version

    def get(self, engine: Engine, key: Hashable, compute: Callable[[], Any]) -> bytes:
        """The cached body for `key`, else `compute()` (bytes as they are, else JSON), kept if it fits."""
        if self.max_bytes <= 0:  # disabled
            value = compute()
            return value if isinstance(value, bytes) else encode(value)
        version = self._current(engine)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        value = compute()  # read after `version`: never older than what it is tagged with
        data = value if isinstance(value, bytes) else encode(value)
        if len(data) <= self.max_entry:
            with self._lock:
                if self._version == version and key not in self._entries:
                    self._entries[key] = data
                    self._bytes += len(data)
                    while self._bytes > self.max_bytes and self._entries:
                        _, dropped = self._entries.popitem(last=False)
                        self._bytes -= len(dropped)
        return data

    async def aget(self, engine: Engine, key: Hashable, compute: Callable[[], Any]) -> bytes:
        """`get` for async routes: a hit while the version is fresh is answered on the event loop (no thread,
        no database); anything else runs `get` in the thread pool."""
        if self.max_bytes > 0 and time.monotonic() - self._checked < self.check_seconds:
            with self._lock:
                found = self._entries.get(key)
                if found is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return found
        return await run_in_threadpool(self.get, engine, key, compute)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._version = None

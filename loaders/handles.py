"""A bounded cache of open handles (directories, shard files), shared by a process's threads.

A reader that keeps one handle per class directory or shard would need more descriptors than the
process may open once a corpus has thousands of them (`ulimit -n`, usually 1,024). `HandleLRU`
keeps at most `limit` open (generator.limits.keep_open), least recently used closed first, and
never closes one a thread is using: `acquire` counts a user, `release` uncounts it, and only
handles with no user are closed. While every handle is in use the cache may hold more than
`limit` for that moment; they are closed as soon as they are released.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

H = TypeVar("H")


class HandleLRU(Generic[H]):
    def __init__(self, limit: int, open_fn: Callable[[Hashable], H], close_fn: Callable[[H], None]):
        self.limit = max(1, limit)
        self._open, self._close = open_fn, close_fn
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, list] = OrderedDict()  # key -> [handle, users]

    def __len__(self) -> int:
        return len(self._entries)

    def acquire(self, key: Hashable) -> H:
        """The handle of `key`, opened (open_fn(key)) when not cached; counted as in use until
        release(key). open_fn's exceptions propagate, nothing cached."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry[1] += 1
                return entry[0]
            self._trim(room=1)
        handle = self._open(key)  # outside the lock: other threads go on meanwhile
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:  # another thread opened it meanwhile: use that one
                entry[1] += 1
                spare = handle
            else:
                entry = self._entries[key] = [handle, 1]
                spare = None
        if spare is not None:
            self._close(spare)
        return entry[0]

    def release(self, key: Hashable) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry[1] -= 1
            self._trim()

    def close(self) -> None:
        """Close every cached handle (in use or not: call when no thread uses the cache)."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), OrderedDict()
        for handle, _ in entries:
            self._close(handle)

    def _trim(self, room: int = 0) -> None:
        """Close unused handles, oldest first, until `room` more fit within the limit (lock held)."""
        while len(self._entries) + room > self.limit:
            for key, (handle, users) in self._entries.items():
                if users <= 0:
                    break
            else:
                return  # every one in use: over the limit until they are released
            del self._entries[key]
            self._close(handle)

"""Regimes: how the page cache stands before an epoch, set and then checked (never assumed).

- cold: every handle closed, then evicted (drop_caches as root, else fadvise DONTNEED), and the
  residency must be at most COLD_MAX;
- warm: pre-read, and at least WARM_MIN resident before (and, checked by the runner, after);
- asis: whatever it is, measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import probes

COLD_MAX, WARM_MIN = 0.01, 0.99  # residency limits of the cache settings


@dataclass(frozen=True)
class CacheState:
    residency: float
    ok: bool
    method: str | None
    after: float | None = None


def set_cache(cache: str, paths, evict_method: str) -> CacheState:
    """Put the files in the cache state asked for, with every handle already closed, and check it."""
    if cache == "cold":
        for attempt in range(4):  # readahead still in flight when the handles closed lands after a drop
            method = probes.evict(paths, evict_method)
            res = probes.residency(paths).fraction
            if res <= COLD_MAX:
                break
            time.sleep(0.05 * (attempt + 1))
        if method == "drop_caches":
            probes.evict(paths, method)  # the check itself looked every file up: forget those inodes again
        return CacheState(res, res <= COLD_MAX, method)
    if cache == "warm":
        res = probes.residency(paths).fraction
        if res < WARM_MIN:
            res = probes.warm(paths).fraction
        return CacheState(res, res >= WARM_MIN, None)
    return CacheState(probes.residency(paths).fraction, True, None)

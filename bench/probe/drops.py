"""Drops of the page cache made by other processes, counted by the kernel: an epoch that holds
pages in the cache (warm, capped) under which someone else dropped it did not measure its regime.

Each write to /proc/sys/vm/drop_caches that drops the page cache (1 or 3) adds one to the machine's
`drop_pagecache` count in /proc/vmstat (a write of 2 adds to `drop_slab` alone: dentries and
inodes, not file pages, and is not counted here). This process counts its own writes as it makes
them (`own_drop`, called by bench.probe.probes' eviction as root) and `DropWatch` subtracts them:
what is left over an epoch was dropped by another process. The count, not residency, is the
evidence: residency also falls when the kernel reclaims pages or a cap evicts them, which is no
one's drop. Where /proc/vmstat has no such line (older kernels, some containers), nothing is
counted: `DropWatch.foreign()` is None, and the run says so once (bench.run.runner.cache_notes).
"""

from __future__ import annotations

from typing import Callable

VMSTAT = "/proc/vmstat"
COUNTER = "drop_pagecache"
ABSENT = (f"this kernel keeps no count of page-cache drops ({COUNTER} in {VMSTAT}), so a warm or capped epoch "
          f"whose cache another process dropped (echo 1 or 3 > /proc/sys/vm/drop_caches) is seen only by its "
          f"residency, if at all")
REASON = "cache dropped by another process during this epoch"

_own = [0]  # this process's drops of the page cache so far


def own_drop() -> None:
    """Count one drop of the page cache made by this process (after its write succeeded)."""
    _own[0] += 1


def own_drops() -> int:
    return _own[0]


def read_counter(path: str | None = None) -> int | None:
    """The machine's count of page-cache drops since boot (from `path`, default VMSTAT); None where
    the kernel keeps none."""
    try:
        with open(path or VMSTAT, "rb") as f:
            for line in f:
                name, _, value = line.partition(b" ")
                if name == COUNTER.encode():
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


class DropWatch:
    """Counts, from its making to each foreign() call, the page-cache drops other processes made.
    `source`: the machine's count (default: this module's read_counter, looked up when made)."""

    def __init__(self, source: Callable[[], int | None] | None = None):
        self.source = source or read_counter
        self.start, self.own = self.source(), own_drops()

    def foreign(self) -> int | None:
        """Drops since the start not made by this process; None where the kernel counts none."""
        now = self.source()
        if now is None or self.start is None:
            return None
        return max(0, now - self.start - (own_drops() - self.own))

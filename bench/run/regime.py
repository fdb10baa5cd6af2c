"""The cache regimes as objects: what each does around an epoch of the one epoch loop
(bench.run.epochs.run_epochs).

    before(reader, files) -> CacheState   the cache made as the regime asks, just before the epoch
    after(files, state)   -> CacheState   checked again after it, where the regime can be broken meanwhile
    finish(record)        -> EpochRecord  the record with the regime's own parts added

`fresh_loader`: a new loader (its reader's handles and maps closed) before every epoch, since an
open handle or map keeps pages resident. `checkpoints`: whether the run's checkpoint writes happen
inside it. `keeps_pages`: whether the regime needs the pages in the cache kept through the epoch
(warm, capped): an epoch under which another process dropped the page cache is then marked not ok
(`dropped`, from the kernel's count: bench.probe.drops). The capped regime's object lives in its
child process (bench.run.capped.Capped).
"""

from __future__ import annotations

from dataclasses import replace

from bench.probe.regimes import WARM_MIN, CacheState


class Regime:
    """A cache setting that holds for every epoch of a run: asis (whatever the cache holds)."""

    name = "asis"
    fresh_loader = False
    checkpoints = True
    keeps_pages = False

    def __init__(self, storage):
        self.storage = storage

    def before(self, reader, files) -> CacheState:
        return self.storage.settle(self.name, files)

    def after(self, files, state: CacheState) -> CacheState:
        return state

    def finish(self, record):
        return record

    def dropped(self, record):
        """The record marked not ok where this regime keeps pages and another process dropped the
        page cache during the epoch (record.cache_drops), on a storage whose cache is this host's
        (supports_eviction: not a remote S3 store, whose cache a local drop does not touch)."""
        if self.keeps_pages and self.storage.supports_eviction and record.cache_drops:
            return replace(record, cache_ok=False)
        return record


class Cold(Regime):
    """Evicted and checked before every epoch, every handle closed first; and confirmed by what
    the device read: an epoch whose device read less than DEVICE_MIN of its payload bytes was
    served by a cache mincore does not see, and is marked not cold."""

    name = "cold"
    fresh_loader = True
    DEVICE_MIN = 0.5  # of the payload bytes (raw payloads: the device reads at least them, cold)
    DEVICE_CHECKED = 1 << 20  # payloads smaller than this are not checked (metadata and readahead weigh)

    def before(self, reader, files) -> CacheState:
        reader.close()  # an open handle or map keeps pages resident
        return super().before(reader, files)

    def finish(self, record):
        if not_read_from_the_device(record, self.DEVICE_MIN, self.DEVICE_CHECKED):
            return replace(record, cache_ok=False)
        return record


def not_read_from_the_device(record, share: float, smallest: int) -> bool:
    """Whether a cold epoch's device read less than `share` of its payload (one host's device
    only: an epoch of ranks on several hosts is not checked, nor one without a device count)."""
    hosts = {r.host for r in record.ranks}
    if record.device_sectors_read is None or len(hosts) > 1 or record.payload_bytes < smallest:
        return False
    return record.device_sectors_read * 512 < share * record.payload_bytes


class Warm(Regime):
    """Resident before the epoch, and checked after it: another user of the machine may drop the
    cache meanwhile, and such an epoch is marked."""

    name = "warm"
    keeps_pages = True

    def after(self, files, state: CacheState) -> CacheState:
        left = self.storage.residency(files)
        return replace(state, after=left, ok=state.ok and left >= WARM_MIN)


REGIME_CLASSES = {cls.name: cls for cls in (Cold, Warm, Regime)}


def regime_for(name: str, storage) -> Regime:
    """The regime `name` over `storage` (capped runs make theirs in their child process)."""
    return REGIME_CLASSES[name](storage)

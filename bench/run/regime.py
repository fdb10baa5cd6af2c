"""The cache regimes as objects: what each does around an epoch of the one epoch loop
(bench.run.epochs.run_epochs).

    before(reader, files) -> CacheState   the cache made as the regime asks, just before the epoch
    after(files, state)   -> CacheState   checked again after it, where the regime can be broken meanwhile
    finish(record)        -> EpochRecord  the record with the regime's own parts added

`fresh_loader`: a new loader (its reader's handles and maps closed) before every epoch, since an
open handle or map keeps pages resident. `checkpoints`: whether the run's checkpoint writes happen
inside it. The capped regime's object lives in its child process (bench.run.capped.Capped).
"""

from __future__ import annotations

from dataclasses import replace

from bench.probe.regimes import WARM_MIN, CacheState


class Regime:
    """A cache setting that holds for every epoch of a run: asis (whatever the cache holds)."""

    name = "asis"
    fresh_loader = False
    checkpoints = True

    def __init__(self, storage):
        self.storage = storage

    def before(self, reader, files) -> CacheState:
        return self.storage.settle(self.name, files)

    def after(self, files, state: CacheState) -> CacheState:
        return state

    def finish(self, record):
        return record


class Cold(Regime):
    """Evicted and checked before every epoch, every handle closed first."""

    name = "cold"
    fresh_loader = True

    def before(self, reader, files) -> CacheState:
        reader.close()  # an open handle or map keeps pages resident
        return super().before(reader, files)


class Warm(Regime):
    """Resident before the epoch, and checked after it: another user of the machine may drop the
    cache meanwhile, and such an epoch is marked."""

    name = "warm"

    def after(self, files, state: CacheState) -> CacheState:
        left = self.storage.residency(files)
        return replace(state, after=left, ok=state.ok and left >= WARM_MIN)


REGIME_CLASSES = {cls.name: cls for cls in (Cold, Warm, Regime)}


def regime_for(name: str, storage) -> Regime:
    """The regime `name` over `storage` (capped runs make theirs in their child process)."""
    return REGIME_CLASSES[name](storage)

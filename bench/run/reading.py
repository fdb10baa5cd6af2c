"""How a run reads: our Loader opened with a run's settings (open_loader; the DataLoader's is
bench.run.torchrun.open_torch_loader), and every read path run once before the clock (warm_up_code).
The runner and the capped regime's child process both open their loaders here."""

from __future__ import annotations

import numpy as np

from bench.results.result import RunConfig


def open_loader(reader, rc: RunConfig, workers: int, rank: int, timing: bool, naive: bool = False):
    """Our Loader over `reader` as the run `rc` reads: rank `rank` of rc.world, per-sample `timing`,
    or a `naive` baseline (in the calling thread, decoded)."""
    from loaders.pipeline import Loader

    return Loader(reader, batch_size=rc.batch_size, workers=0 if naive else workers, worker_kind=rc.worker_kind,
                  shuffle=rc.shuffle, seed=rc.seed, prefetch=rc.prefetch, decode=rc.decode or naive,
                  drop_last=rc.drop_last, rank=rank, world=rc.world, timing=timing, naive=naive)


def warm_up_code(reader, rc: RunConfig, naive: bool) -> None:
    """Run every read path once on a few samples before measuring. Cold means the *data* is not
    cached: the code that reads it is, in training. drop_caches also drops the pages of libraries
    not yet mapped; without this, a cold first epoch would read h5py or lmdb code from disk and
    count it as sample bytes. Pages mapped by this process stay mapped (and fork workers share them)."""
    idx = np.arange(min(rc.batch_size, len(reader)))
    if naive:
        reader.naive_batch(idx)
        reader.close_naive()
        return
    reader.read_many(idx)
    reader.decode(reader.read(int(idx[0])), int(idx[0]))
    reader.read_batch(idx)
    reader.close()

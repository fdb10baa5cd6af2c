"""The epoch loop: every run of `bench run` reads its epochs here, in the bench process or, for the
capped regime, in a child process inside its memory cgroup (bench.run.capped). What differs
between runs is a parameter: the RunSpec (who reads, what), the Regime (what is done to the cache
around each epoch, and what it adds to the record), the loader opener, and where each finished
record goes (`emit`).

Per epoch, in order: the loader closed if the regime or the epoch wants a fresh one; the cache
made and checked (regime.before); the loader opened if closed; a barrier; counters started; the
epoch timed batch by batch (with the run's emulated compute, and each batch copied to the GPU
under --device); counters stopped (with the kernel's count of page-cache drops other processes
made meanwhile: bench.probe.drops); the cache checked again (regime.after); the ranks' epochs
gathered into one record on rank 0 (regime.finish adds the regime's parts; regime.dropped marks
an epoch of a regime that keeps pages whose cache another process dropped); a checkpoint written
every N epochs where the regime allows it; a barrier.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generator.errors import LayoutbenchError

from bench.probe.drops import DropWatch
from bench.probe.measure import Compute, Counters, time_batches
from bench.results.result import Checkpoint, RunConfig
from bench.results.spec import RunSpec

CHECKPOINT_PREFIX = ".layoutbench-checkpoint-"


@dataclass(frozen=True)
class Epochs:
    """What one repeat of a run measured: its epoch records (rank 0; none elsewhere), checkpoints,
    the eviction method used, and a DataLoader run's settings."""

    records: tuple
    checkpoints: tuple = ()
    evict_method: str | None = None
    settings: dict | None = None


def epoch_plan(spec: RunSpec, rc: RunConfig) -> list[tuple[int, bool]]:
    """(epoch, per-sample timing) in the order they run. Naive baselines: one epoch (no workers to
    start, so no first epoch to set apart; and slow). The timing epoch follows the others where
    asked for, only for our Loader's runs: it times our reader's read and decode per sample, which
    a DataLoader or ecosystem run would only repeat, or cannot."""
    if spec.naive:
        return [(0, False)]
    timed = [(rc.epochs, True)] if rc.sample_latency and spec.kind == "loader" else []
    return [(e, False) for e in range(rc.epochs)] + timed


def shard_rank(rank: int, world: int, epoch: int, shift: int) -> int:
    """Which shard a rank reads in an epoch: with a shift, ranks rotate shards (IOR's reorder)."""
    return (rank + epoch * shift) % world


def run_epochs(ctx, spec: RunSpec, reader, regime, repeat: int, open_loader, emit=None, loader=None) -> Epochs:
    """Every epoch of one repeat of `spec` over `reader`. `open_loader(rank, timing)` opens a loader;
    `loader`, if given, is one already open for the first epoch (the capped child's, primed).
    `emit(record)` is called with each record as it is made. The loader and the reader are closed
    on the way out, whatever happens."""
    rc, comm = ctx.cfg.run, ctx.comm
    files = regime.storage.files(reader)
    bounds = reader.shards() if reader.supports_streaming else None  # the order's randomness, per shard
    records, checkpoints, method, settings = [], [], None, None
    counters = Counters(ctx.device)
    first = True
    try:
        for epoch, timing in epoch_plan(spec, rc):
            rank = shard_rank(comm.rank, comm.size, epoch, rc.shard_shift)
            fresh = loader is None or regime.fresh_loader or timing or (rc.shard_shift and comm.size > 1)
            if fresh and loader is not None:
                loader.close()
                loader = None
            state = regime.before(reader, files)
            method = state.method or method
            if loader is None:
                loader = open_loader(rank, timing)
                first = True
            comm.barrier()
            drops = DropWatch()  # page-cache drops by other processes from here to the epoch's end
            counters.start(loader.worker_pids)  # none yet for a fresh pool: its workers count from zero
            t0 = time.perf_counter()  # before epoch(), which starts a fresh loader's workers: in ttfb and wall
            batches = loader.epoch(epoch)
            if ctx.gpu is not None:  # --device: each batch to the GPU before the next (inside the timing)
                ctx.gpu.reset()
                batches = ctx.gpu.wrap(batches)
            mine = time_batches(batches, timing, t0, None if timing else Compute.of(rc))
            io = {**counters.stop(loader.worker_pids), "cache_drops": drops.foreign()}
            state = regime.after(files, state)
            if ctx.gpu is not None:
                io = {**io, "h2d_bytes": ctx.gpu.bytes, "h2d_transfers": ctx.gpu.transfers, "h2d_s": ctx.gpu.copy_s,
                      "h2d_stage_s": ctx.gpu.stage_s}
            record = ctx.aggregate(epoch, repeat, first, timing, mine, io, state, len(reader), bounds)
            first = False
            if record is not None:
                record = regime.dropped(regime.finish(record))
                records.append(record)
                if emit is not None:
                    emit(record)
            every = ctx.cfg.checkpoint_every
            if every and regime.checkpoints and not timing and (epoch + 1) % every == 0 and comm.rank == 0:
                checkpoints.append(write_checkpoint(ctx.checkpoint_path, ctx.cfg.checkpoint_mb, repeat, epoch))
            comm.barrier()
            settings = getattr(loader, "settings", settings)
    finally:
        if loader is not None:
            loader.close()
        reader.close()
    return Epochs(tuple(records), tuple(checkpoints), method, settings)


def write_checkpoint(path: Path, mb: float, repeat: int, epoch: int) -> Checkpoint:
    """Write `mb` MB and fsync, as a training job saving its model would; timed, then removed."""
    total = int(mb * 1e6)
    block = np.random.default_rng(epoch).integers(0, 256, min(total, 4 << 20), dtype=np.uint8)
    t0 = time.perf_counter()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            left = total
            while left:
                left -= os.write(fd, block[: min(left, block.size)])
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as exc:  # Ctrl-C, SIGTERM, a full disk: no half checkpoint left behind
        path.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        raise LayoutbenchError(f"writing a {mb:g} MB checkpoint to {path} failed ({exc.strerror}); free space or "
                               f"give --checkpoint-dir on another disk, and rerun") from None
    seconds = time.perf_counter() - t0
    path.unlink()
    return Checkpoint(repeat, epoch, total, seconds)

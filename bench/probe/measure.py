"""The measurement loop and its counters: batches timed as they arrive, process and device
counters around an epoch, the every-index-once check, and the null loader (the harness's own cost).

The loop times batches, not samples: one clock read, one append and one addition per batch, so
the harness costs a few nanoseconds per sample (the null-loader floor measures it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from generator.errors import LayoutbenchError

from . import probes


@dataclass
class RankEpoch:
    """What one rank measured in one epoch (plain data: it travels to rank 0)."""

    seconds: float
    ttfb_s: float
    samples: int
    nbytes: int
    batch_ns: np.ndarray
    sample_ns: np.ndarray
    indices: np.ndarray
    compute_s: float = 0.0  # emulated compute spent (measured around each step)
    au_span_s: float = 0.0  # AU's running time: the epoch, from t0 to the end of the last step
    # timing epochs: each sample's read and decode wall time (ns), and the CPU seconds of each
    # summed over the samples (loaders.stages.SPLIT_COLUMNS); empty / None otherwise
    read_ns: np.ndarray | None = None
    decode_ns: np.ndarray | None = None
    read_cpu_s: float | None = None
    decode_cpu_s: float | None = None


@dataclass(frozen=True)
class Compute:
    """Emulated compute: after each batch the consumer spends `per_batch_s` + `per_sample_s` x its
    samples, as a training step would, while the loader's workers go on prefetching. `busy`:
    spin on the clock (exact below a millisecond, where sleep overshoots by tens of
    microseconds; it holds a core and the GIL, like a CPU-bound step) instead of sleeping
    (releases both, like a step on an accelerator)."""

    per_batch_s: float = 0.0
    per_sample_s: float = 0.0
    busy: bool = False

    @classmethod
    def of(cls, rc) -> "Compute | None":
        """A RunConfig's compute, or None when it has none."""
        if not (rc.compute_ms > 0 or rc.compute_ms_per_sample > 0):
            return None
        return cls(rc.compute_ms / 1e3, rc.compute_ms_per_sample / 1e3, rc.compute_busy)

    def seconds(self, samples: int) -> float:
        return self.per_batch_s + self.per_sample_s * samples


def spin(seconds: float, clock=time.perf_counter) -> None:
    end = clock() + seconds
    while clock() < end:
        pass


def time_batches(batches, timing: bool = False, t0: float | None = None, compute: Compute | None = None) -> RankEpoch:
    """Consume one epoch, timing each batch's arrival from `t0` (default: now; pass the time
    before the loader was asked for the epoch, so starting its workers counts). The loop body is
    one clock read, one append and one addition per batch (plus the per-sample times when the
    loader has them on): everything else is done after the epoch.

    With `compute`, each batch is followed by its emulated step: batch_ns is then the wait from
    the end of the previous step to the batch's arrival, seconds runs to the end of the last
    step, compute_s is the time measured around the steps, and au_span_s is the whole epoch (see
    bench/results/au.py for why the first wait is kept in)."""
    if compute is not None:
        return _time_with_compute(batches, t0, compute)
    clock = time.perf_counter
    stamps, kept, timed = [], [], []
    stamp, keep, keep_timed = stamps.append, kept.append, timed.append
    nbytes = 0
    t0 = clock() if t0 is None else t0
    if timing:
        for b in batches:
            stamp(clock())
            keep(b.indices)
            nbytes += b.nbytes
            keep_timed(b.sample_split)
    else:
        for b in batches:
            stamp(clock())
            keep(b.indices)
            nbytes += b.nbytes
    if not stamps:
        return RankEpoch(0.0, 0.0, 0, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    t = np.asarray(stamps)
    waits = np.diff(t, prepend=t0)
    indices = np.concatenate([np.asarray(k, np.int64).ravel() for k in kept])
    timed = [x for x in timed if x is not None]
    split = np.concatenate([np.asarray(x, np.float64).reshape(-1, 4) for x in timed]) if timed else None
    ns = (lambda col: np.round(split[:, col] * 1e9).astype(np.int64)) if split is not None else None
    sample_ns = ns(0) + ns(1) if split is not None else np.zeros(0, np.int64)
    return RankEpoch(float(t[-1] - t0), float(t[0] - t0), int(indices.size), int(nbytes),
                     np.round(waits * 1e9).astype(np.int64), sample_ns, indices,
                     read_ns=ns(0) if split is not None else None, decode_ns=ns(1) if split is not None else None,
                     read_cpu_s=float(split[:, 2].sum()) if split is not None else None,
                     decode_cpu_s=float(split[:, 3].sum()) if split is not None else None)


def _time_with_compute(batches, t0, compute: Compute) -> RankEpoch:
    clock = time.perf_counter
    arrivals, ends, kept = [], [], []
    nbytes = 0
    wait = spin if compute.busy else time.sleep
    per_batch, per_sample = compute.per_batch_s, compute.per_sample_s
    t0 = clock() if t0 is None else t0
    for b in batches:
        arrivals.append(clock())
        kept.append(b.indices)
        nbytes += b.nbytes
        wait(per_batch + per_sample * len(b.indices))
        ends.append(clock())
    if not arrivals:
        return RankEpoch(0.0, 0.0, 0, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    a, e = np.asarray(arrivals), np.asarray(ends)
    waits = a - np.concatenate([[t0], e[:-1]])
    indices = np.concatenate([np.asarray(k, np.int64).ravel() for k in kept])
    return RankEpoch(float(e[-1] - t0), float(a[0] - t0), int(indices.size), int(nbytes),
                     np.round(waits * 1e9).astype(np.int64), np.zeros(0, np.int64), indices,
                     float((e - a).sum()), float(e[-1] - t0))


class NullBatch:
    __slots__ = ("nbytes", "indices", "sample_seconds", "sample_split")

    def __init__(self, batch_size: int, nbytes: int):
        self.nbytes, self.indices, self.sample_seconds, self.sample_split = nbytes, np.arange(batch_size), None, None


def null_batches(samples: int, batch_size: int):
    """A loader that costs nothing: the same prebuilt batch, samples // batch_size times."""
    batch = NullBatch(batch_size, batch_size)
    for _ in range(samples // batch_size):
        yield batch


def null_floor(samples: int, batch_size: int, repeats: int = 3) -> tuple[int, float]:
    """(samples, best seconds) of the harness's own loop over the null loader."""
    best = min(time_batches(null_batches(samples, batch_size)).seconds for _ in range(repeats))
    return samples // batch_size * batch_size, best


class Counters:
    """Process and device counters around one epoch (read while the workers are still alive)."""

    def __init__(self, device: probes.BlockDevice | None):
        self.device = device

    def start(self, pids):
        self.before = probes.sample_processes([0, *pids])
        self.sectors = self.device.sectors_read() if self.device else None

    def stop(self, pids) -> dict:
        after = probes.sample_processes([0, *pids])
        sectors = self.device.sectors_read() - self.sectors if self.device else None
        totals, lost = probes.counters_delta(self.before, after)
        return {**totals, "lost": len(lost), "sectors": sectors}


def check_indices(index_lists, n: int, may_drop: int, epoch: int) -> None:
    """Every index exactly once per epoch across workers and ranks (drop_last may leave out at
    most `may_drop`: a partial batch per rank): a skipped or doubled sample would make the
    throughput untrue, so fail loudly."""
    everything = np.concatenate([np.asarray(i, np.int64).ravel() for i in index_lists])
    outside = int(((everything < 0) | (everything >= n)).sum())
    hits = np.bincount(everything[(everything >= 0) & (everything < n)], minlength=n)
    doubled, missing = int((hits > 1).sum()), int((hits == 0).sum())
    if outside or doubled or missing > may_drop:
        raise LayoutbenchError(f"epoch {epoch}: the loader delivered {everything.size:,} indices for {n:,} samples "
                               f"({missing:,} missing, {doubled:,} more than once, {outside:,} out of range); "
                               f"a throughput over a wrong epoch would be untrue")

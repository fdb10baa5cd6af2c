"""The pipeline's stages as plain functions: order -> shard -> batches -> fetch.

    plan = batch_plan(epoch_indices(n, seed, epoch, "shuffle", rank, world), batch_size)
    for idx in plan: images, indices, nbytes, seconds = fetch(reader, idx, "decoded", out)

`fetch` is the work of every worker, serial, thread or process. Its variants are what the
bench measures: `decoded` (the reader's batch path, pixels into `out`), `raw` (payload bytes
only), `timed` (one sample at a time, each timed and its time split into read and decode: the
latency epoch), `timed-raw` (the same without decoding: the latency epoch of a payload-bytes run)
and `naive` (the reader's naive baseline: plain library calls, as a user without this project
would write them).

What the timed fetches count, per sample (Batch.sample_split, SPLIT_COLUMNS):
- read: `reader.read(i)`, the payload's I/O (a read from storage or the page cache, an LMDB get,
  an HDF5 slice, a map copy) and its checks (size; crc32 with verify);
- decode: `reader.decode(payload, i)` and the copy of its pixels into the batch array (for raw
  and uncompressed TIFF payloads the decode is a view, so this is that copy); 0 in `timed-raw`;
- wall: time.perf_counter around each; CPU: time.thread_time (CLOCK_THREAD_CPUTIME_ID) of the
  thread doing the work. That thread is the worker's own: a loader thread (thread workers), the
  worker process's main thread (process workers), or the calling thread (no workers), so the
  figures are right for each kind. Not counted: CPU of helper threads a codec library may start
  (the epoch's process CPU, EpochRecord.cpu_s, has it) and, in wall time, nothing else; but with
  more workers than cores, or thread workers contending for the GIL, wall time includes waiting
  to run, which CPU time does not.
The clocks are read so that neither wall span contains a CPU-clock call (a syscall, about a
microsecond in a VM): the cost the timing adds is measured by `split_overhead` over a reader that
costs nothing, and the bench records it beside the runs (Floors.split_*).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from generator.errors import UsageError

from . import sampler
from .base import Reader

FETCHES = ("decoded", "raw", "timed", "naive")


@dataclass
class Batch:
    images: np.ndarray | list | None  # (B, H, W, C); a list of (h, w, C) when shapes vary; None: not decoded
    labels: np.ndarray
    indices: np.ndarray
    nbytes: int  # payload bytes read for this batch
    sample_seconds: np.ndarray | None = None  # per-sample read + decode wall seconds (timed fetches)
    # timed fetches: each sample's time split, (B, 4) seconds (SPLIT_COLUMNS): read wall, decode
    # wall, read CPU, decode CPU (CPU = the working thread's: time.thread_time). None otherwise.
    sample_split: np.ndarray | None = None


def epoch_indices(n: int, seed: int, epoch: int, mode: str, rank: int = 0, world: int = 1, **opts) -> np.ndarray:
    """This rank's indices of `epoch`, in reading order (every index once across the ranks)."""
    if mode == "shards":  # ranks take whole shards, not a slice of one order
        opts = {**sampler.DEFAULTS["shards"], **opts}
        return sampler.shard_stream(n, seed, epoch, opts["shards"], int(opts["buffer_size"]), rank, world)
    return sampler.shard(sampler.epoch_order(n, seed, epoch, mode, **opts), rank, world)


def batch_plan(order: np.ndarray, batch_size: int, drop_last: bool = False) -> list[np.ndarray]:
    return sampler.batches(order, batch_size, drop_last)


def fetch_kind(decode: bool, timing: bool, naive: bool) -> str:
    if naive:
        if timing or not decode:
            raise UsageError("a naive baseline reads decoded batches, without per-sample timing")
        return "naive"
    if timing:
        return "timed" if decode else "timed-raw"
    return "decoded" if decode else "raw"




SPLIT_COLUMNS = ("read_s", "decode_s", "read_cpu_s", "decode_cpu_s")  # Batch.sample_split's columns
BOUND_RATIO = 2.0  # bound_by: one side more than this x the other bounds the sample


def make_batch(images, labels, indices, nbytes: int, split) -> Batch:
    """A Batch from a fetch's result; `split` (timed fetches: (B, 4) seconds, SPLIT_COLUMNS) also
    gives each sample's read + decode wall time (sample_seconds)."""
    if split is None:
        return Batch(images, labels, indices, nbytes)
    split = np.asarray(split, np.float64)
    return Batch(images, labels, indices, nbytes, split[:, 0] + split[:, 1], split)


def fetch(reader: Reader, indices: np.ndarray, how: str, out=None):
    """(images or None, indices in the order read, payload bytes, split or None), where split is
    the timed fetches' per-sample (B, 4) seconds (SPLIT_COLUMNS; see the module's docstring)."""
    if how == "decoded":
        images, nbytes = reader.read_batch(indices, out)
        return images, indices, nbytes, None
    if how == "raw":
        return None, indices, sum(map(len, reader.read_many(indices))), None
    if how == "naive":
        images, order, nbytes = reader.naive_batch(indices)
        return images, order, nbytes, None
    if how in ("timed", "timed-raw"):
        return _timed(reader, indices, how == "timed", out)
    raise UsageError(f"unknown fetch {how!r}; choose from {', '.join(FETCHES)}, timed-raw")


def timed_split(reader: Reader, indices: np.ndarray, out=None, decode: bool = True):
    """(images or None, indices, payload bytes, split): the timed fetch, one sample at a time, its
    time split into read and decode, wall and CPU ((B, 4) seconds, SPLIT_COLUMNS; what each counts
    is in the module's docstring). `decode` False: read only (the decode columns are 0)."""
    return _timed(reader, indices, decode, out)


def bound_by(read_s: float, decode_s: float, ratio: float = BOUND_RATIO) -> str:
    """What bounded samples that took `read_s` to read and `decode_s` to decode (wall seconds per
    sample, or totals: only their ratio counts): "decode" when decode took more than `ratio` x the
    read, "io" when the read took more than `ratio` x the decode, else "mixed". ValueError for a
    negative or non-finite time, or both zero (nothing was timed)."""
    a, b = float(read_s), float(decode_s)
    if not (np.isfinite(a) and np.isfinite(b) and a >= 0 and b >= 0) or a + b == 0:
        raise ValueError(f"bound_by needs read and decode times >= 0, not both 0; got {read_s!r}, {decode_s!r}")
    if b > ratio * a:
        return "decode"
    if a > ratio * b:
        return "io"
    return "mixed"


def _timed(reader: Reader, indices: np.ndarray, decode: bool, out):
    """One sample at a time, so each one can be timed (read, then decode). Per sample: two
    CPU-clock reads (c1 between read and decode, c2 after; the first sample's start is read once
    before the loop) and four wall-clock reads, so that the wall spans [t0, t1] and [t1b, t2]
    hold no CPU-clock call; each CPU span holds about one CPU-clock call's own cost (measured
    by split_overhead)."""
    clock, cpu = time.perf_counter, time.thread_time
    n = len(indices)
    split = np.zeros((n, 4))
    if not decode:
        images = None
    elif getattr(reader, "variable", False):
        images = reader.batch_list(indices, out)
    else:
        images = reader.batch_array(n, out)
    nbytes = 0
    c0 = cpu()
    for k, i in enumerate(indices.tolist()):
        t0 = clock()
        payload = reader.read(i)
        t1 = clock()
        c1 = cpu()
        if decode:
            t1b = clock()
            images[k][...] = reader.decode(payload, i)
            t2 = clock()
            c2 = cpu()
            split[k] = (t1 - t0, t2 - t1b, c1 - c0, c2 - c1)
            c0 = c2
        else:
            split[k] = (t1 - t0, 0.0, c1 - c0, 0.0)
            c0 = c1
        nbytes += len(payload)
    return images, indices, nbytes, split


class NullReader:
    """A reader that costs nothing: read returns one prebuilt payload, decode one prebuilt image
    (the loop around them is what split_overhead times)."""

    def __init__(self, shape=(1, 1, 1)):
        self.payload, self.image = b"x", np.zeros(shape, np.uint8)

    def batch_array(self, n: int, out=None) -> np.ndarray:
        return np.empty((n, *self.image.shape), np.uint8) if out is None else out

    def read(self, i):
        return self.payload

    def decode(self, payload, i=None):
        return self.image


def split_overhead(samples: int = 20_000, repeats: int = 3) -> dict:
    """The timing's own cost, over NullReader (best of `repeats`, in this thread): `samples`, the
    seconds of the timed loop and of the same loop untimed (`timed_s`, `plain_s`: their difference
    over samples is what the timing adds per sample), and the summed split columns (`read_s`,
    `decode_s`, `read_cpu_s`, `decode_cpu_s`): what each column measures when there is nothing to
    measure (the clock calls inside its span, plus the null reader's one-pixel copy in decode),
    the floor under every figure of that column."""
    r, idx = NullReader(), np.arange(samples)
    out = r.batch_array(samples)
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        split = _timed(r, idx, True, out)[3]
        timed = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k, i in enumerate(idx.tolist()):  # the same work, untimed
            payload = r.read(i)
            out[k] = r.decode(payload, i)
        plain = time.perf_counter() - t0
        if best is None or timed - plain < best["timed_s"] - best["plain_s"]:
            sums = split.sum(axis=0)
            best = {"samples": samples, "timed_s": timed, "plain_s": plain,
                    **{c: float(v) for c, v in zip(SPLIT_COLUMNS, sums)}}
    return best

"""The pipeline's stages as plain functions: order -> shard -> batches -> fetch.

    plan = batch_plan(epoch_indices(n, seed, epoch, "shuffle", rank, world), batch_size)
    for idx in plan: images, indices, nbytes, seconds = fetch(reader, idx, "decoded", out)

`fetch` is the work of every worker, serial, thread or process. Its variants are what the
bench measures: `decoded` (the reader's batch path, pixels into `out`), `raw` (payload bytes
only), `timed` (one sample at a time, each timed: the latency epoch), and `naive` (the reader's
naive baseline: plain library calls, as a user without this project would write them).
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
    sample_seconds: np.ndarray | None = None  # per-sample read + decode seconds (timed fetch)
    # timed fetch: each sample's time split, (B, 4) seconds: read wall, decode wall, read CPU,
    # decode CPU (CPU = this thread's CPU time: time.thread_time). None otherwise.
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
    return "timed" if timing else "decoded" if decode else "raw"


def fetch(reader: Reader, indices: np.ndarray, how: str, out=None):
    """(images or None, indices in the order read, payload bytes, per-sample seconds or None)."""
    if how == "decoded":
        images, nbytes = reader.read_batch(indices, out)
        return images, indices, nbytes, None
    if how == "raw":
        return None, indices, sum(map(len, reader.read_many(indices))), None
    if how == "naive":
        images, order, nbytes = reader.naive_batch(indices)
        return images, order, nbytes, None
    if how in ("timed", "timed-raw"):
        return _timed(reader, indices, how == "timed", out)[:4]
    raise UsageError(f"unknown fetch {how!r}; choose from {', '.join(FETCHES)}")


def timed_split(reader: Reader, indices: np.ndarray, out=None):
    """(images, indices, nbytes, seconds, split): the timed fetch with each sample's time split
    into read and decode, wall and CPU (see Batch.sample_split). Read: reader.read(i), the
    payload's I/O and checks; decode: reader.decode of it into the batch. A sample whose read
    wall time is well above its read CPU time waited for storage (I/O-bound); one whose decode
    time dominates is decode-bound (bound_by says which)."""
    return _timed(reader, indices, True, out)


def bound_by(split: np.ndarray) -> str:
    """'I/O' or 'decode': which of read and decode took most of the samples' wall time."""
    split = np.asarray(split, np.float64).reshape(-1, 4)
    return "decode" if split[:, 1].sum() > split[:, 0].sum() else "I/O"


def _timed(reader: Reader, indices: np.ndarray, decode: bool, out):
    """One sample at a time, so each one can be timed (read, then decode)."""
    clock, cpu = time.perf_counter, time.thread_time
    seconds = np.empty(len(indices))
    split = np.zeros((len(indices), 4))
    if not decode:
        images = None
    elif reader.variable:
        images = reader.batch_list(indices, out)
    else:
        images = reader.batch_array(len(indices), out)
    nbytes = 0
    for k, i in enumerate(indices.tolist()):
        c0, t0 = cpu(), clock()
        payload = reader.read(i)
        t1, c1 = clock(), cpu()
        if decode:
            images[k][...] = reader.decode(payload, i)
            t2, c2 = clock(), cpu()
        else:
            t2, c2 = t1, c1
        seconds[k] = t2 - t0
        split[k] = (t1 - t0, t2 - t1, c1 - c0, c2 - c1)
        nbytes += len(payload)
    return images, indices, nbytes, seconds, split

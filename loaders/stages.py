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
    images: np.ndarray | None  # (B, H, W, C), or None when not decoded
    labels: np.ndarray
    indices: np.ndarray
    nbytes: int  # payload bytes read for this batch
    sample_seconds: np.ndarray | None = None  # per-sample read + decode seconds (timed fetch)


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
        return _timed(reader, indices, how == "timed", out)
    raise UsageError(f"unknown fetch {how!r}; choose from {', '.join(FETCHES)}")


def _timed(reader: Reader, indices: np.ndarray, decode: bool, out):
    """One sample at a time, so each one can be timed (read + decode)."""
    clock = time.perf_counter
    seconds = np.empty(len(indices))
    images = reader.batch_array(len(indices), out) if decode else None
    nbytes = 0
    for k, i in enumerate(indices.tolist()):
        t0 = clock()
        payload = reader.read(i)
        if decode:
            images[k] = reader.decode(payload, i)
        seconds[k] = clock() - t0
        nbytes += len(payload)
    return images, indices, nbytes, seconds

"""The order of an epoch: pure functions of (n, seed, epoch, mode), and how it is shared out.

Modes:
- sequential: 0, 1, ..., n-1.
- shuffle: a full random permutation, a new one each epoch, the same for the same seed.
- block: FFCV-style quasi-random: blocks of `block_size` contiguous indices in random order,
  each block shuffled inside. Reads stay local (good for HDF5/LMDB pages) yet batches mix.
- buffer: WebDataset-style: a sequential stream through a shuffle buffer of `buffer_size`;
  an index leaves the buffer at a random step, never more than buffer_size places early.
- shards: how WebDataset and tf.data read record shards: the shards (boundaries from a streaming
  reader's shards(), option `shards`) in a new random order each epoch, each read front to back,
  the stream through a shuffle buffer of `buffer_size`. Ranks take contiguous runs of whole
  shards (when there are at least as many shards as ranks; else contiguous pieces of the stream)
  and shuffle their own stream (see shard_stream). Without boundaries the stream is one shard.

order_randomness(order, bounds) says how random an epoch's order was against a full shuffle.

shard(order, rank, world) gives each rank a contiguous share; worker_share gives each worker
every workers-th batch. Together they hand out every index exactly once per epoch.
"""

from __future__ import annotations

import numpy as np

from generator.errors import UsageError

MODES = ("sequential", "shuffle", "block", "buffer", "shards")
DEFAULTS = {"block": {"block_size": 256}, "buffer": {"buffer_size": 1024},
            "shards": {"buffer_size": 1024, "shards": None}}


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def epoch_order(n: int, seed: int = 0, epoch: int = 0, mode: str = "shuffle", **opts) -> np.ndarray:
    """Every index in range(n) exactly once, in the order `mode` gives for this epoch (int64)."""
    if mode not in MODES:
        raise UsageError(f"unknown shuffle mode {mode!r}; choose from: {', '.join(MODES)}")
    unknown = set(opts) - set(DEFAULTS.get(mode, {}))
    if unknown:
        allowed = ", ".join(DEFAULTS.get(mode, {})) or "none"
        raise UsageError(f"mode {mode!r} takes no option {', '.join(sorted(unknown))} (options: {allowed})")
    for name, value in opts.items():
        if name == "shards":
            continue  # boundaries, checked by shard_stream
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    if n < 0 or seed < 0 or epoch < 0:
        raise UsageError(f"n, seed and epoch must be >= 0, got {n}, {seed}, {epoch}")
    opts = {**DEFAULTS.get(mode, {}), **opts}
    if mode == "sequential":
        return np.arange(n, dtype=np.int64)
    rng = _rng(seed, epoch)
    if mode == "shuffle":
        return rng.permutation(n).astype(np.int64)
    if mode == "block":
        return _block_order(n, int(opts["block_size"]), rng)
    if mode == "shards":
        return shard_stream(n, seed, epoch, opts["shards"], int(opts["buffer_size"]))
    return _buffer_order(n, int(opts["buffer_size"]), rng)


def check_bounds(bounds, n: int) -> np.ndarray:
    """Shard boundaries as int64: 0 = b[0] < b[1] < ... < b[-1] = n, or UsageError. None: one shard
    of all n samples (no shards: n = 0)."""
    if bounds is None:
        return np.array([0, n] if n else [0], np.int64)
    b = np.asarray(bounds)
    if n == 0 and b.ndim == 1 and len(b) == 1 and b[0] == 0 and b.dtype.kind in "iu":
        return b.astype(np.int64)
    if b.ndim != 1 or b.dtype.kind not in "iu" or len(b) < 2 or b[0] != 0 or b[-1] != n or (np.diff(b) <= 0).any():
        raise UsageError(f"shard boundaries must rise from 0 to {n} (the sample count), got {b[:5]}...")
    return b.astype(np.int64)


def shard_stream(n: int, seed: int, epoch: int, bounds, buffer_size: int = 1024, rank: int = 0,
                 world: int = 1) -> np.ndarray:
    """Rank `rank`'s order in the `shards` mode: the shards in this epoch's random order (the same
    on every rank), rank r's contiguous run of them (shards k*r//world.. of the shuffled list; with
    fewer shards than ranks, its contiguous piece of the shuffled stream), through its own shuffle
    buffer of `buffer_size`. The ranks' orders together hold every index exactly once."""
    b = check_bounds(bounds, n)
    shard(b, rank, world)  # validates rank and world
    shards = len(b) - 1
    if not shards:
        return np.zeros(0, np.int64)
    perm = _rng(seed, epoch).permutation(shards)
    if shards >= world:
        mine = perm[rank * shards // world:(rank + 1) * shards // world]
        stream = np.concatenate([np.arange(b[k], b[k + 1]) for k in mine.tolist()] or [np.zeros(0, np.int64)])
    else:
        whole = np.concatenate([np.arange(b[k], b[k + 1]) for k in perm.tolist()])
        stream = whole[rank * n // world:(rank + 1) * n // world]
    if not len(stream):
        return stream.astype(np.int64)
    return stream[_buffer_order(len(stream), buffer_size, np.random.default_rng([seed, epoch, rank + 1]))]


def _block_order(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    blocks = -(-n // size)
    grid = np.arange(blocks * size, dtype=np.int64).reshape(blocks, size)[rng.permutation(blocks)]
    grid = rng.permuted(grid, axis=1)  # each block shuffled inside, independently
    order = grid.ravel()
    return order[order < n]  # drop the padding of the last, partial block


def _buffer_order(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    k = min(size, n)
    buf = list(range(k))
    out = np.empty(n, np.int64)
    # Once the buffer is full, each step emits a random slot and refills it with the next index.
    for t, j in enumerate(rng.integers(0, max(k, 1), n - k).tolist()):
        out[t] = buf[j]
        buf[j] = k + t
    out[n - k:] = rng.permutation(np.asarray(buf, np.int64))  # the stream ended: drain in random order
    return out


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank `rank`'s contiguous share of `order` (sizes differ by at most one; no index repeats)."""
    if not (isinstance(world, (int, np.integer)) and world >= 1):
        raise UsageError(f"world must be a positive integer, got {world!r}")
    if not (isinstance(rank, (int, np.integer)) and 0 <= rank < world):
        raise UsageError(f"rank must be in 0..{world - 1}, got {rank!r}")
    n = len(order)
    return order[rank * n // world:(rank + 1) * n // world]


def batches(order: np.ndarray, batch_size: int, drop_last: bool = False) -> list[np.ndarray]:
    """`order` cut into batches of `batch_size` (the last one shorter unless drop_last)."""
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    return [order[a:a + batch_size] for a in range(0, stop, batch_size)]


def worker_share(items: list, worker: int, workers: int) -> list:
    """Worker `worker`'s batches: every workers-th one (as torch's DataLoader deals them)."""
    if not 0 <= worker < workers:
        raise UsageError(f"worker must be in 0..{workers - 1}, got {worker}")
    return items[worker::workers]


def order_randomness(order: np.ndarray, bounds=None) -> dict:
    """How random an epoch's order (the indices in reading order) was, against a full shuffle:

    - displacement: the mean |reading position - stored position| over the samples, divided by a
      uniform random permutation's expected value, (n^2 - 1) / 3n: 0 for the stored order, about 1
      for a full shuffle (shard shuffling alone moves whole shards far and scores high here too);
    - same_shard: the share of consecutive samples that come from the same shard (None without
      boundaries), beside same_shard_shuffled, that share's expected value under a full shuffle
      (sum over shards of s(s-1), over n(n-1)): how local the order still is.
    """
    order = np.asarray(order, np.int64)
    n = len(order)
    out = {"displacement": None, "same_shard": None, "same_shard_shuffled": None}
    if n < 2:
        return out
    mad = float(np.abs(order - np.arange(n)).mean())
    out["displacement"] = mad / ((n * n - 1) / (3 * n))
    if bounds is not None:
        b = np.asarray(bounds, np.int64)
        of = np.searchsorted(b, order, side="right") - 1
        out["same_shard"] = float((of[1:] == of[:-1]).mean())
        sizes = np.diff(b).astype(np.float64)
        out["same_shard_shuffled"] = float((sizes * (sizes - 1)).sum() / (n * (n - 1)))
    return out

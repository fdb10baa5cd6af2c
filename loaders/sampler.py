"""The order of an epoch: pure functions of (n, seed, epoch, mode), and how it is shared out.

Modes:
- sequential: 0, 1, ..., n-1.
- shuffle: a full random permutation, a new one each epoch, the same for the same seed.
- block: FFCV-style quasi-random: blocks of `block_size` contiguous indices in random order,
  each block shuffled inside. Reads stay local (good for HDF5/LMDB pages) yet batches mix.
- buffer: WebDataset-style: a sequential stream through a shuffle buffer of `buffer_size`;
  an index leaves the buffer at a random step, never more than buffer_size places early.

shard(order, rank, world) gives each rank a contiguous share; worker_share gives each worker
every workers-th batch. Together they hand out every index exactly once per epoch.
"""

from __future__ import annotations

import numpy as np

from generator.errors import UsageError

MODES = ("sequential", "shuffle", "block", "buffer")
DEFAULTS = {"block": {"block_size": 256}, "buffer": {"buffer_size": 1024}}


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
    return _buffer_order(n, int(opts["buffer_size"]), rng)


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

"""The batch pipeline: the stages of loaders.stages run serially, in threads or in processes.

    loader = Loader(reader, batch_size=32, workers=2, worker_kind="fork")
    for batch in loader.epoch(0):   # Batch(images, labels, indices, nbytes, sample_seconds, sample_split)
        ...
    loader.close()

Batches come out in order, with at most `prefetch` in flight per worker; workers persist across
epochs (loaders.workers). One epoch at a time per Loader.

Batch images are views of a few blocks the Loader keeps (a BatchRing) and hands out again once
nothing references them any more, rather than fresh arrays: the kernel zeroes every page of a
fresh allocation on first touch, which for a 4K image costs about as much as the copy that fills
it. A batch you keep (or any view of it) is never overwritten; the blocks are freed by close().
"""

from __future__ import annotations

import numpy as np

from generator.errors import UsageError

from . import sampler
from .base import Reader
from .stages import Batch, batch_plan, epoch_indices, fetch, fetch_kind, make_batch
from .workers import STALL_SECONDS, WORKER_KINDS, BatchRing, ProcessPool, ThreadPool, WorkerError

# Upper bounds of the settings (a batch is at most a whole corpus; a results file holds int64)
LIMITS = {"batch_size": 1 << 25, "workers": 256, "prefetch": 1024, "seed": 2**63 - 1}
RING_MIN = 1 << 20  # batches smaller than this come from malloc's heap, already faulted in: no ring

__all__ = ["Batch", "Loader", "WorkerError", "WORKER_KINDS"]


class Loader:
    def __init__(self, reader: Reader, batch_size: int = 32, workers: int = 0, worker_kind: str = "thread",
                 shuffle: str = "shuffle", seed: int = 0, prefetch: int = 2, decode: bool = True,
                 drop_last: bool = False, rank: int = 0, world: int = 1, timing: bool = False,
                 naive: bool = False, stall_s: float = STALL_SECONDS, **order_opts):
        """`decode` False: payload bytes only; `timing`: per-sample timing (one sample at a time,
        each sample's time split into read and decode: Batch.sample_split, loaders.stages);
        `naive`: the reader's naive baseline (Reader.naive_batch) in the calling thread;
        `stall_s`: a worker that delivers no batch for this long ends the epoch with a WorkerError
        naming it, its batch and its state (a process: stopped, stuck in I/O; a thread: the call and
        file it is blocked in, loaders.stuck), never a silent hang. A stuck thread cannot be stopped:
        its pool is abandoned (daemon threads, which never keep the process from exiting)."""
        if not (isinstance(stall_s, (int, float)) and 0 < stall_s < float("inf")):
            raise UsageError(f"stall_s must be a positive number of seconds, got {stall_s!r}")
        self.stall_s = float(stall_s)
        for name, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0), ("prefetch", prefetch, 1),
                                 ("seed", seed, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= LIMITS[name]:
                raise UsageError(f"{name} must be an integer in [{low}, {LIMITS[name]:,}], got {value!r}")
        if worker_kind not in WORKER_KINDS:
            raise UsageError(f"worker_kind must be one of {', '.join(WORKER_KINDS)}, got {worker_kind!r}")
        sampler.shard(np.arange(0), rank, world)  # validates rank and world
        if shuffle == "shards":  # the reader's own shard stream
            if not reader.supports_streaming:
                raise UsageError(f"the shards order needs a streaming layout; the {reader.layout} reader "
                                 f"is not one (supports_streaming is False)")
            order_opts = {"shards": reader.shards(), **order_opts}
        if hasattr(reader, "read_as_stream"):  # a Reader's (a duck-typed one may lack it: nothing to turn on)
            reader.read_as_stream(shuffle == "shards")
        sampler.epoch_order(len(reader) if shuffle == "shards" else 0, seed, 0, shuffle,
                            **order_opts)  # validates the mode and its options
        # processes are forked, or spawned for a reader whose library a fork breaks (Reader.process_kind)
        worker_kind = "fork" if worker_kind == "process" else worker_kind
        if hasattr(reader, "process_kind"):
            worker_kind = reader.process_kind(worker_kind)
        self.reader, self.batch_size, self.workers, self.worker_kind = reader, batch_size, workers, worker_kind
        self.shuffle, self.seed, self.prefetch, self.decode = shuffle, seed, prefetch, decode
        self.drop_last, self.rank, self.world, self.timing = drop_last, rank, world, timing
        self.fetch = fetch_kind(decode, timing, naive)
        if naive and workers:
            raise UsageError("a naive baseline reads in the calling thread: workers must be 0")
        self.order_opts = order_opts
        self._pool = None
        self._ring = None

    def _batch_ring(self, keep: int) -> BatchRing | None:
        """The batch arrays' ring (None when batches are small or not decoded)."""
        spec = self.reader.spec
        if self.reader.variable:  # batches are lists of arrays of their own shapes: no blocks to reuse
            return None
        if self._ring is None and self.decode and self.batch_size * spec.pixel_bytes >= RING_MIN:
            self._ring = BatchRing(spec, self.batch_size, keep)
        return self._ring

    # -- the order ------------------------------------------------------------------------------

    def order(self, epoch: int) -> np.ndarray:
        """This rank's indices for `epoch`, in reading order."""
        return epoch_indices(len(self.reader), self.seed, epoch, self.shuffle, self.rank, self.world,
                             **self.order_opts)

    def batches(self, epoch: int) -> list[np.ndarray]:
        return batch_plan(self.order(epoch), self.batch_size, self.drop_last)

    def __len__(self) -> int:
        return len(self.batches(0))

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers now (else the first epoch starts them)."""
        if self._pool is None and self.workers:
            if self.worker_kind == "thread":
                self._pool = ThreadPool(self)
            else:
                self._pool = ProcessPool(self)

    @property
    def worker_pids(self) -> list[int]:
        return self._pool.pids if isinstance(self._pool, ProcessPool) else []

    def epoch(self, epoch: int = 0):
        """Yield the batches of `epoch` in order."""
        plan = self.batches(epoch)
        if not self.workers:
            return self._serial(plan)
        self.start()
        return self._pool.run(plan)

    def _serial(self, plan):
        reader, how = self.reader, self.fetch
        ring = self._batch_ring(3) if how != "naive" else None  # held by the caller, being read, a spare
        try:
            for idx in plan:
                images, idx, nbytes, split = fetch(reader, idx, how, ring and ring.get(len(idx)))
                yield make_batch(images, reader.labels(idx), idx, nbytes, split)
        finally:
            if how == "naive":
                reader.close_naive()

    def close(self) -> None:
        """Stop the workers and close every handle (needed before evicting the page cache)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._ring = None
        self.reader.close_naive()  # blocks still held by the caller's batches live on with them
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if self._pool is not None:
                self._pool.close()
        except Exception:
            pass



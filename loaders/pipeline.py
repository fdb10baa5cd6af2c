"""The batch pipeline: order -> fetch -> decode -> batch, in the caller, threads or processes.

    loader = Loader(reader, batch_size=32, workers=2, worker_kind="fork")
    for batch in loader.epoch(0):   # Batch(images, labels, indices, nbytes, sample_seconds)
        ...
    loader.close()

Batch k of an epoch is fetched by worker k % workers and batches come out in order, with at
most `prefetch` batches in flight per worker. Workers persist across epochs. A process worker
gets the reader pickled (no handles: it opens its own) through its pipe, decodes straight
into shared-memory slots (pixels are never pickled), and the parent copies each batch out of
its slot, so a batch stays valid after the next one arrives. Any failure in a worker is raised
here: a SampleError as itself, a dead worker as WorkerError. Nothing is skipped, nothing hangs.
One epoch at a time per Loader.

Batch images are views of a few blocks the Loader keeps (a _Ring) and hands out again once
nothing references them any more, rather than fresh arrays: the kernel zeroes every page of a
fresh allocation on first touch, which for a 46 MB 4K image costs about as much as the copy that
fills it. A batch you keep (or any view of it) is never overwritten; the blocks are freed by
close().
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import select
import struct
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from generator.errors import LayoutbenchError, SampleError, UsageError

from . import sampler
from .base import Reader

WORKER_KINDS = ("thread", "fork", "spawn")
POLL_SECONDS = 1.0  # how often a waiting parent checks that its workers are alive
RING_MIN = 1 << 20  # batches smaller than this come from malloc's heap, already faulted in: no ring


class WorkerError(LayoutbenchError):
    """A worker process died or failed with something other than a SampleError."""


@dataclass
class Batch:
    images: np.ndarray | None  # (B, H, W, C), or None when decode=False
    labels: np.ndarray
    indices: np.ndarray
    nbytes: int  # payload bytes read for this batch
    sample_seconds: np.ndarray | None = None  # per-sample read + decode seconds (timing=True)


class _Ring:
    """Batch arrays for one Loader, reused once nothing references them.

    Each array handed out is a view of a block this ring owns (numpy collapses a view's base to
    the array that owns the memory, so every view, memoryview or array derived from a batch holds
    a reference to its block). A block whose reference count is back to the ring's own is free:
    no batch of it is alive, and reusing it cannot change anything the caller sees. At most
    `keep` blocks are kept; beyond that a batch gets a plain fresh array. Used by one thread."""

    def __init__(self, spec, batch_size: int, keep: int):
        self.shape, self.dtype, self.keep = tuple(spec.shape), spec.np_dtype, keep
        self.item_bytes = spec.pixel_bytes
        self.block_bytes = batch_size * spec.pixel_bytes
        self.blocks: list[np.ndarray] = []
        self.idle = self._refs([np.empty(0, np.uint8)], 0)  # the count of a block nobody else holds

    @staticmethod
    def _refs(blocks: list, k: int) -> int:
        return sys.getrefcount(blocks[k])

    def get(self, n: int) -> np.ndarray:
        """An uninitialised (n, H, W, C) array of the spec's dtype, n <= batch_size."""
        blocks = self.blocks
        for k in range(len(blocks)):
            if self._refs(blocks, k) == self.idle:
                return self._view(blocks[k], n)
        if len(blocks) < self.keep:
            blocks.append(np.empty(self.block_bytes, np.uint8))
            return self._view(blocks[-1], n)
        return np.empty((n, *self.shape), self.dtype)

    def _view(self, block: np.ndarray, n: int) -> np.ndarray:
        return block[:n * self.item_bytes].view(self.dtype).reshape(n, *self.shape)


def fetch(reader: Reader, indices: np.ndarray, decode: bool, timing: bool, out=None):
    """(images or None, nbytes, sample_seconds or None) of one batch: the work of every worker."""
    if timing:  # one sample at a time, so each one can be timed
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
        return images, nbytes, seconds
    if decode:
        images, nbytes = reader.read_batch(indices, out)
        return images, nbytes, None
    return None, sum(map(len, reader.read_many(indices))), None


class Loader:
    def __init__(self, reader: Reader, batch_size: int = 32, workers: int = 0, worker_kind: str = "thread",
                 shuffle: str = "shuffle", seed: int = 0, prefetch: int = 2, decode: bool = True,
                 drop_last: bool = False, rank: int = 0, world: int = 1, timing: bool = False, **order_opts):
        for name, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0), ("prefetch", prefetch, 1),
                                 ("seed", seed, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
        if worker_kind not in WORKER_KINDS:
            raise UsageError(f"worker_kind must be one of {', '.join(WORKER_KINDS)}, got {worker_kind!r}")
        sampler.shard(np.arange(0), rank, world)  # validates rank and world
        sampler.epoch_order(0, seed, 0, shuffle, **order_opts)  # validates the mode and its options
        self.reader, self.batch_size, self.workers, self.worker_kind = reader, batch_size, workers, worker_kind
        self.shuffle, self.seed, self.prefetch, self.decode = shuffle, seed, prefetch, decode
        self.drop_last, self.rank, self.world, self.timing = drop_last, rank, world, timing
        self.order_opts = order_opts
        self._pool = None
        self._ring = None

    def _batch_ring(self, keep: int) -> _Ring | None:
        """The batch arrays' ring (None when batches are small or not decoded)."""
        spec = self.reader.spec
        if self._ring is None and self.decode and self.batch_size * spec.pixel_bytes >= RING_MIN:
            self._ring = _Ring(spec, self.batch_size, keep)
        return self._ring

    # -- the order ------------------------------------------------------------------------------

    def order(self, epoch: int) -> np.ndarray:
        """This rank's indices for `epoch`, in reading order."""
        full = sampler.epoch_order(len(self.reader), self.seed, epoch, self.shuffle, **self.order_opts)
        return sampler.shard(full, self.rank, self.world)

    def batches(self, epoch: int) -> list[np.ndarray]:
        return sampler.batches(self.order(epoch), self.batch_size, self.drop_last)

    def __len__(self) -> int:
        return len(self.batches(0))

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers now (else the first epoch starts them)."""
        if self._pool is None and self.workers:
            if self.worker_kind == "thread":
                self._pool = _ThreadPool(self)
            else:
                self._pool = _ProcessPool(self)

    @property
    def worker_pids(self) -> list[int]:
        return self._pool.pids if isinstance(self._pool, _ProcessPool) else []

    def epoch(self, epoch: int = 0):
        """Yield the batches of `epoch` in order."""
        plan = self.batches(epoch)
        if not self.workers:
            return self._serial(plan)
        self.start()
        return self._pool.run(plan)

    def _serial(self, plan):
        reader, decode, timing = self.reader, self.decode, self.timing
        ring = self._batch_ring(3)  # the batch the caller holds, the one being read, one spare
        for idx in plan:
            images, nbytes, seconds = fetch(reader, idx, decode, timing, ring and ring.get(len(idx)))
            yield Batch(images, reader.labels(idx), idx, nbytes, seconds)

    def close(self) -> None:
        """Stop the workers and close every handle (needed before evicting the page cache)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._ring = None  # blocks still held by the caller's batches live on with them
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


class _ThreadPool:
    def __init__(self, loader: Loader):
        self.loader = loader
        self.executor = cf.ThreadPoolExecutor(loader.workers, thread_name_prefix="loader")

    def run(self, plan):
        ld = self.loader
        window = ld.workers * ld.prefetch
        ring = ld._batch_ring(window + 3)  # in flight, held by the caller, in hand here, one spare
        pending: deque = deque()  # (indices, future), oldest first
        nxt = 0
        try:
            while nxt < len(plan) or pending:
                while nxt < len(plan) and len(pending) < window:
                    out = ring and ring.get(len(plan[nxt]))
                    pending.append((plan[nxt], self.executor.submit(fetch, ld.reader, plan[nxt], ld.decode, ld.timing,
                                                                    out)))
                    del out
                    nxt += 1
                idx, future = pending[0]
                images, nbytes, seconds = future.result()
                pending.popleft()
                yield Batch(images, ld.reader.labels(idx), idx, nbytes, seconds)
        finally:  # an error or an abandoned epoch: let in-flight batches finish, drop them
            for _, f in pending:
                f.cancel()
            cf.wait([f for _, f in pending])

    def close(self):
        self.executor.shutdown(wait=True, cancel_futures=True)


_TASK = struct.Struct("<qq")  # a task: seq, slot, then the batch's indices as int64 bytes; b"" stops


def _worker_main(conn, shm_name, slot_bytes: int, decode: bool, timing: bool):
    """A process worker: its reader, then tasks in, (seq, nbytes, seconds, error) out, until b"".
    The reader comes through the pipe, not the Process arguments: spawn writes those to the child
    before it runs, and a child that dies early leaves that write hanging. Tasks are plain bytes,
    not pickles: for small batches the parent's per-batch work is what limits process workers."""
    shm = shared_memory.SharedMemory(name=shm_name) if shm_name else None
    reader = None
    try:
        reader = conn.recv()
        while task := conn.recv_bytes():
            seq, slot = _TASK.unpack_from(task)
            idx = np.frombuffer(task, np.int64, offset=_TASK.size)
            conn.send(_work(reader, shm, slot_bytes, decode, timing, seq, slot, idx))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # the parent went away or was interrupted
    finally:
        if reader is not None:
            reader.close()
        if shm is not None:
            shm.close()


def _work(reader: Reader, shm, slot_bytes: int, decode: bool, timing: bool, seq: int, slot: int, idx):
    """One batch in a worker, into its shared-memory slot; errors come back as plain tuples."""
    try:
        out = None
        if shm is not None:
            out = np.ndarray((len(idx), *reader.spec.shape), reader.spec.np_dtype, shm.buf, slot * slot_bytes)
        _, nbytes, seconds = fetch(reader, idx, decode, timing, out)
        return seq, nbytes, seconds, None
    except SampleError as exc:
        return seq, 0, None, ("sample", exc.layout, exc.index, exc.where, exc.problem)
    except Exception as exc:
        return seq, 0, None, ("other", f"{type(exc).__name__}: {exc}", traceback.format_exc())


class _ProcessPool:
    def __init__(self, loader: Loader):
        ld = self.loader = loader
        spec = ld.reader.spec
        self.slot_bytes = ld.batch_size * spec.pixel_bytes if ld.decode else 0
        ctx = multiprocessing.get_context(ld.worker_kind)
        ld.reader.close()  # workers get a pickled reader, without handles, and open their own
        self.conns, self.procs, self.shms = [], [], []
        self.broken = False
        try:
            for w in range(ld.workers):
                shm = None
                if self.slot_bytes:
                    shm = shared_memory.SharedMemory(create=True, size=ld.prefetch * self.slot_bytes)
                    self.shms.append(shm)
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker_main, name=f"loader-{ld.worker_kind}-{w}", daemon=True,
                                args=(child, shm.name if shm else None, self.slot_bytes, ld.decode, ld.timing))
                p.start()
                child.close()  # the worker holds the only other end: its death breaks the pipe
                self.conns.append(parent)
                self.procs.append(p)
            for w, (conn, p) in enumerate(zip(self.conns, self.procs)):
                try:
                    conn.send(ld.reader)
                except OSError:
                    p.join(5)
                    raise WorkerError(f"{ld.worker_kind} worker {w} (pid {p.pid}) died while starting (exit code "
                                      f"{p.exitcode}); with spawn, the main module must be importable and guard "
                                      f"its code with if __name__ == '__main__'") from None
        except BaseException:
            self.close()
            raise
        self.pids = [p.pid for p in self.procs]
        self.inflight = [0] * ld.workers
        self.results: dict = {}
        self.pollers = []  # one poll object per pipe: a single syscall per wait
        for conn in self.conns:
            self.pollers.append(select.poll())
            self.pollers[-1].register(conn.fileno(), select.POLLIN)

    def _receive(self, want: int) -> None:
        """Wait until the result of batch `want` has arrived from its worker (want % workers),
        checking every POLL_SECONDS that the worker lives."""
        w = want % len(self.conns)
        while want not in self.results:
            if self.pollers[w].poll(POLL_SECONDS * 1000):
                if not self._drain(w) and want not in self.results:
                    self._died(w)  # its end of the pipe is closed: nothing more will come
            elif not self.procs[w].is_alive():
                self._drain(w)  # what it sent before dying still counts
                if want not in self.results:
                    self._died(w)

    def _died(self, w: int):
        p = self.procs[w]
        p.join(5)  # a pipe can break before the process is reaped: wait for its exit code
        self.broken = True
        raise WorkerError(f"{self.loader.worker_kind} worker {w} (pid {p.pid}) died with exit code {p.exitcode} "
                          f"while reading {self.loader.reader.layout} batches; see its output above")

    def _drain(self, w: int) -> bool:
        """Take every message worker w has sent; False when its pipe is closed (it is gone)."""
        conn, poller = self.conns[w], self.pollers[w]
        try:
            while poller.poll(0):
                msg = conn.recv()
                self.results[msg[0]] = msg
        except (EOFError, OSError):
            return False
        return True

    def run(self, plan):
        ld = self.loader
        W, spec = ld.workers, ld.reader.spec
        ring = ld._batch_ring(3)
        sent = done = 0
        try:
            while done < len(plan):
                while sent < len(plan) and self.inflight[sent % W] < ld.prefetch:
                    w = sent % W
                    slot = (sent // W) % ld.prefetch  # in-order consumption frees this worker's slots in turn
                    try:
                        self.conns[w].send_bytes(_TASK.pack(sent, slot) + plan[sent].astype(np.int64, copy=False).tobytes())
                    except OSError:  # a broken pipe: the worker is dead
                        self._died(w)
                    self.inflight[w] += 1
                    sent += 1
                self._receive(done)
                _, nbytes, seconds, error = self.results.pop(done)
                w, slot, idx = done % W, (done // W) % ld.prefetch, plan[done]
                self.inflight[w] -= 1
                done += 1
                if error is not None:
                    self._raise(w, error)
                images = None
                if ld.decode:  # copied out: the slot is refilled while the caller still holds the batch
                    shape = (len(idx), *spec.shape)
                    slot_view = np.ndarray(shape, spec.np_dtype, self.shms[w].buf, slot * self.slot_bytes)
                    images = ring.get(len(idx)) if ring else np.empty(shape, spec.np_dtype)
                    np.copyto(images, slot_view)
                    del slot_view
                yield Batch(images, ld.reader.labels(idx), idx, nbytes, seconds)
        finally:  # an error or an abandoned epoch: collect what is still in flight
            if not self.broken:
                try:
                    for seq in range(done, sent):
                        self._receive(seq)
                        self.results.pop(seq)
                        self.inflight[seq % W] -= 1
                except WorkerError:
                    pass
            self.results.clear()
            if self.broken:
                self.loader._pool = None
                self.close()

    def _raise(self, w: int, error):
        if error[0] == "sample":
            raise SampleError(*error[1:])
        raise WorkerError(f"{self.loader.worker_kind} worker {w} (pid {self.procs[w].pid}) failed: {error[1]}\n"
                          f"{error[2]}")

    def close(self):
        for c in self.conns:
            try:
                c.send_bytes(b"")
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for c in self.conns:
            c.close()
        for shm in self.shms:
            shm.close()
            shm.unlink()
        self.conns, self.procs, self.shms = [], [], []

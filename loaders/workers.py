"""Workers for the fetch stage: a thread pool, and process workers (fork or spawn) with their
pipe protocol and shared-memory batch slots; and the batch ring both hand batches out of.

Batch k of an epoch is fetched by worker k % workers and batches come out in order, with at most
`prefetch` batches in flight per worker. A process worker gets the reader pickled (no handles: it
opens its own) through its pipe, decodes straight into shared-memory slots (pixels are never
pickled), and the parent copies each batch out of its slot, so a batch stays valid after the next
one arrives. Any failure in a worker is raised in the parent: a SampleError as itself, a dead
worker as WorkerError. Nothing is skipped, nothing hangs.

Nothing outlives the parent, however it ends (SIGTERM, SIGKILL, the OOM killer): each worker is
SIGKILLed by the kernel when the parent dies (generator.lifetime.die_with_parent); a forked
worker closes the parent's ends of every pipe it inherited (its own and its elder siblings'), so
the parent's death is EOF on every pipe; and the slots are memfds, files without a name, sent to
each worker over its pipe: there is no /dev/shm segment to leak, multiprocessing's resource
tracker is not involved (spawn still starts one; it exits when the last worker has), and the
memory is gone with the last process that maps it.
"""

from __future__ import annotations

import concurrent.futures as cf
import mmap
import multiprocessing
import os
import queue
import select
import struct
import sys
import threading
import time
import traceback
from collections import deque
from multiprocessing import reduction
from typing import Protocol

import numpy as np

from generator.errors import LayoutbenchError, SampleError, UsageError
from generator.lifetime import die_with_parent, started_quietly

from .base import Reader
from .stages import fetch, make_batch

# How a Loader's workers run: threads of the calling process, or processes started by fork or
# spawn; "process" is another name for fork (as in `bench run --worker-kind`).
WORKER_KINDS = ("thread", "process", "fork", "spawn")
POLL_SECONDS = 1.0  # how often a waiting parent checks that its workers are alive
STALL_SECONDS = 300.0  # default: a worker that delivers no batch for this long is a named error, not a hang
PROC_STATES = {"T": "stopped (SIGSTOP or a debugger): kill -CONT it, or end it", "t": "stopped by a tracer",
               "D": "waiting on I/O it cannot leave (a hung mount or device?)"}


class WorkerError(LayoutbenchError):
    """A worker process died or failed with something other than a SampleError."""


class PoolOwner(Protocol):
    """What a pool reads of the loaders.pipeline.Loader it serves (worker_kind thread, fork or spawn)."""

    reader: Reader
    batch_size: int
    workers: int
    worker_kind: str
    prefetch: int
    decode: bool
    fetch: str
    stall_s: float
    _pool: object

    def _batch_ring(self, keep: int) -> BatchRing | None: ...


class BatchRing:
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


class _Threads:
    """`n` daemon threads running (future, fn, args) tasks from one queue, in order, each keeping
    in its slot the batch it is on (seq, indices, since) for a stall message. Daemon threads, not
    ThreadPoolExecutor's: a thread stuck in a read that never returns (a hung mount) cannot be
    stopped by anyone, and the executor's threads are joined at interpreter exit, so one stuck
    thread would keep the process alive for ever after its error was said."""

    def __init__(self, n: int, prefix: str):
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.slots: list = [None] * n
        self.threads = [threading.Thread(target=self._loop, args=(k,), name=f"{prefix}_{k}", daemon=True)
                        for k in range(n)]
        for t in self.threads:
            t.start()

    def submit(self, seq: int, idx, fn, *args) -> cf.Future:
        future: cf.Future = cf.Future()
        self.tasks.put((future, seq, idx, fn, args))
        return future

    def _loop(self, k: int) -> None:
        while (task := self.tasks.get()) is not None:
            future, seq, idx, fn, args = task
            if not future.set_running_or_notify_cancel():
                continue
            self.slots[k] = (seq, idx, time.monotonic())
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer through the future
                future.set_exception(exc)
            finally:
                self.slots[k] = None
            del task, future, args  # the batch array is not kept alive by an idle thread

    def running(self, seq: int) -> int | None:
        """The thread on batch `seq` (None: none is)."""
        return next((k for k, s in enumerate(self.slots) if s is not None and s[0] == seq), None)

    def stop(self, wait: bool) -> None:
        """Tasks not started are cancelled; each thread ends after its task; `wait`: until they
        have (never for a stalled pool)."""
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task[0].cancel()
        for _ in self.threads:
            self.tasks.put(None)
        if wait:
            for t in self.threads:
                t.join()


class ThreadPool:
    """Thread workers: batch k is fetched by the next free thread, with at most workers x prefetch
    in flight. A batch the consumer waits for longer than the loader's stall_s ends the epoch with
    a WorkerError naming the thread, the batch, how long, and what it is blocked on (loaders.stuck:
    the file and sample where the kernel says); the stuck thread cannot be stopped, so the pool is
    abandoned (its daemon threads end after their tasks, or with the process)."""

    def __init__(self, loader: PoolOwner):
        self.loader = loader
        self.threads = _Threads(loader.workers, "loader")
        self.broken = False

    def run(self, plan):
        ld = self.loader
        window = ld.workers * ld.prefetch
        ring = ld._batch_ring(window + 3)  # in flight, held by the caller, in hand here, one spare
        pending: deque = deque()  # (seq, indices, future), oldest first
        nxt = 0
        try:
            while nxt < len(plan) or pending:
                while nxt < len(plan) and len(pending) < window:
                    out = ring and ring.get(len(plan[nxt]))
                    pending.append((nxt, plan[nxt], self.threads.submit(nxt, plan[nxt], fetch, ld.reader, plan[nxt],
                                                                         ld.fetch, out)))
                    del out
                    nxt += 1
                seq, idx, future = pending[0]
                self._wait(future, seq, idx)
                images, idx, nbytes, split = future.result()
                pending.popleft()
                yield make_batch(images, ld.reader.labels(idx), idx, nbytes, split)
        finally:  # an error or an abandoned epoch: let in-flight batches finish (up to stall_s), drop them
            for _, _, f in pending:
                f.cancel()
            if not self.broken:
                _, late = cf.wait([f for _, _, f in pending], timeout=ld.stall_s)
                if late:  # stuck: nothing can stop them; the pool is given up
                    self._abandon()

    def _wait(self, future: cf.Future, seq: int, idx) -> None:
        """Until batch `seq` (`idx`) is done, checking every POLL_SECONDS against the stall limit."""
        since = time.monotonic()
        while True:
            try:  # exception(), not result(): a fetch that raised TimeoutError is not a timeout here
                future.exception(timeout=POLL_SECONDS)
                return
            except cf.TimeoutError:
                waited = time.monotonic() - since
                if waited > self.loader.stall_s:
                    self._stalled(seq, idx, waited)

    def _stalled(self, seq: int, idx, waited: float):
        """WorkerError naming the thread on batch `seq` (`idx`), silent for `waited` seconds, what it
        is blocked on, and what to do; the pool is abandoned first."""
        from .stuck import doing

        ld = self.loader
        k = self.threads.running(seq)
        if k is None:  # taken by no thread (it would be the next one a free thread takes)
            who, what = f"none of the {ld.workers} thread workers", "not started: every thread is on another batch"
        else:
            t = self.threads.threads[k]
            who, what = f"thread worker {t.name} (thread id {t.native_id})", doing(t, ld.reader, idx)
        self._abandon()
        raise WorkerError(f"{who} delivered no batch for {waited:,.0f} s (batch {seq} of this epoch, "
                          f"{ld.reader.layout} {_samples(idx)}; the stall limit is {ld.stall_s:g} s): it is {what}; "
                          f"a thread cannot be stopped, so the run ends here: check that the storage answers (on a "
                          f"hung network mount, ls of the corpus hangs too), then rerun")

    def _abandon(self) -> None:
        """Give the pool up without waiting for its threads: the loader starts a fresh one if used again."""
        self.broken = True
        if self.loader._pool is self:
            self.loader._pool = None
        self.threads.stop(wait=False)

    def close(self):
        self.threads.stop(wait=not self.broken)


def _samples(idx) -> str:
    """`samples 4, 9, 17` (at most 8 named, then a count)."""
    idx = [int(i) for i in idx]
    shown = ", ".join(map(str, idx[:8])) + (f" and {len(idx) - 8:,} more" if len(idx) > 8 else "")
    return f"sample{'s' if len(idx) != 1 else ''} {shown}" if idx else "samples unknown"


_TASK = struct.Struct("<qq")  # a task: seq, slot, then the batch's indices as int64 bytes; b"" stops


class _Slots:
    """A worker's batch slots: a memfd of `size` bytes, mapped. It has no name anywhere (nothing in
    /dev/shm to leak) and is freed when the last process holding it ends."""

    def __init__(self, fd: int):
        self.fd = fd
        self.map = mmap.mmap(fd, os.fstat(fd).st_size)
        self.buf = memoryview(self.map)

    @classmethod
    def create(cls, size: int, name: str) -> "_Slots":
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            return cls(fd)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        try:
            self.buf.release()
            self.map.close()
        except BufferError:  # a view still alive (an error mid-batch): the map goes with the process
            pass
        os.close(self.fd)


def _proc_state(pid: int) -> str:
    """The one-letter state of process `pid` in /proc (R, S, D, T...; "?" when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _worker_main(conn, parent: int, inherited, how: str):
    """A process worker: its reader (and its slots' memfd), then tasks in, (seq, nbytes, split,
    error) out, until b"". It dies with `parent`, and first closes `inherited`: the parent's pipe
    ends a forked worker got by forking, which would keep its siblings (and itself) from seeing
    EOF when the parent dies. The reader comes through the pipe, not the Process arguments: spawn
    writes those to the child before it runs, and a child that dies early leaves that write
    hanging. Tasks are plain bytes, not pickles: for small batches the parent's per-batch work is
    what limits process workers."""
    die_with_parent(parent)
    for c in inherited:
        c.close()
    slots = reader = None
    try:
        reader, slot_bytes = conn.recv()
        if slot_bytes:
            slots = _Slots(reduction.recv_handle(conn))
        while task := conn.recv_bytes():
            seq, slot = _TASK.unpack_from(task)
            idx = np.frombuffer(task, np.int64, offset=_TASK.size)
            conn.send(_work(reader, slots, slot_bytes, how, seq, slot, idx))
    except (EOFError, KeyboardInterrupt, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away or was interrupted
    finally:
        if reader is not None:
            reader.close()
        if slots is not None:
            slots.close()


def _work(reader: Reader, slots, slot_bytes: int, how: str, seq: int, slot: int, idx):
    """One batch in a worker, into its shared-memory slot; errors come back as plain tuples."""
    try:
        out = None
        if slots is not None and reader.variable:  # images of their own shapes, back to back in the slot
            dt = reader.spec.np_dtype
            out = np.ndarray((slot_bytes // dt.itemsize,), dt, slots.buf, slot * slot_bytes)
        elif slots is not None:
            out = np.ndarray((len(idx), *reader.spec.shape), reader.spec.np_dtype, slots.buf, slot * slot_bytes)
        _, _, nbytes, split = fetch(reader, idx, how, out)
        return seq, nbytes, split, None
    except SampleError as exc:
        return seq, 0, None, ("sample", exc.layout, exc.index, exc.where, exc.problem)
    except Exception as exc:
        return seq, 0, None, ("other", f"{type(exc).__name__}: {exc}", traceback.format_exc())


class ProcessPool:
    def __init__(self, loader: PoolOwner):
        ld = self.loader = loader
        spec = ld.reader.spec
        # a batch holds at most the corpus (a --batch-size above the count is one batch of it)
        self.slot_bytes = min(ld.batch_size, max(1, len(ld.reader))) * spec.pixel_bytes if ld.decode else 0
        ctx = multiprocessing.get_context(ld.worker_kind)
        ld.reader.close()  # workers get a pickled reader, without handles, and open their own
        self.conns, self.procs, self.slots = [], [], []
        self.broken = self.interrupted = False
        try:
            for w in range(ld.workers):
                slots = None
                if self.slot_bytes:
                    try:
                        slots = _Slots.create(ld.prefetch * self.slot_bytes, f"layoutbench-slots-{os.getpid()}-{w}")
                    except OSError as exc:
                        raise UsageError(f"cannot make {ld.prefetch * self.slot_bytes:,} bytes of batch slots for a "
                                         f"worker ({exc.strerror}); lower the batch size or prefetch") from None
                    self.slots.append(slots)
                parent, child = ctx.Pipe()
                # a forked child gets copies of the parent's ends; spawn passes only what it pickles
                inherited = (*self.conns, parent) if ld.worker_kind == "fork" else ()
                p = ctx.Process(target=_worker_main, name=f"loader-{ld.worker_kind}-{w}", daemon=True,
                                args=(child, os.getpid(), inherited, ld.fetch))
                with started_quietly():
                    p.start()
                child.close()  # the worker holds the only other end: its death breaks the pipe
                self.conns.append(parent)
                self.procs.append(p)
            for w, (conn, p) in enumerate(zip(self.conns, self.procs)):
                try:
                    conn.send((ld.reader, self.slot_bytes))
                    if self.slot_bytes:
                        reduction.send_handle(conn, self.slots[w].fd, p.pid)
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
        since = time.monotonic()
        while want not in self.results:
            if self.pollers[w].poll(POLL_SECONDS * 1000):
                if not self._drain(w) and want not in self.results:
                    self._died(w)  # its end of the pipe is closed: nothing more will come
            elif not self.procs[w].is_alive():
                self._drain(w)  # what it sent before dying still counts
                if want not in self.results:
                    self._died(w)
            elif time.monotonic() - since > self.loader.stall_s:
                self._stalled(w, want, time.monotonic() - since)

    def _stalled(self, w: int, want: int, waited: float):
        """WorkerError naming the worker that has not delivered batch `want` for `waited` seconds,
        what it is doing (its /proc state), and what to do; the pool is then stopped (SIGKILL
        reaches a stopped process too)."""
        p = self.procs[w]
        state = _proc_state(p.pid)
        self.broken = True
        for q in self.procs:
            if q.is_alive():
                q.kill()
        raise WorkerError(f"{self.loader.worker_kind} worker {w} (pid {p.pid}) delivered no batch for {waited:,.0f} s "
                          f"(batch {want} of this epoch, {self.loader.reader.layout}; the stall limit is "
                          f"{self.loader.stall_s:g} s): it is {PROC_STATES.get(state, f'in state {state}')}")

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
                _, nbytes, split, error = self.results.pop(done)
                w, slot, idx = done % W, (done // W) % ld.prefetch, plan[done]
                self.inflight[w] -= 1
                done += 1
                if error is not None:
                    self._raise(w, error)
                images = None
                if ld.decode and ld.reader.variable:  # copied out of the slot, each at its own shape
                    flat = np.ndarray((self.slot_bytes // spec.np_dtype.itemsize,), spec.np_dtype,
                                      self.slots[w].buf, slot * self.slot_bytes)
                    images = [v.copy() for v in ld.reader.batch_list(idx, flat)]
                    del flat
                elif ld.decode:  # copied out: the slot is refilled while the caller still holds the batch
                    shape = (len(idx), *spec.shape)
                    slot_view = np.ndarray(shape, spec.np_dtype, self.slots[w].buf, slot * self.slot_bytes)
                    images = ring.get(len(idx)) if ring else np.empty(shape, spec.np_dtype)
                    np.copyto(images, slot_view)
                    del slot_view
                yield make_batch(images, ld.reader.labels(idx), idx, nbytes, split)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: nothing in flight is wanted; stop the workers now
            self.broken = self.interrupted = True
            raise
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
            if self.broken and self.procs:
                self.loader._pool = None
                self.close()

    def _raise(self, w: int, error):
        if error[0] == "sample":
            raise SampleError(*error[1:])
        raise WorkerError(f"{self.loader.worker_kind} worker {w} (pid {self.procs[w].pid}) failed: {error[1]}\n"
                          f"{error[2]}")

    def close(self):
        """Stop the workers (while an interrupt unwinds, at once: SIGTERM; else when they have read
        b"") and free the slots. A suspended epoch of this pool then collects nothing."""
        self.interrupted = self.interrupted or isinstance(sys.exc_info()[1], KeyboardInterrupt)
        self.broken = True
        for c in self.conns:
            try:
                c.send_bytes(b"")
            except (OSError, ValueError):
                pass
        for p in self.procs:
            if self.interrupted:
                p.terminate()
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for c in self.conns:
            c.close()
        for slots in self.slots:
            slots.close()
        self.conns, self.procs, self.slots = [], [], []

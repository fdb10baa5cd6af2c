"""The machine's floors, measured in the same run on the same files as the loaders: sequential
reads of each layout's files (into a batch-sized buffer; warm, also copied out of a map), at one
stream and at every concurrency the runs read at (W streams, up to a batch of reads in flight
each: `parallel_read`), random reads of every sample-sized piece at that concurrency, pread of
one sample's size at random sample-sized slots, memory copy at one and at W threads, and the
harness's own loop over a loader that costs nothing.

Contract: a run's `x floor` divides its MB/s by the fastest floor of its own files at its own
cache state and concurrency (Floors.bound); a run above 1.05x is a floor too low (a defect
here, reported, never a win).
"""

from __future__ import annotations

import dataclasses
import errno
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

from generator.errors import CorpusError, LayoutbenchError
from generator.objectstore.store import is_s3_url

from bench.results.result import Floors, MemcpyFloor, PreadFloor, SeqFloor, StreamFloor

from . import probes
from .fio import fio_floor
from .measure import null_floor
from .probes import names_corpus_files
from .regimes import set_cache, settle

READ_BLOCK = 4 << 20  # the sequential floor's read size
PREAD_MIN_SLOTS = 100


def destination(nbytes: int) -> memoryview:
    """A pre-faulted buffer of `nbytes` (at least one block), reused by every pass of a floor: like
    a loader's reused batch arrays, no page of it is zeroed by the kernel during the measurement."""
    buf = np.ones(max(READ_BLOCK, nbytes) + READ_BLOCK, np.uint8)  # + a block: pieces never wrap
    return memoryview(buf)


def _pieces(dest: memoryview, block: int):
    """Offsets in `dest` for successive `block`-sized pieces, wrapping round its end."""
    at, end = 0, max(block, len(dest) - block)
    while True:
        yield at
        at = at + block if at + block <= end else 0


@names_corpus_files("measuring the sequential-read floor")
def read_sequential(paths, block: int = READ_BLOCK, into: int = 0) -> tuple[int, float, int]:
    """Read every file (`paths` lists files: see expand) end to end in `block`-sized read()s: (bytes, seconds, files). Also warms.

    The reads land one after another in a destination of `into` bytes (at least one block; see
    `destination`), wrapping round. A floor passes one batch's bytes: a 4 MiB buffer reused for every
    read stays in the CPU cache, so the bytes never reach memory, which is faster than any loader
    can deliver a large image (docs/lab/2026-12-01-floors-at-concurrency.md)."""
    dest = destination(into)
    at = _pieces(dest, block)
    total = n = 0
    files = list(paths)  # files, not directories: listing them here would warm their metadata
    t0 = time.perf_counter()
    for p in files:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # never blocks on a FIFO
        try:
            while got := os.readv(fd, [dest[(a := next(at)):a + block]]):
                total += got
        finally:
            os.close(fd)
        n += 1
    return total, time.perf_counter() - t0, n


@names_corpus_files("measuring the sequential-read floor")
def copy_sequential(paths, block: int = READ_BLOCK, into: int = 0) -> tuple[int, float, int]:
    """Like read_sequential, copying `block`-sized pieces out of a read-only map of each file
    (MADV_SEQUENTIAL) instead of read(): the other way a reader gets a file's bytes. Warm, either
    can be the faster (a user-space copy into memory can beat read()'s kernel copy), so a warm
    floor takes the better of the two."""
    dest = np.frombuffer(destination(into), np.uint8)
    at = _pieces(memoryview(dest), block)
    total = n = 0
    files = list(paths)  # files, not directories (see read_sequential)
    t0 = time.perf_counter()
    for p in files:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # never blocks on a FIFO
        try:
            size = os.fstat(fd).st_size
            if size:
                m = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
                try:
                    m.madvise(mmap.MADV_SEQUENTIAL)
                    src = np.frombuffer(m, np.uint8)
                    for lo in range(0, size, block):
                        piece = src[lo:lo + block]
                        a = next(at)
                        np.copyto(dest[a:a + len(piece)], piece)
                    del src, piece
                finally:
                    m.close()
            total += size
        finally:
            os.close(fd)
        n += 1
    return total, time.perf_counter() - t0, n


@dataclass(frozen=True)
class PreadResult:
    path: str
    sample_bytes: int
    reads: int
    seconds: float
    latencies_s: tuple[float, ...]


@names_corpus_files("measuring the pread floor")
def pread_random(path, sample_bytes: int, max_reads: int = 2000, seconds: float = 2.0,
                 seed: int = 0) -> PreadResult:
    """pread of `sample_bytes` at random non-overlapping sample-sized slots of one file, so a
    cold file stays cold read after read. Stops after max_reads or `seconds`."""
    size = os.path.getsize(path)
    sample_bytes = max(1, min(sample_bytes, size))
    slots = np.random.default_rng(seed).permutation(max(1, size // sample_bytes))[:max_reads]
    buf = bytearray(sample_bytes)
    lat = []
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        for slot in slots.tolist():
            t = time.perf_counter()
            got = os.preadv(fd, [buf], slot * sample_bytes)
            lat.append(time.perf_counter() - t)
            if got != sample_bytes:
                raise OSError(errno.EIO, f"short read at {slot * sample_bytes}: {got} of {sample_bytes} bytes", str(path))
            if lat[-1] + t > deadline:
                break
        total = time.perf_counter() - t0
    finally:
        os.close(fd)
    return PreadResult(str(path), sample_bytes, len(lat), total, tuple(lat))


def memcpy_bandwidth(nbytes: int = 64 << 20, repeats: int = 5) -> tuple[int, float]:
    """(bytes, best seconds) for one numpy copy of `nbytes`: the ceiling of any warm read,
    which must copy the bytes at least once."""
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in first
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return nbytes, best


# ---------------------------------------------------------------- floors at the loader's concurrency
#
# A loader with W workers reads with W streams, each with up to a batch (B reads) in flight: the
# loose-files reader's RWF_NOWAIT pass starts readahead for a whole batch before it waits, a
# process worker works beside the others on its own core. A floor of one stream with one read in
# flight is then no floor (cold MNIST files with 2 process workers went 3.95x "above" it). So the
# floors are also measured with W streams, each a forked process (no GIL between streams, as
# with process workers; threads of a loader cannot do better), each with `depth` threads that
# read at once (depth reads in flight, as deep as the loader's batch).

Item = tuple  # (path, offset, length): read `length` bytes of `path` from `offset`
WAYS = ("seq-read", "seq-map", "rand", "rand-advise")
# Passes of each floor way; the best counts (a floor is the best the machine does). A shared
# machine's scheduling noise is large against a pass of a few milliseconds, so short warm ways
# are passed again until MEASURE_S seconds of passes, at most PASSES_MAX. Cold passes, each after
# an eviction, are noisier still (one slow pass of two had let a loader past its floor), so cold
# ways pass again while under COLD_MEASURE_S seconds of reads, at most COLD_PASSES_MAX, and are
# measured next to the runs they bound (cold_next_to_runs). A pass costs its reads and, cold, an
# eviction: the stream processes are kept from pass to pass (Streams). The spreads behind these
# settings: docs/lab/2026-12-02-floors-drift.md.
PASSES_MIN, PASSES_MAX, MEASURE_S = 2, 12, 0.2
COLD_PASSES_MAX, COLD_MEASURE_S = 8, 0.5
DEPTH_MAX = 64  # reads in flight per stream: 2 batches of 32 are in flight whole; more are capped here


def seq_plan(paths, streams: int) -> list[list[Item]]:
    """Every byte of `paths`, in order, as one byte stream cut into `streams` contiguous shares
    (a big file is read by several streams, each its own range; loose files are split by count)."""
    sizes = [os.path.getsize(p) for p in paths]
    total = sum(sizes)
    share = -(-total // max(1, streams)) if total else 0
    plans: list[list[Item]] = [[] for _ in range(streams)]
    s, room = 0, share
    for p, size in zip(paths, sizes):
        at = 0
        while at < size:
            take = min(size - at, room) if s < streams - 1 else size - at
            plans[s].append((str(p), at, take))
            at += take
            room -= take
            if room <= 0 and s < streams - 1:
                s, room = s + 1, share
    return plans


def rand_plan(paths, sample_bytes: int, samples: int, streams: int, seed: int = 0) -> list[list[Item]]:
    """Every sample-sized piece of `paths` once, in a random order, dealt round-robin to `streams`.

    Loose files (at least as many files as samples): each file whole, as the loader reads it.
    Otherwise sample-sized slots covering each file (the last one short), as a loader reads
    samples packed in one file."""
    if len(paths) >= samples:
        items = [(str(p), 0, os.path.getsize(p)) for p in paths]
    else:
        step = max(1, sample_bytes)
        items = [(str(p), at, min(step, size - at)) for p in paths
                 for size in (os.path.getsize(p),) for at in range(0, size, step)]
    order = np.random.default_rng(seed).permutation(len(items))
    return [[items[k] for k in order[s::streams].tolist()] for s in range(streams)]


def _read_items(items, dest: memoryview, block: int, mapped: bool, maps: dict | None = None) -> tuple[int, int]:
    """(bytes, reads) of `items` read into `dest` in pieces of at most `block`, wrapping round it.
    A file is opened once for a run of items in it and closed when the next item is another
    file (loose files: open, one read, close, as the loaders do). `mapped`: copied out of a
    read-only map (MADV_SEQUENTIAL) instead of preadv."""
    total = reads = pos = 0
    size = len(dest)
    arr = np.frombuffer(dest, np.uint8) if mapped else None
    fd, open_path, m, src = -1, None, None, None
    try:
        for path, off, length in items:
            if mapped and maps is not None and path in maps:
                src = maps[path]
            elif path != open_path:
                if m is not None:
                    del src
                    m.close()
                    m = src = None
                if fd >= 0:
                    os.close(fd)
                fd, open_path = os.open(path, os.O_RDONLY), path
                if mapped:
                    fsize = os.fstat(fd).st_size
                    if fsize:
                        m = mmap.mmap(fd, fsize, access=mmap.ACCESS_READ)
                        m.madvise(mmap.MADV_SEQUENTIAL)
                        src = np.frombuffer(m, np.uint8)
            if not mapped:
                got, n, pos = _preadv_pieces(fd, dest, pos, off, length, block)
                total, reads = total + got, reads + n
                continue
            at, left = off, length
            while left > 0:
                k = min(left, block, size)
                if pos + k > size:
                    pos = 0
                np.copyto(arr[pos:pos + k], src[at:at + k])
                total += k
                reads += 1
                at, left, pos = at + k, left - k, pos + k
    finally:
        if m is not None:
            del src
            m.close()
        if fd >= 0:
            os.close(fd)
    return total, reads


def _preadv_pieces(fd: int, dest: memoryview, pos: int, at: int, left: int, block: int) -> tuple[int, int, int]:
    """(bytes, reads, next pos) of `left` bytes of `fd` from `at` read with preadv into `dest` from
    `pos`, in pieces of at most `block`, wrapping round it; stops early at the file's end."""
    total = reads = 0
    size = len(dest)
    while left > 0:
        k = min(left, block, size)
        if pos + k > size:
            pos = 0
        got = os.preadv(fd, [dest[pos:pos + k]], at)
        if got <= 0:
            break
        total += got
        reads += 1
        at, left, pos = at + got, left - got, pos + got
    return total, reads, pos


MADV_POPULATE_READ = 22  # Linux 5.14: fault a range's page tables in without copying


def _read_advised(items, dest: memoryview, block: int, group: int) -> tuple[int, int]:
    """(bytes, reads) of `items` read `group` at a time in one thread: every item of a group is
    advised WILLNEED (its file opened), then each is read with preadv and the files are closed.
    The device gets a group's reads at once without a thread per read: what the loaders do (the
    loose-files reader's RWF_NOWAIT pass, the packed readers' WILLNEED) to have a batch in
    flight; a floor without it was beaten by them (cold MNIST loose files with one worker 1.56x
    the floor of 32 threads, whose GIL and thread switches the loader does not pay; cold 4K
    images 1.1-1.3x one blocking preadv per image)."""
    total = reads = pos = 0
    for g in range(0, len(items), max(1, group)):
        chunk, fds = items[g:g + max(1, group)], {}
        try:
            for path, off, length in chunk:
                if path not in fds:
                    fds[path] = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fds[path], off, length, os.POSIX_FADV_WILLNEED)
            for path, off, length in chunk:
                got, n, pos = _preadv_pieces(fds[path], dest, pos, off, length, block)
                total, reads = total + got, reads + n
        finally:
            for fd in fds.values():
                os.close(fd)
    return total, reads


def _premap(items) -> dict:
    """path -> uint8 array over a read-only map of the file, its pages faulted in: a loader reading
    out of a map in steady state has mapped and faulted it in an earlier epoch, so a floor that
    maps and faults inside its clock would be slower than the loader it bounds. Maps live until
    the (forked, short-lived) process exits."""
    out = {}
    for path in dict.fromkeys(p for p, _, _ in items):
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if not size:
                continue
            m = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        try:
            m.madvise(MADV_POPULATE_READ)
        except OSError:  # an older kernel: touch one byte a page
            int(np.frombuffer(m, np.uint8)[::mmap.PAGESIZE].sum())
        m.madvise(mmap.MADV_SEQUENTIAL)
        out[path] = np.frombuffer(m, np.uint8)
    return out


_RESULT = struct.Struct("<ddqq")  # start, end (perf_counter: CLOCK_MONOTONIC, one clock for all processes), bytes, reads


def _stream_child(items, depth: int, block: int, into: int, mapped: bool, ready_w: int, go_r: int, out_w: int,
                  advise: int = 0):
    """One stream in a forked child: buffers (and maps) and `depth` threads over items[t::depth]
    made once (`advise`: one thread, `advise` items advised then read at a time: _read_advised),
    then a pass for every b"g" the parent writes to go_r, until anything else (or EOF), the
    threads started together; each pass writes _RESULT (or b'E' + message, and the child ends) to
    out_w. Everything a pass uses exists before the parent hears b"r", so the memory it measures
    then (a capped floor's limit) is what the passes use."""
    try:
        per = max(min(block, max((i[2] for i in items), default=1)), into // max(1, depth), 1)
        dests = [memoryview(np.ones(per, np.uint8)) for _ in range(depth)]  # pre-faulted, one per thread
        maps = _premap(items) if mapped else None
        results: list = [None] * depth
        go, done = threading.Barrier(depth + 1), threading.Barrier(depth + 1)
        stop = []

        def work(t):
            while True:
                go.wait()
                if stop:
                    return
                try:
                    results[t] = (_read_advised(items, dests[t], block, advise) if advise else
                                  _read_items(items[t::depth], dests[t], block, mapped, maps))
                except BaseException as exc:  # reported through the pipe below
                    results[t] = exc
                done.wait()

        threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(depth)]
        for th in threads:
            th.start()
    except BaseException as exc:
        os.write(ready_w, b"r")
        os.write(out_w, _error(exc))
        return
    os.write(ready_w, b"r")
    try:
        while os.read(go_r, 1) == b"g":
            t0 = time.perf_counter()
            go.wait()  # every thread starts its reads now
            done.wait()
            t1 = time.perf_counter()
            bad = next((r for r in results if isinstance(r, BaseException)), None)
            if bad is not None:
                raise bad
            os.write(out_w, _RESULT.pack(t0, t1, sum(r[0] for r in results), sum(r[1] for r in results)))
    except BaseException as exc:
        os.write(out_w, _error(exc))
    finally:
        stop.append(True)
        try:
            go.wait(timeout=1)  # the threads see `stop` and end (daemons: the child's exit ends them anyway)
        except threading.BrokenBarrierError:
            pass


def _error(exc: BaseException) -> bytes:
    """A stream's failure as one pipe message: b'E' and the error, under PIPE_BUF (written at once)."""
    return b"E" + f"{type(exc).__name__}: {exc}".encode()[:3000]


class Streams:
    """`plans` read at once, pass after pass, by forked processes kept between passes: one per plan
    (a stream), each with `depth` threads reading its items (so up to len(plans) x depth reads in
    flight). Processes, threads' buffers and maps are made once, before any clock starts, so a
    pass costs its reads (forking and faulting in 46 MB buffers took 20-25 ms a pass, a quarter of
    a cold 4K pass). Between passes the streams hold no file open: the caller may evict. A context
    manager: the processes end on exit, whatever happened."""

    def __init__(self, plans: list[list[Item]], depth: int = 1, block: int = READ_BLOCK, into: int = 0,
                 mapped: bool = False, advise: int = 0):
        self.kids, self.pipes = [], []
        try:
            for items in plans:
                ready_r, ready_w = os.pipe()
                go_r, go_w = os.pipe()
                out_r, out_w = os.pipe()
                pid = os.fork()
                if pid == 0:  # the child: never returns into the caller's code
                    code = 1
                    try:
                        os.close(ready_r), os.close(go_w), os.close(out_r)
                        _stream_child(items, 1 if advise else max(1, depth), block, into, mapped, ready_w, go_r,
                                      out_w, advise)
                        code = 0
                    finally:
                        os._exit(code)
                os.close(ready_w), os.close(go_r), os.close(out_w)
                self.kids.append(pid)
                self.pipes.append((ready_r, go_w, out_r))
            for ready_r, _, _ in self.pipes:
                os.read(ready_r, 1)
        except BaseException:
            self.close()
            raise

    def run(self) -> tuple[int, float, int]:
        """One pass: (bytes, seconds, reads), seconds from the first stream's start to the last
        one's end. A failure in a stream is raised as a LayoutbenchError."""
        for _, go_w, _ in self.pipes:
            try:
                os.write(go_w, b"g")
            except BrokenPipeError:
                pass  # that stream failed making its buffers and ended: its error waits in its out pipe
        got = [os.read(out_r, 8192) for _, _, out_r in self.pipes]
        bad = [g for g in got if len(g) != _RESULT.size]
        if bad:
            raise LayoutbenchError(f"a floor stream failed: {bad[0][1:].decode(errors='replace') or 'it exited'}")
        parts = [_RESULT.unpack(g) for g in got]
        return (sum(p[2] for p in parts), max(p[1] for p in parts) - min(p[0] for p in parts),
                sum(p[3] for p in parts))

    def close(self) -> None:
        for _, go_w, _ in self.pipes:  # said, not left to the go pipe's EOF: a process forked
            try:                       # meanwhile (another pool's stream) holds its write end too
                os.write(go_w, b"q")
            except OSError:
                pass  # that stream has ended
        for fds in self.pipes:
            for fd in fds:
                os.close(fd)
        for pid in self.kids:
            os.waitpid(pid, 0)
        self.kids, self.pipes = [], []

    def __enter__(self) -> "Streams":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parallel_read(plans: list[list[Item]], depth: int = 1, block: int = READ_BLOCK, into: int = 0,
                  mapped: bool = False, advise: int = 0) -> tuple[int, float, int]:
    """(bytes, seconds, reads) of one pass of Streams(plans, ...): every plan read at once."""
    with Streams(plans, depth, block, into, mapped, advise) as streams:
        return streams.run()


def memcpy_threads(threads: int, nbytes: int = 64 << 20, repeats: int = 5) -> tuple[int, float]:
    """(bytes, best seconds) of `threads` threads each copying its own nbytes/threads at once
    (numpy releases the GIL while it copies): the memory-copy floor at a loader's concurrency."""
    threads = max(1, threads)
    per = max(1 << 20, nbytes // threads)
    bufs = [(np.ones(per, np.uint8), np.ones(per, np.uint8)) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    spans = [[None] * repeats for _ in range(threads)]  # each thread's own (start, end): the clock
    clock = time.perf_counter                            # of a descheduled bystander would be short

    def work(t, src, dst):
        for r in range(repeats):
            barrier.wait()
            t0 = clock()
            np.copyto(dst, src)
            spans[t][r] = (t0, clock())

    pool = [threading.Thread(target=work, args=(t, *b), daemon=True) for t, b in enumerate(bufs)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    best = min(max(spans[t][r][1] for t in range(threads)) - min(spans[t][r][0] for t in range(threads))
               for r in range(repeats))
    return per * threads, best


def stream_floors(layout: str, paths, cache: str, streams: int, depth: int, sample_bytes: int, samples: int,
                  into: int, evict: str, seed: int = 0) -> list[StreamFloor]:
    """The floors of one layout's files at one concurrency and cache state: sequential reads at
    `streams` streams, and every sample-sized piece once in a random order at `streams` x `depth`
    reads in flight, one read of the sample size each. The best of the passes of each (at least
    PASSES_MIN, more while under MEASURE_S seconds in all, at most PASSES_MAX; cold: the files
    evicted before every pass, and COLD_MEASURE_S, COLD_PASSES_MAX instead); warm, also copying
    out of a map (big files, faulted in before the clock, as a loader's map is after its first
    epoch) and the random reads with one thread per stream (no GIL shared by `depth` threads:
    warm, a read never waits for the disk)."""
    seq_plans, rand_plans = seq_plan(paths, streams), rand_plan(paths, sample_bytes, samples, streams, seed)
    # (way, plans, threads per stream, mapped, read size, advised group): random reads are one
    # read of a sample each; cold, also `depth` of them advised WILLNEED at once in one thread
    ways = [("seq-read", seq_plans, 1, False, READ_BLOCK, 0),
            ("rand", rand_plans, depth, False, max(1, sample_bytes), 0)]
    if cache == "cold":
        ways += [("rand-advise", rand_plans, depth, False, max(1, sample_bytes), depth)]
    else:
        big = sum(os.path.getsize(p) for p in paths) / max(1, len(paths)) >= READ_BLOCK // 4
        ways += [("seq-map", seq_plans, 1, True, READ_BLOCK, 0)] if big else []
        ways += [("rand", rand_plans, 1, False, max(1, sample_bytes), 0)] if depth > 1 else []
    out = []
    state = settle(cache, paths, evict) if cache != "cold" else None  # warm stays warm: the floors read it
    for way, plans, d, mapped, block, advise in ways:
        best, spent, passes = None, 0.0, 0
        most, enough = (COLD_PASSES_MAX, COLD_MEASURE_S) if cache == "cold" else (PASSES_MAX, MEASURE_S)
        with Streams(plans, d, block, into, mapped, advise) as pool:
            while passes < PASSES_MIN or (spent < enough and passes < most):
                passes += 1
                if cache == "cold":
                    state = settle(cache, paths, evict)
                nbytes, seconds, reads = pool.run()
                spent += seconds
                if best is None or seconds < best[1]:
                    best = (nbytes, seconds, reads, state.residency)
        out.append(StreamFloor(layout, cache, way, streams, d, best[0], best[2], best[1], best[3], sample_bytes))
    return out


def floor_streams(cfg, ranks_here: int, layout: str | None = None) -> list[int]:
    """The concurrencies the runs of `cfg` read `layout`'s files at, in streams: each worker count
    (0: the calling thread, one stream) times the ranks on this node, and one stream where a naive
    baseline reads that layout in the calling thread (only the layouts that have one: a floor no
    run is compared with is not measured). Without a layout: every concurrency of any layout."""
    from loaders.registry import readers

    naive = cfg.naive and (layout is None or getattr(readers().get(layout), "naive", False))
    return sorted({max(1, w) * ranks_here for w in (*cfg.workers, *((0,) if naive else ()))})


def _layout_floors(cfg, layout: str, paths, cache: str, ranks_here: int, depth: int, sample: int, count: int,
                   into: int, fio: bool) -> tuple[SeqFloor, list[StreamFloor], list]:
    """One layout's floors at one cache state: the one-stream sequential floor, the floors at every
    concurrency its runs use and (`fio`) fio's random reads beside them."""
    # a floor is the best the machine does: cold, the best of 2 read() passes, each after an
    # eviction (one pass alone can be an order of magnitude off: docs/lab/2026-12-02-floors-drift.md);
    # warm, the best of 3 passes of read() and of 3 copying out of a map (copy_sequential)
    passes = []
    for way in [read_sequential] * 2 if cache == "cold" else [read_sequential, copy_sequential] * 3:
        if cache == "cold" or not passes:
            state = set_cache(cache, paths, cfg.evict)
            residency = state.residency
        passes.append(way(paths, into=into))
    nbytes, seconds, files = min(passes, key=lambda t: t[1])
    seq = SeqFloor(layout, cache, nbytes, seconds, files, residency, into)
    at, fio_floors = [], []
    for streams in floor_streams(cfg, ranks_here, layout):
        at += stream_floors(layout, paths, cache, streams, depth, sample, count, into, cfg.evict, cfg.run.seed)
        if fio:
            fio_floors.append(fio_floor(layout, paths, cache, streams, min(cfg.run.batch_size, DEPTH_MAX),  # iodepth =
                                        sample, count, cfg.evict))                                          # the batch
    return seq, at, fio_floors


def _floor_plan(ctx, manifest) -> tuple:
    """(cfg, ranks on this node, reads in flight per stream, mean sample bytes, bytes of a batch) of
    a corpus's floors, the same for those measured first and those measured next to the runs."""
    cfg = ctx.cfg
    if manifest.shapes is not None:  # samples of varying shape have no naive baselines (runner.plan_runs)
        cfg = dataclasses.replace(cfg, naive=False)
    hosts = ctx.comm.gather({"host": ctx.host})  # None on every rank but 0, which alone measures
    ranks_here = sum(1 for h in hosts or () if h["host"] == ctx.host)
    # reads in flight per stream: a worker has `prefetch` batches out at once (4K, batches of one
    # image: two images; a floor of one let cold 4K runs go 1.1-1.3x over it)
    depth = min(cfg.run.batch_size * cfg.run.prefetch, DEPTH_MAX)
    sample = int(np.mean(manifest.sizes))
    batch = min(cfg.run.batch_size, manifest.spec.count)  # a batch is at most the corpus
    return cfg, ranks_here, depth, sample, batch * sample  # the floor, too, puts one batch's bytes in memory


def floor_caches(cfg) -> list[str]:
    """The cache states whose floors a run of `cfg` compares with (capped runs read cold files)."""
    if "asis" in cfg.caches:
        return ["cold", "warm"]
    return [c for c in ("cold", "warm") if c in cfg.caches or (c == "cold" and "capped" in cfg.caches)]


def layout_paths(cfg, layout: str) -> list:
    """Every file of `layout`'s corpus, listed before evicting: a cold floor must look its files
    up on disk, as the loader does."""
    from loaders import open_corpus

    reader = open_corpus(cfg.corpus, layout)
    try:
        files = probes.expand(reader.paths())
    finally:
        reader.close()
    if not files:
        raise CorpusError(f"the {layout} layout of {cfg.corpus} has no files (missing or emptied since it was "
                          f"written): run `python -m loaders verify {cfg.corpus}`, or regenerate it with --force")
    return files


@names_corpus_files("measuring the floors")
def measure_floors(ctx, manifest) -> Floors:
    """The floors of this corpus, on rank 0 while the other ranks wait (they share the page cache):
    for each layout and cache state, the one-stream sequential floor (`seq`) and the floors at
    every concurrency the runs use (`at`: W streams, a batch in flight each), the memory copy at
    those thread counts, pread of one sample, and the harness. With `cfg.fio` (bench/probe/fio.py),
    fio's random reads beside our own. Where the runs are cold (cold_next_to_runs), a layout's
    cold `seq` and `at` floors are not measured here but next to its cold runs (cold_floors)."""
    cfg, ranks_here, depth, sample, into = _floor_plan(ctx, manifest)
    if ctx.comm.rank != 0:
        return Floors()
    if is_s3_url(cfg.corpus):
        return s3_floors(ctx, manifest, cfg, ranks_here)
    streams_set = floor_streams(cfg, ranks_here)  # the memory-copy floors: every concurrency of any run
    seq, at, fio_floors = [], [], []
    all_paths = ctx.floor_paths  # kept: cold floors measured next to the runs read the same list
    for layout in cfg.layouts:
        all_paths[layout] = layout_paths(cfg, layout)
        for cache in floor_caches(cfg):
            if cache == "cold" and cold_next_to_runs(cfg):
                continue
            one, more, fio = _layout_floors(cfg, layout, all_paths[layout], cache, ranks_here, depth, sample,
                                            manifest.spec.count, into, getattr(cfg, "fio", False))
            seq.append(one)
            at += more
            fio_floors += fio
            ctx.tick_floor(f"seq {layout} {cache}")
    # pread: the largest single file the layouts read, at the mean sample size; not measured when
    # that file holds only a few of the samples (a loose-files-only run): one read is no floor
    biggest = max((p for ps in all_paths.values() for p in ps), key=os.path.getsize)
    slots = os.path.getsize(biggest) // max(1, sample)
    pread = []
    for cache in floor_caches(cfg) if slots >= min(PREAD_MIN_SLOTS, manifest.spec.count) else ():
        state = set_cache(cache, [biggest], cfg.evict)
        r = pread_random(biggest, sample, seed=cfg.run.seed)
        pread.append(PreadFloor(cache, str(biggest), r.sample_bytes, r.reads, r.seconds,
                                tuple(round(x * 1e9) for x in r.latencies_s), state.residency))
        ctx.tick_floor(f"pread {cache}")
    mbytes, msec = memcpy_bandwidth()
    memcpy_at = tuple(MemcpyFloor(w, *memcpy_threads(w)) for w in streams_set)
    batch = min(cfg.run.batch_size, manifest.spec.count)
    nsamples, nsec = null_floor(max(manifest.spec.count, 100_000), batch)
    ctx.tick_floor("memcpy, null loader")
    return Floors(tuple(seq), tuple(pread), mbytes, msec, nsamples, nsec, batch, tuple(at), memcpy_at,
                  tuple(fio_floors))


def cold_next_to_runs(cfg) -> bool:
    """Whether a layout's cold floors are measured just before its first cold run (cold_floors)
    rather than with the others before every run: where runs are cold by setting. Runs of a
    setting go layout after layout for minutes, and a shared machine drifts over minutes: the
    best of 15 cold passes of each way over two 4K images here was 64-79 ms in one run and 54-59
    ms in one a few minutes later, and floors measured minutes before were beaten by loaders that
    ran in a faster minute (cold 4K, 1.15x in a make bench QUICK=1). asis and capped runs (which
    compare with cold floors only when they measured an empty cache, or never) keep them
    measured first."""
    return "cold" in cfg.caches


@names_corpus_files("measuring the cold floors")
def cold_floors(ctx, manifest, floors: Floors, layout: str) -> Floors:
    """`floors` with `layout`'s cold sequential, stream (and with cfg.fio, fio) floors added,
    measured now, on rank 0; every rank calls it, at the same point of the runs."""
    cfg, ranks_here, depth, sample, into = _floor_plan(ctx, manifest)
    if ctx.comm.rank != 0:
        return floors
    if is_s3_url(cfg.corpus):
        more = s3_layout_floors(ctx, cfg, layout, "cold", ranks_here)
        ctx.tick_floor(f"cold {layout}")
        return dataclasses.replace(floors, at=(*floors.at, *more))
    paths = ctx.floor_paths.get(layout) or layout_paths(cfg, layout)  # listed by measure_floors
    one, more, fio = _layout_floors(cfg, layout, paths, "cold", ranks_here, depth, sample, manifest.spec.count, into,
                                    getattr(cfg, "fio", False))
    ctx.tick_floor(f"cold {layout}")
    return dataclasses.replace(floors, seq=(*floors.seq, one), at=(*floors.at, *more), fio=(*floors.fio, *fio))


# ---------------------------------------------------------------- S3 floors
#
# A corpus in S3 (bench.run.s3storage): no local file to read, so no sequential, pread or fio
# floor. Its floor is every sample's own bytes (the whole object, or its range) fetched raw with a
# GET each by the run's own Store (same client, connections and retries), in a random order, with
# as many requests in flight as the run's reader keeps (min(S3 INFLIGHT, streams x batch)): what
# the store gives this client at that concurrency, with no tar header, index or decoding. Fewer
# requests in flight can be faster (on a small host the server's threads and ours share the
# cores: 8 in flight beat 32 here), so every count up to the run's is tried and the fastest is
# the floor (its in-flight count recorded as streams x depth). Way "s3-get"; cold: the bundled
# server's files evicted before each pass, as before a cold epoch.

S3_PASSES = 2  # the fastest in-flight counts passed again
S3_DEPTHS = (1, 2, 4, 8, 16, 32, 64)  # requests in flight tried, up to the run's own
S3_FLOOR_GETS = 1000  # GETs a pass at most: a random share of the samples (each pass the same)



def s3_floors(ctx, manifest, cfg, ranks_here: int) -> Floors:
    """The floors of a corpus in S3 (rank 0): each layout's s3-get floors at each cache state and
    concurrency of its runs (cold ones next to the cold runs, as on local disk), memory copy and
    the harness."""
    at = []
    for layout in cfg.layouts:
        for cache in floor_caches(cfg):
            if cache == "cold" and (cold_next_to_runs(cfg) or not ctx.storage("s3").supports_eviction):
                continue
            at += s3_layout_floors(ctx, cfg, layout, cache, ranks_here)
            ctx.tick_floor(f"s3 {layout} {cache}")
    streams_set = floor_streams(dataclasses.replace(cfg, naive=False), ranks_here)
    mbytes, msec = memcpy_bandwidth()
    memcpy_at = tuple(MemcpyFloor(w, *memcpy_threads(w)) for w in streams_set)
    batch = min(cfg.run.batch_size, manifest.spec.count)
    nsamples, nsec = null_floor(max(manifest.spec.count, 100_000), batch)
    ctx.tick_floor("memcpy, null loader")
    return Floors((), (), mbytes, msec, nsamples, nsec, batch, tuple(at), memcpy_at, ())


def s3_layout_floors(ctx, cfg, layout: str, cache: str, ranks_here: int) -> list[StreamFloor]:
    """`layout`'s s3-get floors at `cache`, one per concurrency its runs read at: the fastest pass
    at any count of requests in flight up to the run's (S3_DEPTHS, the fastest passed again), of
    the GETs its reader makes (each batch's neighbouring ranges merged; whole shards in the
    `shards` order). None for a layout staged to a local copy (its epochs read no GETs)."""
    from loaders.s3.base import INFLIGHT

    storage = ctx.storage("s3")
    reader = storage.open(layout)
    if reader.staged:  # read from a local copy staged before the run: no GET bounds its epochs
        reader.close()
        return []
    streamed = cfg.run.shuffle == "shards" and getattr(reader, "supports_streaming", False)
    try:
        reader._ensure_open(0)
        if streamed:  # the shards order streams whole shards: one GET each
            ranges = reader.stream_gets()
        else:
            ranges = reader.s3_ranges(range(len(reader)))  # the layout's own index read here, before the clock
        files = storage.files(reader)
    finally:
        reader.close()
    if streamed:
        sample = int(sum(reader.manifest.sizes) // max(1, len(reader)))
    else:
        order = np.random.default_rng(cfg.run.seed).permutation(len(ranges))[:S3_FLOOR_GETS].tolist()
        sample = int(np.mean([ranges[k][2] for k in order]))
        # the GETs the reader makes: each batch's ranges, neighbours in one object merged (fetch_ranges)
        ranges = [(run[0], run[1], run[2], run[3] - run[2]) if run[2] is not None else tuple(run[:4])
                  for b in range(0, len(order), cfg.run.batch_size)
                  for run in _batch_gets(reader, [(k, *ranges[k]) for k in order[b:b + cfg.run.batch_size]])]
    out = []
    for streams in floor_streams(dataclasses.replace(cfg, naive=False), ranks_here, layout):
        most = max(1, min(INFLIGHT, streams * cfg.run.batch_size))  # what the run's reader keeps in flight at most
        passes = {}  # requests in flight -> the best (bytes, seconds, residency) at it

        def measure(inflight):
            state = storage.settle(cache, files)
            nbytes, seconds = s3_fetch(reader, ranges, inflight)
            if inflight not in passes or seconds < passes[inflight][1]:
                passes[inflight] = (nbytes, seconds, state.residency)

        for inflight in sorted({d for d in S3_DEPTHS if d < most} | {most}):
            measure(inflight)
        for inflight in sorted(passes, key=lambda d: passes[d][1])[:S3_PASSES]:  # the fastest again
            measure(inflight)
        inflight, (nbytes, seconds, residency) = min(passes.items(), key=lambda kv: kv[1][1])
        out.append(StreamFloor(layout, cache, "s3-get", streams, -(-inflight // streams), nbytes, len(ranges),
                               seconds, residency, sample))
    return out


def _batch_gets(reader, items: list) -> list:
    """The GETs of one batch's (sample, object, start, length) items: whole objects (start None)
    one each, ranges merged as the reader merges them (S3Reader.merged_runs)."""
    whole = [[i, name, None, n, []] for i, name, start, n in items if start is None]
    return whole + reader.merged_runs([it for it in items if it[2] is not None])


def s3_fetch(reader, ranges, inflight: int) -> tuple[int, float]:
    """(bytes, seconds) of one GET per (sample, object, start, length) of `ranges` (start None: the
    whole object), `inflight` at once, by `reader`'s store (a failure is the sample's one line)."""
    from concurrent.futures import ThreadPoolExecutor

    fetch = reader.fetch

    def get(item):
        return len(fetch(*item))

    with ThreadPoolExecutor(inflight) as pool:
        t0 = time.perf_counter()
        total = sum(pool.map(get, ranges)) if inflight > 1 else sum(map(get, ranges))
        seconds = time.perf_counter() - t0
    return total, seconds

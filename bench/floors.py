"""The machine's floors, measured in the same run on the same files as the loaders: sequential
reads of each layout's files (into a batch-sized buffer; warm, also copied out of a map), pread of
one sample's size at random sample-sized slots, one memory copy, and the harness's own loop over
a loader that costs nothing.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from dataclasses import dataclass

import numpy as np

from . import probes
from .probes import names_corpus_files
from .measure import null_floor
from .regimes import set_cache
from .result import Floors, PreadFloor, SeqFloor

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
    read stays in the CPU cache, so the bytes never reach memory, which is faster (17-20 GB/s warm
    on this machine, above its 12-13 GB/s memcpy) than any loader can deliver a 46 MB image."""
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
    (MADV_SEQUENTIAL) instead of read(): the other way a reader gets a file's bytes. Warm, it is
    the faster one here (a user-space copy into memory beats read()'s kernel copy: about 11 against
    6 GB/s for a 46 MB destination), so a warm floor takes the better of the two."""
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


@names_corpus_files("measuring the floors")
def measure_floors(ctx, manifest) -> Floors:
    """The floors of this corpus, on rank 0 while the other ranks wait (they share the page cache)."""
    cfg = ctx.cfg
    if ctx.comm.rank != 0:
        return Floors()
    from loaders import open_corpus

    caches = ["cold", "warm"] if "asis" in cfg.caches else [c for c in ("cold", "warm") if c in cfg.caches]
    seq = []
    all_paths = {}
    batch = min(cfg.run.batch_size, manifest.spec.count)  # a batch is at most the corpus
    into = batch * int(np.mean(manifest.sizes))  # the floor, too, puts one batch's bytes in memory
    for layout in cfg.layouts:
        reader = open_corpus(cfg.corpus, layout)
        # listed before evicting: a cold floor must look its files up on disk, as the loader does
        all_paths[layout] = probes.expand(reader.paths())
        reader.close()
        for cache in caches:
            state = set_cache(cache, all_paths[layout], cfg.evict)
            # a floor is the best the machine does: one read() pass cold (a second would be warm); warm,
            # the best of 3 passes of read() and of 3 copying out of a map (see copy_sequential)
            ways = [read_sequential] if cache == "cold" else [read_sequential, copy_sequential] * 3
            nbytes, seconds, files = min((way(all_paths[layout], into=into) for way in ways), key=lambda t: t[1])
            seq.append(SeqFloor(layout, cache, nbytes, seconds, files, state.residency, into))
            ctx.tick_floor(f"seq {layout} {cache}")
    # pread: the largest single file the layouts read, at the mean sample size; not measured when
    # that file holds only a few of the samples (a loose-files-only run): one read is no floor
    biggest = max((p for ps in all_paths.values() for p in ps), key=os.path.getsize)
    sample = int(np.mean(manifest.sizes))
    slots = os.path.getsize(biggest) // max(1, sample)
    pread = []
    for cache in caches if slots >= min(PREAD_MIN_SLOTS, manifest.spec.count) else ():
        state = set_cache(cache, [biggest], cfg.evict)
        r = pread_random(biggest, sample, seed=cfg.run.seed)
        pread.append(PreadFloor(cache, str(biggest), r.sample_bytes, r.reads, r.seconds,
                                tuple(round(x * 1e9) for x in r.latencies_s), state.residency))
        ctx.tick_floor(f"pread {cache}")
    mbytes, msec = memcpy_bandwidth()
    nsamples, nsec = null_floor(max(manifest.spec.count, 100_000), batch)
    ctx.tick_floor("memcpy, null loader")
    return Floors(tuple(seq), tuple(pread), mbytes, msec, nsamples, nsec, batch)

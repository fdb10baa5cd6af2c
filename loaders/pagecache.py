"""What the page cache holds, asked of the kernel: mincore over a memory range or a whole file,
cachestat over a byte range of an open file, the read-ahead window of the device holding a file,
and the memory this process may use (RAM, or its memory cgroup's limit when lower). Shared by the
readers (a large sample copied out of a map only when resident; the readahead rules) and the
bench (residency checks, hit probes)."""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import threading
from pathlib import Path

PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.restype = ctypes.c_int
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_MAP_FAILED = ctypes.c_void_p(-1).value
_LOCAL = threading.local()  # each thread's mincore vector
_LOW_BIT = bytes(b & 1 for b in range(256))  # mincore's other bits are reserved


def _vector(pages: int):
    vec = getattr(_LOCAL, "vec", None)
    if vec is None or len(vec) < pages:
        vec = _LOCAL.vec = (ctypes.c_ubyte * pages)()
    return vec


def resident_pages(addr: int, length: int) -> bytes | None:
    """One byte per page of [addr, addr + length) (addr page-aligned): 1 resident, 0 not; None when
    the kernel cannot tell (then reading is right either way)."""
    pages = (length + PAGE - 1) // PAGE
    vec = _vector(pages)
    if _libc.mincore(addr, length, vec) != 0:
        return None
    return ctypes.string_at(vec, pages).translate(_LOW_BIT)


def range_resident(base: int, start: int, size: int) -> bool:
    """Whether bytes [start, start + size) of a mapping at `base` are all in the page cache."""
    lo = start - start % PAGE
    bits = resident_pages(base + lo, start + size - lo)
    return bits is not None and b"\0" not in bits


def file_residency(path) -> tuple[int, int]:
    """(resident bytes, size) of one file, via mincore on a map released at once (a live map pins
    its pages, which would keep them from being evicted). OSError for a file that cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block us
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap for mincore failed: {os.strerror(err)}", str(path))
        try:
            bits = resident_pages(addr, size)
            if bits is None:
                err = ctypes.get_errno()
                raise OSError(err, f"mincore failed: {os.strerror(err)}", str(path))
            pages = len(bits)
            resident = bits.count(1) * PAGE
            if bits[-1]:  # the last page holds only the file's tail
                resident -= pages * PAGE - size
            return resident, size
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def readahead_window(path, default: int | None = 128 << 10) -> int | None:
    """Bytes the kernel reads ahead in `path`: read_ahead_kb of the device holding it (a
    partition's is its disk's), else `default` (the kernel's own default, 128 KiB)."""
    dev = os.stat(path).st_dev
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    for bdi in (Path(base, "bdi"), Path(base, "..", "bdi"), Path(base, "queue"), Path(base, "..", "queue")):
        try:
            return int((bdi / "read_ahead_kb").read_text()) << 10
        except (OSError, ValueError):
            pass
    return default


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [("nr_cache", ctypes.c_uint64), ("nr_dirty", ctypes.c_uint64), ("nr_writeback", ctypes.c_uint64),
                ("nr_evicted", ctypes.c_uint64), ("nr_recently_evicted", ctypes.c_uint64)]


_SYS_CACHESTAT = [451 if platform.machine() in ("x86_64", "aarch64", "arm64", "riscv64") else None]


def cached_pages(fd: int, offset: int, length: int) -> tuple[int, int]:
    """(resident pages, pages) covering bytes [offset, offset + length) of the open file `fd`:
    cachestat(2) (Linux 6.5+; no map, one syscall), else mincore on a map of the range."""
    if length <= 0:
        return 0, 0
    lo = offset - offset % PAGE
    pages = (offset + length - lo + PAGE - 1) // PAGE
    if _SYS_CACHESTAT[0] is not None:
        rng, st = _Range(lo, pages * PAGE), _Stat()
        if _libc.syscall(_SYS_CACHESTAT[0], fd, ctypes.byref(rng), ctypes.byref(st), 0) == 0:
            return min(int(st.nr_cache), pages), pages
        _SYS_CACHESTAT[0] = None  # ENOSYS: an older kernel; mincore from now on
    n = min(pages * PAGE, max(0, os.fstat(fd).st_size - lo))
    if n <= 0:
        return 0, pages
    addr = _libc.mmap(None, n, mmap.PROT_READ, mmap.MAP_SHARED, fd, lo)
    if addr in (None, _MAP_FAILED):
        return 0, pages
    try:
        bits = resident_pages(addr, n)
        return (bits.count(1) if bits is not None else 0), pages
    finally:
        _libc.munmap(addr, n)


_libc.madvise.restype = ctypes.c_int
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def advise_random(fd: int, addr: int = 0, size: int = 0) -> None:
    """Ask the kernel to read only what is asked of `fd` (POSIX_FADV_RANDOM) and of the map of it at
    [addr, addr + size) (MADV_RANDOM; page-aligned, as maps are): no read-around of a fault, no
    readahead of a read. For data larger than the memory a process may use (a capped run), where
    the device's read-around (8 MiB here) would be evicted before it is used."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    if addr and size:
        _libc.madvise(addr - addr % PAGE, size + addr % PAGE, mmap.MADV_RANDOM)


ADVISE_AHEAD = 1 << 20  # bytes advised WILLNEED beyond the read in progress (advised_ahead), at most
_window = ADVISE_AHEAD


def limit_advice(nbytes: int) -> None:
    """Advise at most `nbytes` ahead in this process (and those it forks) from now on: a run under
    a page-cache cap of SIZE sets SIZE / 8 (bench.run.capped). Pages being read are locked and
    cannot be reclaimed, so advice of a large share of a small cap in flight leaves the cgroup
    nothing to reclaim, and its OOM killer stops the loader (MNIST under 2.5 MiB with 1 MiB ahead
    per worker)."""
    global _window
    _window = max(PAGE, min(ADVISE_AHEAD, int(nbytes)))


def advice_window() -> int:
    """Bytes advised ahead of the reads in this process (ADVISE_AHEAD, or what limit_advice set)."""
    return _window


def advised_ahead(spans, limit: int | None = None):
    """Each (fd, offset, size) of `spans` in turn, once it and the spans after it, up to `limit`
    bytes (default advice_window()) beyond it, are advised WILLNEED: the kernel has that many bytes
    of misses in flight while each is read, instead of one read at a time. Bounded, not a whole
    batch at once: under a memory cap, pages read far ahead are evicted before they are used and
    read again (a batch of 32 150 KB images from each of 2 workers is the whole of a 10 MiB cap)."""
    limit = _window if limit is None else limit
    j = ahead = 0
    for k, (fd, at, n) in enumerate(spans):
        while j < len(spans) and (j <= k or ahead + spans[j][2] <= limit):
            f, a, m = spans[j]
            if m:
                os.posix_fadvise(f, a, m, os.POSIX_FADV_WILLNEED)
            ahead, j = ahead + m, j + 1
        yield fd, at, n
        ahead -= n


def advise_random_fds(path) -> None:
    """POSIX_FADV_RANDOM on every descriptor this process has open on `path` (found in
    /proc/self/fd): for files a library opened itself (SQLite, pyarrow) and does not hand out.
    Its reads are then what it asks, not the kernel's readahead window (8 MiB here)."""
    real = os.path.realpath(path)
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == real:
                os.posix_fadvise(int(name), 0, 0, os.POSIX_FADV_RANDOM)
        except OSError:
            pass  # closed meanwhile, or not a file


def memory_available() -> int:
    """Bytes of memory this process may use: physical RAM, or its memory cgroup's limit (v2
    memory.max, v1 memory.limit_in_bytes) when that is lower. A file larger than this cannot stay
    in the page cache: readahead beyond what is asked for is then evicted before it is used."""
    best = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        own = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
        mounts = [line.partition(" - ") for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return best
    for left, _, right in mounts:
        point, tail = left.split()[4], right.split()
        if not tail or tail[0] not in ("cgroup", "cgroup2"):
            continue
        for _, ctrl, path in own:
            if tail[0] == "cgroup2" and ctrl == "":
                name = "memory.max"
            elif tail[0] == "cgroup" and "memory" in ctrl.split(",") and "memory" in tail[-1].split(","):
                name = "memory.limit_in_bytes"
            else:
                continue
            try:
                text = Path(point + path, name).read_text().strip()
            except OSError:
                continue
            if text.isdigit():
                best = min(best, int(text))
    return best

"""What the page cache holds, asked of the kernel: mincore over a memory range or a whole file, and
the read-ahead window of the device holding a file. Shared by the readers (a large sample copied
out of a map only when resident; LMDB's readahead rule) and the bench (residency checks)."""

from __future__ import annotations

import ctypes
import mmap
import os
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

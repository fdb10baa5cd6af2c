"""What the OS can tell us, and the machine's floors.

- Page-cache residency of files (mincore on a read-only shared map), eviction (drop_caches as
  root, else posix_fadvise DONTNEED per file) and warming (a sequential pre-read).
- I/O and CPU counters: /proc/<pid>/io (rchar, read_bytes, syscr), /proc/<pid>/stat (CPU
  seconds), and the sectors read by the block device holding a path (/sys/dev/block/M:m/stat).
- Floors, measured on the same files the layouts use: sequential 4 MiB reads (into a batch-sized
  buffer; warm, also copied out of a map), pread at the sample size at random offsets, and memory
  copy bandwidth.

Linux only; everything that cannot be measured is reported as None, never guessed.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAGE = mmap.PAGESIZE
READ_BLOCK = 4 << 20  # the sequential floor's read size
CLK_TCK = os.sysconf("SC_CLK_TCK")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.restype = ctypes.c_int
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


# ---------------------------------------------------------------- page cache

def expand(paths) -> list[Path]:
    """Files under the given paths (directories walked), sorted, each once."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(q for q in p.rglob("*") if q.is_file())
        elif p.exists():
            out.append(p)
    return sorted(set(out))


def file_residency(path) -> tuple[int, int]:
    """(resident bytes, size) of one file in the page cache, via mincore on a private map.

    We map with libc directly (not Python's mmap) so the map is released at once, before any
    eviction: a live map pins its pages."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap for mincore failed: {os.strerror(err)}", str(path))
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mincore failed: {os.strerror(err)}", str(path))
            bits = np.frombuffer(vec, np.uint8) & 1
            resident = int(bits.sum()) * PAGE
            if bits[-1]:  # the last page holds only the file's tail
                resident -= pages * PAGE - size
            return resident, size
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Residency:
    resident_bytes: int
    total_bytes: int
    files: int

    @property
    def fraction(self) -> float:
        return self.resident_bytes / self.total_bytes if self.total_bytes else 0.0


def residency(paths) -> Residency:
    resident = total = n = 0
    for p in expand(paths):
        r, s = file_residency(p)
        resident, total, n = resident + r, total + s, n + 1
    return Residency(resident, total, n)


def _drop_caches() -> bool:
    """Drop clean page cache, dentries and inodes (3, not 1: a cold loose-file read must also
    look its directory entries and inodes up on disk). Root only; False if not allowed."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _fadvise_dontneed(files) -> None:
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def evict(paths, method: str = "auto") -> str:
    """Push the files out of the page cache; returns the method used.

    Callers must close every handle and map on the files first (an open LMDB map keeps its
    pages), then check `residency` - this only tries. 'auto' = drop_caches when allowed (root),
    else posix_fadvise(DONTNEED) on every file."""
    files = expand(paths)
    os.sync()  # dirty pages cannot be dropped
    if method in ("auto", "drop_caches") and _drop_caches():
        return "drop_caches"
    if method == "drop_caches":
        method = "fadvise"  # not root: fall back, and say so
    _fadvise_dontneed(files)
    return "fadvise"


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
        fd = os.open(p, os.O_RDONLY)
        try:
            while got := os.readv(fd, [dest[(a := next(at)):a + block]]):
                total += got
        finally:
            os.close(fd)
        n += 1
    return total, time.perf_counter() - t0, n


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
        fd = os.open(p, os.O_RDONLY)
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


def warm(paths) -> Residency:
    read_sequential(expand(paths))
    return residency(paths)


# ---------------------------------------------------------------- counters

IO_FIELDS = ("rchar", "read_bytes", "syscr")


def proc_io(pid: int | str = "self") -> dict[str, int] | None:
    """rchar, read_bytes, syscr (and the write side) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = int(value)
    return out


def proc_cpu(pid: int | str = "self") -> float | None:
    """User + system CPU seconds of a whole process (all its threads), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class ProcSample:
    """Counters of one process at one moment."""

    rchar: int
    read_bytes: int
    syscr: int
    cpu_s: float


ZERO = ProcSample(0, 0, 0, 0.0)


def sample_processes(pids) -> dict[int, ProcSample]:
    """Counters for each pid (0 = this process). Processes that are gone are left out."""
    out = {}
    for pid in pids:
        key = "self" if pid == 0 else pid
        # this process: process_time() is exact; /proc's stat counts whole clock ticks
        io, cpu = proc_io(key), (time.process_time() if pid == 0 else proc_cpu(key))
        if io is not None and cpu is not None:
            out[pid] = ProcSample(io["rchar"], io["read_bytes"], io["syscr"], cpu)
    return out


def counters_delta(before: dict[int, ProcSample], after: dict[int, ProcSample]) -> tuple[dict, list[int]]:
    """Summed differences over processes. A process new since `before` (a worker started during
    the epoch) starts from zero; one missing from `after` exited before we read it: its pid is
    returned so the run can say its counters are incomplete."""
    total = dict(rchar=0, read_bytes=0, syscr=0, cpu_s=0.0)
    for pid, a in after.items():
        b = before.get(pid, ZERO)
        total["rchar"] += a.rchar - b.rchar
        total["read_bytes"] += a.read_bytes - b.read_bytes
        total["syscr"] += a.syscr - b.syscr
        total["cpu_s"] += a.cpu_s - b.cpu_s
    lost = sorted(set(before) - set(after))
    total["cpu_s"] = round(total["cpu_s"], 6)
    return total, lost


@dataclass(frozen=True)
class BlockDevice:
    name: str
    stat_path: str

    def sectors_read(self) -> int:
        """512-byte sectors read since boot (field 3 of the stat file; always 512-byte units)."""
        return int(Path(self.stat_path).read_text().split()[2])


def block_device(path) -> BlockDevice | None:
    """The block device holding `path` (a partition has its own stat file), or None for
    filesystems without one (tmpfs, overlay, network)."""
    dev = os.stat(path).st_dev
    sys_dir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    stat = sys_dir / "stat"
    if not stat.exists():
        return None
    name = sys_dir.resolve().name
    for line in (sys_dir / "uevent").read_text().splitlines():
        if line.startswith("DEVNAME="):
            name = line.split("=", 1)[1]
    return BlockDevice(name, str(stat))


def filesystem(path) -> dict:
    """Mount point, filesystem type and source of the mount holding `path` (from mountinfo)."""
    real = os.path.realpath(path)
    best = {"mount_point": None, "fstype": None, "source": None}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        mount = fields[4].encode().decode("unicode_escape")  # spaces are written as \040
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best["mount_point"] or ""):
            best = {"mount_point": mount, "fstype": tail[0], "source": tail[1] if len(tail) > 1 else None}
    return best


# ---------------------------------------------------------------- floors

@dataclass(frozen=True)
class PreadResult:
    path: str
    sample_bytes: int
    reads: int
    seconds: float
    latencies_s: tuple[float, ...]


def pread_random(path, sample_bytes: int, max_reads: int = 2000, seconds: float = 2.0,
                 seed: int = 0) -> PreadResult:
    """pread of `sample_bytes` at random non-overlapping sample-sized slots of one file, so a
    cold file stays cold read after read. Stops after max_reads or `seconds`."""
    size = os.path.getsize(path)
    sample_bytes = max(1, min(sample_bytes, size))
    slots = np.random.default_rng(seed).permutation(max(1, size // sample_bytes))[:max_reads]
    buf = bytearray(sample_bytes)
    lat = []
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        for slot in slots.tolist():
            t = time.perf_counter()
            got = os.preadv(fd, [buf], slot * sample_bytes)
            lat.append(time.perf_counter() - t)
            if got != sample_bytes:
                raise OSError(f"short read of {path} at {slot * sample_bytes}: {got} of {sample_bytes} bytes")
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

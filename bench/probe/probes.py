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

import errno
import functools
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from generator.errors import CorpusError
from generator.safeio import kind_of
from loaders.pagecache import file_residency

from .drops import own_drop

CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------- corpus files that change under us

class CorpusChanged(CorpusError):
    """A corpus file vanished or became unreadable while the bench was using it."""


def corpus_changed(exc: OSError, what: str) -> CorpusError:
    """The error for `exc` met on a corpus file while `what`: a permission or a link loop is named as
    what it is (the corpus did not change: its files cannot be read as they are); a file gone or
    failing otherwise, as the corpus changing during the run. Limits (EMFILE, ENOMEM) are named as
    limits (generator.errors.os_reason)."""
    from generator.errors import os_reason

    name = exc.filename or "a corpus file"
    reason = os_reason(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return CorpusError(f"{name} cannot be read ({reason}) while {what}: give this user read access to the "
                           f"corpus's files (e.g. chmod -R a+rX on the corpus) and rerun")
    if exc.errno == errno.ELOOP:
        return CorpusError(f"{name} is a symbolic link loop ({reason}) while {what}: the corpus's files must be "
                           f"files; replace the link, check with python -m loaders verify, and rerun")
    happened = "vanished" if exc.errno == errno.ENOENT else f"could not be read ({reason})"
    return CorpusChanged(f"{name} {happened} while {what}: the corpus changed during "
                         f"the run (a file moved or deleted, or the corpus regenerated); leave it alone while it is "
                         f"benchmarked, check it with python -m loaders verify, and rerun")


def names_corpus_files(what: str):
    """Decorator: an OSError on a corpus file becomes CorpusChanged naming the file and `what`."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except OSError as exc:
                raise corpus_changed(exc, what) from None
        return inner
    return wrap


# ---------------------------------------------------------------- page cache

@names_corpus_files("listing the corpus files")
def expand(paths) -> list[Path]:
    """Files under the given paths (directories walked), sorted, each once. A listed sample that is
    missing is left out: reading it names it (SampleError, `... missing`), as damage, before any
    result is kept; one that vanishes after this listing is CorpusChanged where it is opened."""
    out = []
    for p in map(Path, paths):
        try:
            mode = p.stat().st_mode  # one stat a path (is_dir then is_file took two)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            _walk(str(p), out)
        elif stat.S_ISREG(mode):
            out.append(p)
        else:  # a FIFO would hang the floors' reads, a device never end them
            raise CorpusError(f"{p} is {kind_of(mode)}, not a regular file; the corpus is damaged or "
                              f"not ours: check it with python -m loaders verify, or regenerate it with --force")
    return sorted(set(out))


def _walk(top: str, out: list) -> None:
    """The regular files under `top` (symlinks to files followed, as Path.is_file did), by
    scandir: its entries carry their type, so a tree of 25,000 loose files takes no stat each."""
    with os.scandir(top) as entries:
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                _walk(e.path, out)
            elif e.is_file():
                out.append(Path(e.path))


@dataclass(frozen=True)
class Residency:
    resident_bytes: int
    total_bytes: int
    files: int

    @property
    def fraction(self) -> float:
        return self.resident_bytes / self.total_bytes if self.total_bytes else 0.0


@names_corpus_files("checking page-cache residency")
def residency(paths) -> Residency:
    resident = total = n = 0
    for p in expand(paths):
        r, s = file_residency(p)
        resident, total, n = resident + r, total + s, n + 1
    return Residency(resident, total, n)


def _drop_caches() -> bool:
    """Drop clean page cache, dentries and inodes (3, not 1: a cold loose-file read must also
    look its directory entries and inodes up on disk). Root only; False if not allowed. Counted as
    this process's own drop (bench.probe.drops), so that it is not taken for another's."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    own_drop()
    return True


def _fadvise_dontneed(files) -> None:
    for p in files:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@names_corpus_files("evicting the corpus from the page cache")
def evict(paths, method: str = "auto") -> str:
    """Push the files out of the page cache; returns the method used.

    Callers must close every handle and map on the files first (an open LMDB map keeps its
    pages), then check `residency` - this only tries. 'auto' = drop_caches when allowed (root),
    else posix_fadvise(DONTNEED) on every file."""
    os.sync()  # dirty pages cannot be dropped
    if method in ("auto", "drop_caches") and _drop_caches():
        return "drop_caches"  # all of the machine's clean pages: no file list needed
    if method == "drop_caches":
        method = "fadvise"  # not root: fall back, and say so
    _fadvise_dontneed(expand(paths))
    return "fadvise"


@names_corpus_files("warming the page cache")
def warm(paths) -> Residency:
    """Read every file end to end (into one reused buffer), then measure the residency."""
    buf = bytearray(4 << 20)
    for p in expand(paths):
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        try:
            while os.readv(fd, [buf]):
                pass
        finally:
            os.close(fd)
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


def loop_backing(path) -> Path | None:
    """The file behind the loop device that holds `path` (a filesystem image mounted with -o loop,
    as Apptainer and SquashFS images are), or None when `path` is not on a loop device. The
    image's own pages in the page cache serve the loop device's reads: evicting the corpus's
    files alone does not make such a corpus cold."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    sys_dir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    try:
        real = sys_dir.resolve()
    except OSError:
        return None
    for loop in (real / "loop", real.parent / "loop"):  # the device itself, or a partition of it
        try:
            backing = (loop / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing:
            return Path(backing.removesuffix(" (deleted)"))
    return None


def mounts() -> list[tuple[str, str, str | None, str]]:
    """(mount point, fstype, source, super options) of every mount this process sees, from
    /proc/self/mountinfo (empty where it cannot be read)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        mount = fields[4].encode().decode("unicode_escape")  # spaces are written as \040
        out.append((mount, tail[0] if tail else "", tail[1] if len(tail) > 1 else None,
                    tail[2] if len(tail) > 2 else ""))
    return out


def filesystem(path) -> dict:
    """Mount point, filesystem type and source of the mount holding `path` (from mountinfo)."""
    real = os.path.realpath(path)
    best = {"mount_point": None, "fstype": None, "source": None}
    for mount, fstype, source, _ in mounts():
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best["mount_point"] or ""):
            best = {"mount_point": mount, "fstype": fstype, "source": source}
    return best



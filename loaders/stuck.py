"""What a thread of this process that makes no progress is doing, as the kernel and the interpreter
see it: one phrase for a stall message (loaders.workers' thread pool).

    doing(thread, reader, indices) -> "waiting on I/O it cannot leave (...), in openat of
                                       /corpus/files/3/00023.tif (sample 23)"

From /proc/self/task/<tid>: the thread's state (`stat`: D is uninterruptible I/O, the mark of a
hung mount or device) and the system call it is blocked in (`syscall`: its number and arguments).
A call on a descriptor (read, pread64, readv, fstat...) names the descriptor's file
(/proc/self/fd/<fd>) and, for the positioned reads, the offset; a call on a path (openat, statx,
newfstatat...) names the path, read from this process's own memory (/proc/self/mem) at the
argument's address and joined to its directory descriptor's path. The file, and the offset where
there is one, name the sample among `indices` through the reader (Reader.where, Reader.extents).
Otherwise (not in a system call: busy, or faulting in a page of a map; a wait that is not on a
file, such as a lock; or a kernel that does not say) the thread's innermost Python frame outside
the standard library names where it is. Linux x86-64 and arm64 system
call numbers; elsewhere only the state and the frame. Nothing here raises: what cannot be read is
left out of the phrase.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
import threading

STATES = {"D": "waiting on I/O it cannot leave (a hung mount or device?)",
          "S": "waiting in the kernel", "R": "running", "T": "stopped", "t": "stopped by a tracer"}
AT_FDCWD = -100
# name: (x86-64 number, arm64 number, arguments: "fd" (a descriptor first), "at" (dirfd, path),
# "path" (a path first)); `pos`: the argument holding the file offset of a positioned read
CALLS = {"read": (0, 63, "fd"), "pread64": (17, 67, "fd"), "readv": (19, 65, "fd"), "preadv": (295, 69, "fd"),
         "preadv2": (327, 286, "fd"), "fstat": (5, 80, "fd"), "lseek": (8, 62, "fd"), "mmap": (9, 222, None),
         "getdents64": (217, 61, "fd"), "fadvise64": (221, 223, "fd"), "fsync": (74, 82, "fd"),
         "close": (3, 57, "fd"), "ioctl": (16, 29, "fd"), "openat": (257, 56, "at"), "newfstatat": (262, 79, "at"),
         "statx": (332, 291, "at"), "faccessat": (269, 48, "at"), "readlinkat": (267, 78, "at"),
         "open": (2, None, "path"), "stat": (4, None, "path"), "lstat": (6, None, "path"),
         "access": (21, None, "path"), "futex": (202, 98, None), "io_uring_enter": (426, 426, "fd")}
POSITIONED = {"pread64": 3, "preadv": 3, "preadv2": 3}
ARCH = {"x86_64": 0, "amd64": 0, "aarch64": 1, "arm64": 1}.get(platform.machine().lower())
BY_NUMBER = {} if ARCH is None else {v[ARCH]: (k, v[2]) for k, v in CALLS.items() if v[ARCH] is not None}


def doing(thread: threading.Thread, reader=None, indices=()) -> str:
    """One phrase: the thread's state, the call and file it is blocked on (and its sample among
    `indices` when the reader can tell), else where in Python it is."""
    tid = thread.native_id
    parts = [STATES.get(_state(tid), "in an unknown state")]
    call = _syscall(tid)
    if call is not None:
        name, path, offset = call
        at = f" at byte {offset:,}" if offset is not None else ""
        phrase = f"in {name}" + (f" of {path}{at}" if path else "")
        sample = _sample(reader, indices, path, offset) if path else None
        parts.append(phrase + (f" (sample {sample})" if sample is not None else ""))
    if call is None or not call[1]:
        frame = _frame(thread)
        if frame:
            parts.append(f"at {frame}")
    return ", ".join(parts)


def _state(tid) -> str:
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError, TypeError):
        return "?"


def _syscall(tid) -> tuple[str, str | None, int | None] | None:
    """(call name, the file it is on or None, the offset or None) of the system call thread `tid`
    is in; None when it is in none (or the kernel does not say, or the call is not known here)."""
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            fields = f.read().split()
        number = int(fields[0])
        args = [int(a, 16) for a in fields[1:7]]
    except (OSError, ValueError, IndexError, TypeError):
        return None
    if number < 0 or number not in BY_NUMBER:
        return None
    name, kind = BY_NUMBER[number]
    path = None
    if kind == "fd":
        path = _fd_path(args[0])
    elif kind == "at":
        path = _at_path(_signed(args[0]), _string_at(args[1]))
    elif kind == "path":
        path = _string_at(args[0])
    pos = POSITIONED.get(name)
    return name, path, (args[pos] if pos is not None and path else None)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _string_at(address: int, limit: int = 4096) -> str | None:
    """The NUL-terminated string at `address` in this process's memory (a path argument)."""
    if not address:
        return None
    try:
        with open("/proc/self/mem", "rb", buffering=0) as mem:
            mem.seek(address)
            raw = mem.read(limit)
    except (OSError, OverflowError, ValueError):
        return None
    end = raw.find(b"\0")
    return os.fsdecode(raw if end < 0 else raw[:end]) or None


def _at_path(dirfd: int, name: str | None) -> str | None:
    if name is None or os.path.isabs(name):
        return name
    base = os.getcwd() if dirfd == AT_FDCWD else _fd_path(dirfd)
    return os.path.join(base, name) if base else name


def _sample(reader, indices, path: str, offset: int | None) -> int | None:
    """Which of `indices` lives in `path` (at `offset`, for a file holding many): the one sample
    whose reader.where() is that file (a file per sample), else the one whose extents() hold the
    offset; None when neither says."""
    if reader is None or not len(indices):
        return None
    idx = [int(i) for i in indices]
    real = os.path.realpath(path)
    try:
        there = [i for i in idx if os.path.realpath(reader.where(i)) == real]
        if len(there) == 1:
            return there[0]
        extents = reader.extents(idx) if offset is not None else None
    except Exception:  # a reader that cannot say (or a file gone): the file alone is named
        return None
    for i, ranges in zip(idx, extents or ()):
        for f, start, length in ranges:
            if start <= offset < start + length and os.path.realpath(f) == real:
                return i
    return None


def _frame(thread: threading.Thread) -> str | None:
    """file:line (function) of the thread's innermost Python frame outside the standard library
    (a wait in threading.py says less than the code that waits), else its innermost."""
    frame = sys._current_frames().get(thread.ident)
    if frame is None:
        return None
    stdlib = sysconfig.get_paths()["stdlib"] + os.sep
    inner, f = frame, frame
    while f is not None and f.f_code.co_filename.startswith(stdlib):
        f = f.f_back
    f = f or inner
    return f"{f.f_code.co_filename}:{f.f_lineno} ({f.f_code.co_name})"

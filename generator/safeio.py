"""Reading the files the tools are pointed at (manifests, markers, results): each must be a regular
file of a bounded size. The one helper everything uses: opened O_NONBLOCK, so a FIFO cannot hang
the open or the read; fstat'ed, so a FIFO, a device (/dev/zero behind a link) or a directory is
refused before a byte is read; read to at most `limit` bytes, so nothing is read until memory
runs out, even from a file that grows while it is read."""

from __future__ import annotations

import errno
import os
import stat

KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


class FileRefused(OSError):
    """Not a regular file, or larger than allowed. str() is the reason, naming the path."""

    def __str__(self) -> str:
        return f"{self.filename} {self.strerror}"


def kind_of(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def read_regular(path, limit: int) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes; FileRefused otherwise (an
    OSError, as a missing or unreadable file is)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(errno.EINVAL, f"is {kind_of(st.st_mode)}, not a regular file", str(path))
        if st.st_size > limit:
            raise FileRefused(errno.EFBIG, f"is {st.st_size:,} bytes, more than the {limit:,} allowed", str(path))
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 24, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileRefused(errno.EFBIG, f"grew past the {limit:,} bytes allowed while being read", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)

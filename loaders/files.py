"""`files` reader: one file per sample, files/<class>/<index>.<ext> (see generator.layouts.files;
the class directory's name and, in an ingested corpus of mixed formats, the extension depend on
the manifest's format version, and every version's are read: from version 4 each sample's own
format's, from the manifest's samples.format; before it `.img`).

Each sample is os.open + read + close, the open relative to a per-process handle on its label
directory (one path component to look up, not the whole path); a corpus of more classes than the
process may keep open (generator.limits.keep_open: an eighth of `ulimit -n`) keeps only that many
directory handles, least recently used closed first (loaders.handles.HandleLRU), and a batch keeps
at most that many of its files open at once. Reading size + 1 bytes tells a
truncated file and an overlong one from a good one in the same single syscall. A batch is read
in two passes (see _read_many), so that cold, all its reads are in flight at once. Large
fixed-size samples are read with readv: header into a scratch buffer, pixels straight into the
batch.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from generator.errors import SampleError, os_reason
from generator.layouts.files import class_dir, index_width, sample_ext
from generator.limits import keep_open

from .base import Reader
from .handles import HandleLRU
from .plain import plain_decode

SYMLINK = "a symbolic link, refused: a corpus is read only from regular files and directories inside it"


class FilesReader(Reader):
    layout = "files"
    # per label: an O_DIRECTORY fd, or None when the directory is missing; or, with more classes than
    # keep_open() allows, a HandleLRU of them (_dircache, _dirs None); _pending: files a batch keeps open
    handles = ("_dirs", "_dircache", "_pending")
    naive = "the plain decode of each file (tifffile.imread; PIL.Image.open for PNG/JPEG/WebP; numpy.fromfile for raw)"
    read_unit = ("each file's own metadata beside its data: its inode and directory blocks, read again from the "
                 "device once a cap smaller than the tree's metadata has evicted them")

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        # Per-label directory prefixes: a path is then two string joins, not a format call.
        version = self.manifest.version
        self._prefix = [f"{self.target}/{class_dir(self.spec, label, version)}/" for label in range(self.spec.num_classes)]
        self._width = index_width(self.spec)
        formats = self.manifest.formats  # an ingested corpus of mixed formats, version 4 on: each its own
        if formats is None:  # one extension for every file
            self._ext, self._exts = "." + sample_ext(self.spec, version), None
        else:  # each file its format's: one string per format, shared by its samples
            ext_of = {f: f".{sample_ext(self.spec, version, f)}" for f in set(formats)}
            self._ext, self._exts = None, [ext_of[f] for f in formats]
        self._labels = self._label_arr.tolist()

    def path(self, i: int) -> str:
        return self._prefix[self._labels[i]] + self.name(i)

    def name(self, i: int) -> str:
        return str(i).zfill(self._width) + (self._ext if self._exts is None else self._exts[i])

    def _open(self, index: int) -> None:
        keep = keep_open()
        self._pending = keep
        if len(self._prefix) > keep:  # more class directories than may stay open: the recently used ones
            self._dircache = HandleLRU(keep, self._open_dir, _close_dir)
            return
        dirs = []
        for prefix in self._prefix:
            try:
                # O_NOFOLLOW (and no trailing slash): a symlinked class directory could lead outside the corpus
                dirs.append(os.open(prefix[:-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW))
            except FileNotFoundError:
                dirs.append(None)  # its samples are reported missing when read
            except OSError as exc:
                for d in dirs:
                    if d is not None:
                        os.close(d)
                problem = (SYMLINK if os.path.islink(prefix[:-1]) else f"unreadable directory: {os_reason(exc)}")
                raise SampleError(self.layout, index, prefix, problem) from None
        self._dirs = dirs

    def _open_dir(self, label: int) -> int | None:
        """Label's class directory, O_NOFOLLOW; None when it is missing (its samples are then)."""
        path = self._prefix[label][:-1]
        try:
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError:
            if os.path.islink(path):  # named as a link (ELOOP), whatever the open said
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
            raise

    def _close(self) -> None:
        for d in self._dirs or ():
            if d is not None:
                os.close(d)
        if self._dircache is not None:
            self._dircache.close()

    def _open_sample(self, i: int) -> int:
        # A symlink fails (ELOOP); O_NONBLOCK (no effect on regular files) keeps a FIFO from blocking the open.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        if self._dirs is not None:
            d = self._dirs[self._labels[i]]
            if d is None:
                raise FileNotFoundError
            return os.open(self.name(i), flags, dir_fd=d)
        label = self._labels[i]
        d = self._dircache.acquire(label)
        try:
            if d is None:
                raise FileNotFoundError
            return os.open(self.name(i), flags, dir_fd=d)
        finally:
            self._dircache.release(label)

    def where(self, index: int) -> str:
        return self.path(index)

    def paths(self) -> list[Path]:
        return [Path(self.path(i)) for i in range(self.spec.count)]

    no_extents = None

    def extents(self, indices):
        """Each sample is its whole file: (path, 0, size)."""
        return [[(self.path(i), 0, self._sizes[i])] for i in self.check_indices(indices).tolist()]

    def unexpected_entries(self) -> list[str]:
        """Files under files/ that are not samples, and symlinked directories (never followed)."""
        if not self.target.is_dir():
            return []
        expected = {self.path(i) for i in range(len(self))}
        extra = []
        for top, dirs, names in os.walk(self.target):
            extra += [os.path.join(top, n) for n in names if os.path.join(top, n) not in expected]
            extra += [os.path.join(top, d) for d in dirs if os.path.islink(os.path.join(top, d))]
        return sorted(extra)

    def naive_batch(self, indices):
        idx = np.asarray(indices)
        images = [plain_decode(self.path(i), self.codec) for i in idx.tolist()]
        return np.stack(images), idx, int(self._size_arr[idx].sum())

    def _fail_os(self, i: int, exc: OSError):
        problem = ("missing (no such file)" if isinstance(exc, FileNotFoundError) else
                   SYMLINK if exc.errno == errno.ELOOP else f"unreadable: {os_reason(exc)}")
        raise SampleError(self.layout, i, self.path(i), problem) from None

    def _read_one(self, i: int) -> bytes:
        want = self._sizes[i] + 1
        try:
            fd = self._open_sample(i)
            try:
                data = os.read(fd, want)
                while 0 < len(data) < want - 1:  # a short read before the end (rare): go on
                    more = os.read(fd, want - len(data))
                    if not more:
                        break
                    data += more
            finally:
                os.close(fd)
        except OSError as exc:
            self._fail_os(i, exc)
        return data

    def _read_many(self, idx: list[int]) -> list:
        """The batch's payloads, in two passes. First each file is opened and read with RWF_NOWAIT:
        one in the page cache is read there and then; for one that is not, the attempt starts the
        kernel's readahead and fails, and the file is read, waiting, in the second pass. Cold, the
        batch's reads are then all in flight together instead of one after another (docs/lab/2026-11-26-loader-speed-mnist.md
        has the figures, cold and warm)."""
        out, later = [], []  # later: (position, index, fd, buffer, bytes already in it)
        try:
            for k, i in enumerate(idx):
                if len(later) >= self._pending:  # no more files open at once than the limit allows
                    self._finish(later)
                buf = bytearray(self._sizes[i] + 1)  # one byte more: an overlong file shows
                try:
                    fd = self._open_sample(i)
                except OSError as exc:
                    self._fail_os(i, exc)
                try:
                    got = _read_nowait(fd, buf)
                except OSError as exc:
                    os.close(fd)
                    self._fail_os(i, exc)
                if got is None or 0 < got < len(buf) - 1:  # not (all) in the page cache: pass 2
                    later.append((k, i, fd, buf, got or 0))
                else:
                    os.close(fd)
                    del buf[got:]
                out.append(buf)
            self._finish(later)
        finally:  # an error: close what is still open
            for _, _, fd, _, _ in later:
                os.close(fd)
        return out

    def _finish(self, later: list) -> None:
        """_read_many's second pass over `later` (emptied): each file read, waiting, and closed."""
        while later:
            k, i, fd, buf, have = later.pop()
            try:
                while have < len(buf) - 1 and (got := os.preadv(fd, [memoryview(buf)[have:]], have)):
                    have += got
            except OSError as exc:
                self._fail_os(i, exc)
            finally:
                os.close(fd)
            del buf[have:]

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        if self.small:
            return self._assemble(idx, self._read_many(idx), out)
        # Large: readv puts the header in a scratch buffer and the pixels straight into the batch.
        h, n = len(self.codec.header), self.spec.pixel_bytes
        flat = memoryview(out).cast("B")
        head = bytearray(h)
        extra = bytearray(1)  # catches a file longer than the manifest says
        for k, i in enumerate(idx):
            row = flat[k * n:(k + 1) * n]
            try:
                fd = self._open_sample(i)
                try:
                    got = os.readv(fd, [head, row, extra])
                finally:
                    os.close(fd)
            except OSError as exc:
                self._fail_os(i, exc)
            if got < h + n:  # short: read it whole (a rare slow path) and let the checks judge it
                self._place(i, self._read_one(i), flat, k, out)
                continue
            self._check_read(i, head, row, got, k, out)


def _close_dir(d: int | None) -> None:
    if d is not None:
        os.close(d)


def _read_nowait(fd: int, buf: bytearray) -> int | None:
    """Bytes read into `buf` from the start of the file without waiting for the disk, or None when
    none were in the page cache (the read has then started the kernel's readahead)."""
    try:
        return os.preadv(fd, [buf], 0, os.RWF_NOWAIT)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without it: just read
            return None
        raise


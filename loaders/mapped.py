"""Readers whose samples lie at known offsets of one file, read through a read-only memory map.

A layout subclasses MappedReader and says, once per process, where every sample's bytes lie in
its data file (`_locate`: file offsets and lengths, from the layout's own index); this module
maps the file and reads samples from that table with no library call per sample:

- read / read_many: bytes copied out of one memoryview of the map (valid after the call);
- read_batch of fixed-size payloads: small ones assembled a batch at a time (Reader._assemble);
  a large one copied from the map into the batch when all its pages are in the page cache
  (mincore), else read with preadv straight into the batch (faults on a map wait for one
  readahead window at a time; the kernel's readahead streams a preadv), as loaders/hdf5.py does.

A data file larger than the memory this process may use (RAM, or its cgroup's limit: a capped
run) is advised random access, map and fd alike, as loaders/hdf5.py does: the device's
read-around of a fault would be evicted before it is used. Its payloads are then not copied out
of the map, whose faults would fetch them one 4 KiB page at a time, one after another: a batch's
are each read with one pread, the next ones advised WILLNEED meanwhile (Reader._pread_advised).

Safety: every sample's range is checked against the file's size when the file is opened, so a
truncated file is a SampleError naming the sample, never a page touched past the end (SIGBUS).
Index entries that are out of range, backwards, or of another length than the manifest's are
the sample's named error. The table is `spec.count` entries long whatever the file claims, so
hostile metadata cannot make it allocate more. (A file truncated *while* it is mapped is still a
SIGBUS: docs/reliability.md, "Not covered".)
"""

from __future__ import annotations

import mmap
import os

import numpy as np

from generator.errors import SampleError, os_reason

from .base import Reader
from .pagecache import advise_random, advised_ahead, memory_available, range_resident


class Table:
    """Where each sample lies: file offset and length, and whether the layout's index has it at all
    (`absent` says what is wrong with one that is not present)."""

    def __init__(self, count: int):
        self.starts = np.zeros(count, np.int64)
        self.lens = np.zeros(count, np.int64)
        self.present = np.zeros(count, bool)
        self.absent = "missing: the index has no entry for it"


class MappedReader(Reader):
    reads_through_map = True
    handles = ("_view", "_addr", "_fd", "_starts", "_ok", "_table", "_file_size", "_unmap", "_advised")

    # -- what a layout provides --------------------------------------------------------------------

    def data_path(self):
        """The file that holds the payloads (default: the layout's target)."""
        return self.target

    def _locate(self, index: int) -> Table:
        """The table of every sample, from the layout's index, after the data file is mapped
        (self._view, self._addr, self._file_size are set). Raises SampleError for `index` or
        CorpusError when the layout cannot be read at all."""
        raise NotImplementedError

    def _map_file(self, fd: int, size: int):
        """(memoryview of the whole file, its address, a function that unmaps it). Default: mmap."""
        m = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        view = memoryview(m)
        addr = np.frombuffer(m, np.uint8).ctypes.data

        def unmap():
            try:
                view.release()
                m.close()
            except BufferError:  # slices still referenced (a SampleError's traceback): unmapped when they go
                pass

        return view, addr, unmap

    # -- opening -----------------------------------------------------------------------------------

    def _open(self, index: int) -> None:
        path = self.data_path()
        self.check_inside(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # NONBLOCK: a FIFO never hangs us
        except FileNotFoundError:
            raise SampleError(self.layout, index, str(path), "missing (no such file)") from None
        except OSError as exc:
            raise SampleError(self.layout, index, str(path), f"cannot open: {os_reason(exc)}") from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise SampleError(self.layout, index, str(path), "truncated: the file is empty")
            self._view, self._addr, self._unmap = self._map_file(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._file_size = fd, size
        self._advised = size > memory_available()  # larger than this process's memory (a capped run):
        if self._advised:  # read what is asked for only; read-around would be evicted unused
            advise_random(fd, self._addr, size)
        try:
            table = self._locate(index)
        except BaseException:
            self._close()
            raise
        starts, lens = table.starts, table.lens
        ok = table.present & (starts >= 0) & (lens >= 0)
        ends = np.where(ok, starts + lens, 0)
        self._table = table
        self._ok = ok & (ends <= size) & (lens == self._size_arr)
        self._starts = starts.tolist()

    def _close(self) -> None:
        if self._unmap is not None:
            self._unmap()
        if self._fd is not None:
            os.close(self._fd)
        self._view = self._unmap = self._fd = None

    # -- where samples lie --------------------------------------------------------------------------

    no_extents = None

    def extents(self, indices):
        """Each sample's bytes in the data file, from the table `_locate` made of the layout's own
        index (never from the samples' pages). A sample the table has wrong is its named error."""
        idx = self.check_indices(indices)
        if not len(idx):
            return []
        self._ensure_open(int(idx[0]))
        idx = idx.tolist()
        self._check_batch(idx)
        path, starts, sizes = str(self.data_path()), self._starts, self._sizes
        return [[(path, starts[i], sizes[i])] for i in idx]

    # -- errors ------------------------------------------------------------------------------------

    def _fail_table(self, i: int):
        t = self._table
        a, n = int(t.starts[i]), int(t.lens[i])
        if not t.present[i]:
            problem = t.absent
        elif a < 0 or n < 0:
            problem = f"missing: the index says {n} bytes at {a}"
        elif a + n > self._file_size:
            problem = (f"truncated: {self.data_path().name} ends at byte {self._file_size:,}, before the "
                       f"sample's end at {a + n:,}")
        else:
            self.fail_size(i, n)
        raise SampleError(self.layout, i, self.where(i), problem)

    def _check_batch(self, idx: list[int]) -> None:
        if not self._ok[idx].all():
            self._fail_table(next(i for i in idx if not self._ok[i]))

    # -- reading -----------------------------------------------------------------------------------

    def _read_one(self, i: int):
        if not self._ok[i]:
            self._fail_table(i)
        if self._advised:
            return self._read_many([i])[0]
        a = self._starts[i]
        return self._view[a:a + self._sizes[i]].tobytes()

    def _read_many(self, idx: list[int]) -> list:
        self._check_batch(idx)
        starts, sizes = self._starts, self._sizes
        if self._advised:  # see the module docstring
            fd = self._fd
            return self._pread_advised(idx, [(fd, starts[i], sizes[i]) for i in idx])
        view = self._view
        return [view[starts[i]:starts[i] + sizes[i]].tobytes() for i in idx]

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        self._check_batch(idx)
        view, starts, size = self._view, self._starts, self.codec.fixed_size
        if self.small:  # advised random (a capped run): each read by pread, not faulted in (_read_many)
            payloads = self._read_many(idx) if self._advised else [view[starts[i]:starts[i] + size] for i in idx]
            return self._assemble(idx, payloads, out)
        ahead = advised_ahead([(self._fd, starts[i], size) for i in idx]) if self._advised else None
        flat = memoryview(out).cast("B")
        h, n = len(self.codec.header), self.spec.pixel_bytes
        head = bytearray(h)
        for k, i in enumerate(idx):
            if ahead is not None:  # the misses ahead in flight meanwhile
                next(ahead)
            a = starts[i]
            if range_resident(self._addr, a, size):  # see the module docstring
                self._place(i, view[a:a + size], flat, k, out)
                continue
            row = flat[k * n:(k + 1) * n]
            try:
                got = os.preadv(self._fd, [head, row] if h else [row], a)
            except OSError as exc:
                raise SampleError(self.layout, i, self.where(i), f"unreadable: {os_reason(exc)}") from None
            self._check_read(i, head, row, got, k, out)

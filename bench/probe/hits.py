"""Page-cache hits measured at read time: a reader wrapper that, before each batch is read, asks the
kernel which pages of each sample's stored bytes are in the page cache.

For every sample read, the probe takes the pages covering its stored bytes (the layout's
`extents`: (file, offset, length) ranges per sample, the payload itself or, for zarr and
Parquet, the whole chunk the layout reads for it) and counts how many are resident
(cachestat(2), or mincore on a map of the range where cachestat is missing). Per epoch that gives:

- hit bytes: sum over samples of its payload size x (resident pages / its pages): payload served
  without a device read;
- miss page bytes: non-resident pages x page size (a range shared by several samples of one
  batch counted once): the least the device must read for the epoch (it cannot read less than
  a page, nor less than a whole chunk where the layout reads chunks; for samples smaller than a
  page this is above the missed payload).

The counters are shared with forked worker processes (a lock-protected shared array created
before the workers start); spawned workers cannot see it, so their runs report no hit ratio.
The probe costs one cachestat per sample (and an open/close per loose file); its time is
counted (`probe_s`) and is inside the epoch's wall time: the figure is then a slight
underestimate of the layout's speed, never an overestimate.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import time

from loaders.pagecache import cached_pages

PAGE = mmap.PAGESIZE
KEEP_FDS = 64  # files whose fds a probe keeps open (the first ones it sees; loose files beyond are opened per probe)


class HitCounter:
    """Totals shared by this process and the workers it forks: probed payload bytes, hit bytes,
    miss page bytes, probe nanoseconds."""

    _registry: dict[int, "HitCounter"] = {}

    def __init__(self):
        self.token = id(self)
        self.shared = multiprocessing.get_context("fork").Array("q", 4, lock=True)
        HitCounter._registry[self.token] = self

    def add(self, payload: int, hit: int, miss_pages: int, ns: int) -> None:
        with self.shared.get_lock():
            a = self.shared.get_obj()
            a[0] += payload
            a[1] += hit
            a[2] += miss_pages
            a[3] += ns

    def totals(self) -> tuple[int, int, int, int]:
        with self.shared.get_lock():
            return tuple(int(x) for x in self.shared.get_obj())

    def close(self) -> None:
        HitCounter._registry.pop(self.token, None)


class ProbedReader:
    """`reader` with each batch's page-cache hits counted into `counter` before it is read.
    Everything else is the reader's own (attributes are looked up on it)."""

    def __init__(self, reader, counter: HitCounter | None):
        self.__dict__["_reader"] = reader
        self.__dict__["_counter"] = counter
        self.__dict__["_fds"] = {}
        self.__dict__["_fd_pid"] = os.getpid()

    def __getattr__(self, name):
        return getattr(self.__dict__["_reader"], name)

    def __len__(self):
        return len(self._reader)

    def __getstate__(self):
        c = self.__dict__["_counter"]
        return {"reader": self.__dict__["_reader"], "token": c.token if c is not None else None}

    def __setstate__(self, state):
        # a forked worker finds the counter its parent made; a spawned one does not (no hits then)
        self.__init__(state["reader"], HitCounter._registry.get(state["token"]))

    def _probe(self, indices) -> None:
        counter = self.__dict__["_counter"]
        if counter is None:
            return
        reader = self.__dict__["_reader"]
        t0 = time.perf_counter_ns()
        extents = reader.extents(indices)
        if extents is None:
            return
        self._forget_parents_fds()
        sizes = reader._sizes
        payload = hit = miss = 0
        seen = set()  # a range several samples of the batch share (a Parquet column chunk) is missed once
        for i, ranges in zip(list(indices), extents):
            size = sizes[int(i)]
            res_i = pages_i = 0
            for rng in ranges:
                res, pages = self._cached(*rng)
                res_i, pages_i = res_i + res, pages_i + pages
                if rng not in seen:
                    seen.add(rng)
                    miss += (pages - res) * PAGE
            payload += size
            hit += size * res_i // pages_i if pages_i else size
        counter.add(payload, hit, miss, time.perf_counter_ns() - t0)

    def _forget_parents_fds(self) -> None:
        if self.__dict__["_fd_pid"] != os.getpid():  # forked: these fds are the parent's copies
            self.__dict__["_fds"].clear()
            self.__dict__["_fd_pid"] = os.getpid()

    def _cached(self, path: str, off: int, n: int) -> tuple[int, int]:
        """(resident pages, pages) of bytes [off, off + n) of `path`; the file's fd is kept when the
        layout has few files (KEEP_FDS), else opened for the call. (0, pages) when it cannot be
        opened: the read itself will name the problem."""
        fds = self.__dict__["_fds"]
        fd = fds.get(path)
        opened = fd is None
        if opened:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                return 0, -(-(off % PAGE + n) // PAGE)
        try:
            return cached_pages(fd, off, n)
        finally:
            if opened and len(fds) < KEEP_FDS:
                fds[path] = fd
            elif opened:
                os.close(fd)

    def close(self):
        for fd in self.__dict__["_fds"].values():
            if self.__dict__["_fd_pid"] == os.getpid():
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.__dict__["_fds"].clear()
        return self.__dict__["_reader"].close()

    def read(self, index):
        self._probe([index])
        return self.__dict__["_reader"].read(index)

    def read_many(self, indices):
        self._probe(indices)
        return self.__dict__["_reader"].read_many(indices)

    def read_batch(self, indices, out=None):
        self._probe(indices)
        return self.__dict__["_reader"].read_batch(indices, out)

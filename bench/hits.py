"""Page-cache hits measured at read time: a reader wrapper that, before each batch is read, asks the
kernel which pages of each sample's stored bytes are in the page cache.

For every sample read, the probe takes the pages covering its bytes (the layout's `extents`:
file, offset, length) and counts how many are resident (cachestat(2), or mincore on a map of
the range where cachestat is missing). Per epoch that gives:

- hit bytes: sum over samples of size x (resident pages / its pages): payload served without a
  device read;
- miss page bytes: non-resident pages x page size: the least the device must read for the
  epoch (it cannot read less than a page; for samples smaller than a page this is above the
  missed payload).

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
        fds = self.__dict__["_fds"]
        if self.__dict__["_fd_pid"] != os.getpid():  # forked: these fds are the parent's copies
            fds.clear()
            self.__dict__["_fd_pid"] = os.getpid()
        payload = hit = miss = 0
        keep = len({p for p, _, _ in extents}) == 1
        for path, off, n in extents:
            fd = fds.get(path)
            opened = fd is None
            if opened:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                except OSError:
                    continue  # the read itself will name the problem
            try:
                res, pages = cached_pages(fd, off, n)
            finally:
                if opened and not keep:
                    os.close(fd)
                elif opened:
                    fds[path] = fd
            payload += n
            hit += n * res // pages if pages else n
            miss += (pages - res) * PAGE
        counter.add(payload, hit, miss, time.perf_counter_ns() - t0)

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

"""What the record-stream readers (tar, tfrecord) share: shards, their indexes, their maps.

Shard k holds samples [k*S, min((k+1)*S, n)) in index order, S = the layout's
`samples_per_shard` manifest fact (generator.layouts.records). A shard is opened on its first
read in a process: its index file is read (its size checked first, so a hostile index never
makes a large allocation) and checked against the shard's size, and the shard is mapped read-only.
Each sample's payload position is found once per process (the subclass's `_locate`: the tar
member header or the TFRecord record checked and parsed) and remembered; `verify=True` checks the
container again on every read (TFRecord's crc32c, tar's header checksum) beside the payload's crc32.

Batch paths read in file order: read_many and read_batch sort a batch by index (= shard and
offset) and read it in that order, so a shard is read front to back; results come back in the
order asked. Large payloads (over 64 KiB) are copied out of the map when resident (mincore), else
read with preadv straight into the batch, as the HDF5 reader does (see its module docstring).
When the shards together are larger than the memory this process may use (RAM, or its cgroup's
limit: a capped run), each shard is advised random access, map and fd, as loaders/hdf5.py does:
read-around of a fault (the device's window, 8 MiB here) would be evicted before it is used,
and read_many then reads each payload with one pread, the next ones advised WILLNEED meanwhile,
instead of faulting its pages in one at a time (Reader._pread_advised).
Streaming readers (supports_streaming) give their shard boundaries to the `shards` sampler mode.

Open files: a shard open in a process costs two descriptors (ours and the one Python's mmap keeps).
A corpus of more shards than the process may keep open (generator.limits.keep_open: an eighth of
`ulimit -n`, two descriptors a shard) keeps only that many, least recently used closed first; a
shard in use by a thread is never closed under it (each read holds its shard, _held), and what a
read returns is then a copy, not a view of a map that may be closed. A shard's parsed index and
found positions are kept when it is closed, so reopening it reads no index again. Under the
limit nothing changes: every shard stays open and reads are views.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np

from generator.errors import CorpusError, SampleError, os_reason
from generator.layouts.records import shard_name
from generator.limits import keep_open

from .base import Reader
from .pagecache import advise_random, advised_ahead, memory_available, range_resident


MAX_OPEN_SHARDS = 16384  # maps at most, whatever `ulimit -n` allows: a quarter of Linux's default vm.max_map_count


def open_regular(layout: str, path: Path, i: int) -> tuple[int, int]:
    """(fd, size) of the regular file `path` that holds sample `i` of `layout`, opened read-only
    without following a link or waiting on a FIFO; anything else is that sample's SampleError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not hang us
    except FileNotFoundError:
        raise SampleError(layout, i, str(path), "missing (no such file)") from None
    except OSError as exc:
        raise SampleError(layout, i, str(path), f"unreadable: {os_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SampleError(layout, i, str(path), "unreadable: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # a missing shard is named when it is read


class Shard:
    """One shard opened in this process: its fd, map and the per-sample positions found so far."""

    def __init__(self, path: Path, fd: int, size: int):
        self.path, self.fd, self.size = path, fd, size
        self.map = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None
        self.view = memoryview(self.map) if self.map is not None else memoryview(b"")
        self.addr = np.frombuffer(self.map, np.uint8).ctypes.data if size else 0
        self.at: list[int] = []  # per local sample: payload file offset once checked, else -1
        self.extra = None  # what the subclass read from the index
        self.users = 0  # threads holding it (bounded readers: never closed while held)

    def close(self) -> None:
        self.view.release()
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:  # slices still referenced (an error's traceback): unmapped when they go
                pass
        os.close(self.fd)


class ShardedReader(Reader):
    supports_streaming = True
    reads_through_map = True
    # _keep: shards kept open at most; _bounded: the corpus has more (then _held, _parsed are used)
    handles = ("_open_shards", "_random", "_keep", "_bounded", "_holds", "_parsed")
    shard_ext: ClassVar[str]
    index_ext: ClassVar[str]
    max_index_bytes: ClassVar[int]  # per sample, an upper bound on the index file's size

    def __init__(self, root, manifest, *, verify: bool = False):
        super().__init__(root, manifest, verify=verify)
        facts = manifest.layouts[self.layout]
        per = facts.get("samples_per_shard")
        if type(per) is not int or not 1 <= per <= self.spec.count:
            raise CorpusError(f"{self.root}/manifest.json: the {self.layout} layout's samples_per_shard is {per!r}, "
                              f"not an integer in [1, {self.spec.count}]; the manifest was edited or is damaged: "
                              f"regenerate the corpus with --force")
        self.per_shard = per
        self.nshards = -(-self.spec.count // per)
        if facts.get("shards", self.nshards) != self.nshards:
            raise CorpusError(f"{self.root}/manifest.json: the {self.layout} layout lists {facts.get('shards')!r} "
                              f"shards where {self.spec.count} samples of {per} make {self.nshards}; the manifest "
                              f"was edited or is damaged: regenerate the corpus with --force")

    # -- shards ------------------------------------------------------------------------------------

    def shards(self) -> np.ndarray:
        return np.minimum(np.arange(self.nshards + 1, dtype=np.int64) * self.per_shard, self.spec.count)

    def shard_path(self, k: int) -> Path:
        return self.target / shard_name(k, self.shard_ext)

    def index_path(self, k: int) -> Path:
        return self.target / shard_name(k, self.index_ext)

    def paths(self) -> list[Path]:
        return [p for k in range(self.nshards) for p in (self.shard_path(k), self.index_path(k))]

    def expected_names(self) -> set[str]:
        return {p.name for p in self.paths()}

    def unexpected_entries(self) -> list[str]:
        if not self.target.is_dir():
            return []
        names = self.expected_names()
        return sorted(str(p) for p in self.target.iterdir() if p.name not in names)

    def _open(self, index: int) -> None:
        if not self.target.is_dir():
            raise SampleError(self.layout, index, str(self.target), "missing (no such directory)")
        self._open_shards = {}
        self._keep = min(MAX_OPEN_SHARDS, keep_open(per_handle=2))  # our fd and mmap's own
        self._bounded = self.nshards > self._keep
        self._holds = threading.local()  # per thread: the shards it holds ({k: shard}) inside _held
        self._parsed = {}  # bounded: k -> (size, extra, at) of shards closed since
        # the shards together larger than this process's memory (a capped run): read only what is
        # asked for (see the module docstring)
        self._random = sum(_size(self.shard_path(k)) for k in range(self.nshards)) > memory_available()

    def _close(self) -> None:
        for shard in self._open_shards.values():
            shard.close()

    def _shard(self, k: int, i: int) -> Shard:
        """Shard k, opened on first use. Bounded (more shards than may stay open): call inside
        _held(), which keeps it open until the thread leaves it."""
        if self._bounded:
            return self._shard_bounded(k, i)
        shard = self._open_shards.get(k)
        if shard is None:
            with self._lock:  # threads of one process open a shard once
                shard = self._open_shards.get(k)
                if shard is None:
                    shard = self._open_shards[k] = self._load(k, i)
        return shard

    def _shard_bounded(self, k: int, i: int) -> Shard:
        held = getattr(self._holds, "held", None)
        if held is not None and k in held:
            return held[k]
        with self._lock:
            shard = self._open_shards.pop(k, None)
            if shard is None:
                self._trim(room=1)
                shard = self._load(k, i)
            self._open_shards[k] = shard  # the most recently used last
            if held is not None:
                shard.users += 1
                held[k] = shard
        return shard

    @contextlib.contextmanager
    def _held(self):
        """Bounded readers: every shard this thread takes inside stays open until it leaves."""
        if not self._bounded or getattr(self._holds, "held", None) is not None:
            yield
            return
        held = self._holds.held = {}
        try:
            yield
        finally:
            self._holds.held = None
            with self._lock:
                for shard in held.values():
                    shard.users -= 1
                self._trim()

    def _trim(self, room: int = 0) -> None:
        """Close shards no thread holds, least recently used first, until `room` more fit within
        _keep (self._lock held); their parsed index is kept for a reopen."""
        while len(self._open_shards) + room > self._keep:
            for k, shard in self._open_shards.items():
                if shard.users <= 0:
                    break
            else:
                return
            del self._open_shards[k]
            self._parsed[k] = (shard.size, shard.extra, shard.at)
            shard.close()

    def _load(self, k: int, i: int) -> Shard:
        path, ipath = self.shard_path(k), self.index_path(k)
        first, count = k * self.per_shard, min(self.per_shard, self.spec.count - k * self.per_shard)
        parsed = self._parsed.pop(k, None) if self._bounded else None
        raw = self._read_index_file(ipath, count, i) if parsed is None else None
        self.check_inside(path)
        fd, size = open_regular(self.layout, path, i)
        try:
            try:
                shard = Shard(path, fd, size)
            except OSError as exc:  # mmap: its own descriptor, or the address space, ran out
                raise SampleError(self.layout, i, str(path), f"cannot be mapped: {os_reason(exc)}") from None
            if self._random:
                advise_random(fd, shard.addr, shard.size)
        except BaseException:
            os.close(fd)
            raise
        if parsed is not None and parsed[0] == shard.size:  # reopened: its index as parsed before
            _, shard.extra, shard.at = parsed
            return shard
        if raw is None:
            raw = self._read_index_file(ipath, count, i)
        try:
            shard.extra = self._parse_index(raw, first, count, shard.size, ipath, i)
        except BaseException:
            shard.close()
            raise
        shard.at = [-1] * count
        return shard

    def _read_index_file(self, ipath: Path, count: int, i: int) -> bytes:
        """The index file's bytes, refused before reading when larger than `count` entries can be."""
        self.check_inside(ipath)
        try:
            fd = os.open(ipath, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise SampleError(self.layout, i, str(ipath), "missing: the shard's index file is missing") from None
        except OSError as exc:
            raise SampleError(self.layout, i, str(ipath), f"unreadable index: {os_reason(exc)}") from None
        try:
            st = os.fstat(fd)
            limit = 64 + count * self.max_index_bytes
            if not stat.S_ISREG(st.st_mode):
                raise SampleError(self.layout, i, str(ipath), "unreadable index: not a regular file")
            if st.st_size > limit:
                raise SampleError(self.layout, i, str(ipath), f"damaged index: {st.st_size:,} bytes, more than "
                                                             f"{count} entries can take ({limit:,})")
            return os.pread(fd, st.st_size + 1, 0)
        finally:
            os.close(fd)

    # -- what each layout provides ---------------------------------------------------------------

    def _parse_index(self, raw: bytes, first: int, count: int, size: int, ipath: Path, i: int):
        """The index's entries, checked (count, ranges within a shard of `size` bytes)."""
        raise NotImplementedError

    def _locate(self, shard: Shard, j: int, i: int) -> int:
        """The payload's file offset of local sample j (global i), after checking its container."""
        raise NotImplementedError

    def _verify_container(self, shard: Shard, j: int, i: int) -> None:
        """verify=True: the container's own checks for sample i (crc32c, header checksum)."""

    def _indexed(self, shard: Shard, j: int, i: int) -> int | None:
        """The payload's file offset of local sample j (global i) from the shard's index alone,
        without reading the shard (None when the index cannot say: then it is located by reading)."""
        return None

    # -- where samples lie -------------------------------------------------------------------------

    no_extents = None

    def extents(self, indices):
        """Each payload's bytes in its shard: from the shard's index file (a sample already read in
        this process: where its container was found), so the probe never touches the shard's
        pages first; a sample the index cannot place is located by reading its container (its
        named error if that fails)."""
        idx = self.check_indices(indices)
        if not len(idx):
            return []
        self._ensure_open(int(idx[0]))
        out = []
        for i in idx.tolist():
            with self._held():
                k = i // self.per_shard
                shard, j = self._shard(k, i), i - k * self.per_shard
                a = shard.at[j]
                if a < 0:
                    a = self._indexed(shard, j, i)
                if a is None:
                    a = self._position(i)[1]
                out.append([(str(shard.path), a, self._sizes[i])])
        return out

    # -- reading ---------------------------------------------------------------------------------

    def where(self, index: int) -> str:
        return str(self.shard_path(index // self.per_shard))

    def _position(self, i: int) -> tuple[Shard, int]:
        k = i // self.per_shard
        shard, j = self._shard(k, i), i - k * self.per_shard
        a = shard.at[j]
        if a < 0 or self.verify:
            if self.verify:
                self._verify_container(shard, j, i)
            a = self._locate(shard, j, i)
            if not self.verify:
                shard.at[j] = a
        return shard, a

    def _head(self, shard: Shard, a: int, n: int):
        """Bytes [a, a + n) of `shard` where a container's header is checked: read with pread when the
        shards are advised random (a capped run), a view of the map otherwise. Faulted through the
        map, each such page stays mapped, and under a small cap the cgroup's reclaim of mapped pages
        fell behind: the OOM killer stopped an MNIST tar run in its first epoch."""
        if self._random:
            return os.pread(shard.fd, n, a)
        return shard.view[a:a + n]

    def _slice(self, i: int):
        """Sample i's payload: a view of its shard's map, or (bounded: the shard may be closed once
        this returns) a copy."""
        if self._bounded:
            with self._held():
                shard, a = self._position(i)
                if self._random:
                    return self._pread_advised([i], [(shard.fd, a, self._sizes[i])])[0]
                return bytes(shard.view[a:a + self._sizes[i]])
        shard, a = self._position(i)
        return shard.view[a:a + self._sizes[i]]

    def _read_one(self, i: int):
        if self._random and not self._bounded:
            return self._read_many([i])[0]
        return bytes(self._slice(i))

    def _read_many(self, idx: list[int]) -> list:
        out = [None] * len(idx)
        order = np.argsort(idx, kind="stable").tolist()  # file order
        if self._random and not self._bounded:  # see the module docstring
            spans = []
            for k in order:
                shard, a = self._position(idx[k])
                spans.append((shard.fd, a, self._sizes[idx[k]]))
            for k, payload in zip(order, self._pread_advised([idx[k] for k in order], spans)):
                out[k] = payload
            return out
        for k in order:
            out[k] = bytes(self._slice(idx[k]))
        return out

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        order = np.argsort(idx, kind="stable")
        sorted_idx = [idx[k] for k in order.tolist()]
        if self.small:
            if self._random and not self._bounded:  # each read by pread, not faulted in (_read_many)
                return self._assemble(idx, self._read_many(idx), out)
            views = [self._slice(i) for i in sorted_idx]  # pages touched front to back
            if (order == np.arange(len(idx))).all():
                return self._assemble(sorted_idx, views, out)
            tmp = np.empty_like(out)
            self._assemble(sorted_idx, views, tmp)
            out[order] = tmp
            return
        flat = memoryview(out).cast("B")
        h, n, size = len(self.codec.header), self.spec.pixel_bytes, self.codec.fixed_size
        head = bytearray(h)
        ahead = None
        if self._random and not self._bounded and not self.verify:  # the misses ahead in flight meanwhile
            ahead = advised_ahead([(shard.fd, a, size) for shard, a in map(self._position, sorted_idx)])
        for k, i in zip(order.tolist(), sorted_idx):
            if ahead is not None:
                next(ahead)
            with self._held():
                shard, a = self._position(i)
                if self.verify or range_resident(shard.addr, a, size):
                    self._place(i, shard.view[a:a + size], flat, k, out)
                    continue
                row = flat[k * n:(k + 1) * n]
                try:
                    got = os.preadv(shard.fd, [head, row], a)
                except OSError as exc:
                    raise SampleError(self.layout, i, self.where(i), f"unreadable: {os_reason(exc)}") from None
            self._check_read(i, head, row, got, k, out)

    def fail_at(self, i: int, problem: str, where: str | None = None):
        raise SampleError(self.layout, i, where or self.where(i), problem)

    def check_integrity(self, indices) -> list[tuple[int, str, str]]:
        """(index, where, problem) for each sample whose container fails its own checks."""
        found = []
        saved, self.verify = self.verify, True
        try:
            self._ensure_open(int(indices[0]))
            for i in indices:
                try:
                    with self._held():
                        self._position(int(i))
                except SampleError as exc:
                    found.append((exc.index, exc.where, exc.problem))
        finally:
            self.verify = saved
        return found

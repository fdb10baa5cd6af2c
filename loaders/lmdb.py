"""`lmdb` reader: the lmdb/ environment (see generator.layouts.lmdb for the format).

Opened readonly, lock=False (nothing writes while we read, and no lock file means nothing shared
between processes), max_readers far above any worker count. One read transaction per batch.
read_many copies each value out (bytes, valid after the transaction); read_batch uses
buffers=True and copies the pixels straight from the memory map into the batch while the
transaction is open.

Large values (fixed-size payloads over 64 KiB) are not read through py-lmdb: its get() touches
every page of a value before it returns (lib/py-lmdb/preload.h, in get() and cursor value()
alike, with or without buffers=True), and with readahead off each of those faults is one
synchronous 4 KiB read (70 MB/s cold here, for a 46 MB value as for a 150 KB one). Such values
are kept contiguous in LMDB's overflow pages, so loaders/lmdbpages.py finds where each one lies
in data.mdb from the B+tree pages alone, and the value is then copied out of py-lmdb's map when
all its pages are in the page cache (cachestat), else read with preadv straight into the batch,
as the HDF5 reader does: the kernel reads exactly the value, in large requests. The map is then
opened readahead=False (MADV_RANDOM): its faults are the tree pages only.

Small values live inside their leaf pages, so reading one is a fault on its leaf. Readahead on
the map (read-around of the device's window) is on when data.mdb fits in the memory this
process may use (RAM, or its memory cgroup's limit): the neighbours dragged in will be read in
the same epoch and stay, so a cold epoch streams; off when it does not (a capped run): pages
read around a miss would be evicted before they are used, for several times the bytes. Then the
other values (those not read by preadv into a batch as above: values of varying size, and small
ones) are not read through py-lmdb either, whose get() would fault a value's pages in one 4 KiB
read at a time: every value's place comes from one walk of the tree (as extents() uses), and a
batch's values are each read with one pread, the next ones advised WILLNEED meanwhile
(Reader._pread_advised), as for a program's own Environment (below).

py-lmdb refuses to open one environment twice in a process, so the readers of a process share
one Environment per directory (counted; closed with the last reader). A forked child inherits
the parent's and must close it before opening its own: with lock=False and readonly there is
no lock table or writer state to disturb, closing only unmaps the child's copy of the map.

Your own Environment: py-lmdb refuses a second Environment on files this process already has
open ("The environment '...' is already open in this process."; py-lmdb 3.0 keys its guard on
data.mdb's and lock.mdb's inodes, whatever the path or flags), so a program that has opened the
corpus's environment itself (`lmdb.open(corpus/'lmdb')` to look inside, readonly or not, locked
or not) would make every read fail. The reader then reads through it without py-lmdb: every
value's place comes from one walk of the B+tree (loaders/lmdbpages.py, as extents() uses) and
each value is read with pread; the spec and labels likewise (Locator.value). Safe beside the
other Environment: LMDB's locks are on lock.mdb, which this never opens, and readers of a
finished corpus take none (lock=False). Such a reader is not py-lmdb's read path (no map; what a
bench would time is preads), which only a program's own Environment can cause: a bench's
processes never hold one. Where data.mdb is not in the format parsed, the error says the
Environment is the cause and to close it (env.close()) or read in another process. Opening the
corpus's environment yourself after a reader has opened it fails in py-lmdb the same way:
reader.close() releases the reader's.
"""

from __future__ import annotations

import os
import struct
import threading

import numpy as np

from generator.errors import CorpusError, LayoutbenchError, SampleError, os_reason, raise_if_out_of_memory
from generator.layouts.lmdb import key_of, missing_bytes
from generator.manifest import stored_spec

from .base import Reader
from .lmdbpages import LocateError, Locator
from .pagecache import advised_ahead, cached_pages, memory_available

MAX_READERS = 1024
HELD = "already open in this process"  # py-lmdb's refusal of a second Environment (module docstring)

_SHARED: dict[str, list] = {}  # realpath -> [pid, env, payload db, readers using it]
_SHARED_LOCK = threading.Lock()


def _acquire(path: str, readahead: bool = False):
    """(env, payload db) of the environment at `path`, shared within this process."""
    import lmdb

    with _SHARED_LOCK:
        pid = os.getpid()
        for key, entry in list(_SHARED.items()):
            if entry[0] != pid:  # inherited over a fork: close the child's copy (see the docstring)
                entry[1].close()
                del _SHARED[key]
        key = os.path.realpath(path)
        if key not in _SHARED:
            env = lmdb.open(os.fsencode(path), readonly=True, lock=False, readahead=readahead, max_readers=MAX_READERS,
                            max_dbs=2, subdir=True)
            try:
                short = missing_bytes(env, os.path.join(path, "data.mdb"))  # else SIGBUS, not an error
                if short:
                    raise lmdb.CorruptedError(f"data.mdb is truncated: {short:,} bytes shorter than its last "
                                              f"commit uses")
                db = env.open_db(b"payload", create=False)
            except BaseException:
                env.close()
                raise
            _SHARED[key] = [pid, env, db, 0]
        entry = _SHARED[key]
        entry[3] += 1
        return entry[1], entry[2]


def _release(path: str) -> None:
    with _SHARED_LOCK:
        key = os.path.realpath(path)
        entry = _SHARED.get(key)
        if entry is not None and entry[0] == os.getpid():
            entry[3] -= 1
            if entry[3] <= 0:
                entry[1].close()
                del _SHARED[key]


_TABLES: dict[str, tuple] = {}  # realpath of data.mdb -> ((mtime_ns, size), (offsets, sizes) or None)


def _value_table(path: str, count: int):
    """(offsets, sizes) of every value in data.mdb (Locator.table), made once per file and kept in
    this process and the ones it forks; None when the file is not in the format parsed."""
    key, st = os.path.realpath(path), os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size)
    got = _TABLES.get(key)
    if got is None or got[0] != stamp:
        try:
            loc = Locator(path, b"payload")
            try:
                table = loc.table(count)
            finally:
                loc.close()
        except (LocateError, OSError, struct.error):
            table = None
        got = _TABLES[key] = (stamp, table)
    return got[1]


def library_versions() -> dict[str, str]:
    import lmdb

    return {"liblmdb": ".".join(map(str, lmdb.version()))}


class LMDBReader(Reader):
    layout = "lmdb"
    reads_through_map = True
    stores_spec = True
    handles = ("_env", "_db", "_loc", "_where", "_pages", "_advised")

    def where(self, index: int) -> str:
        return f"{self.target} key {key_of(index).hex()}"

    def paths(self):
        return [self.target / "data.mdb"]

    def _open(self, index: int) -> None:
        import lmdb

        if not (self.target / "data.mdb").exists():
            raise SampleError(self.layout, index, self.where(index), "missing (no data.mdb in the environment)")
        self.check_inside(self.target / "data.mdb")  # lmdb follows a symlinked data.mdb
        data = str(self.target / "data.mdb")
        large = bool(self.codec.fixed_size) and not self.small
        # see the module docstring: large values by preadv, small ones read around only when they fit
        readahead = not large and os.path.getsize(data) <= memory_available()
        try:
            env, db = _acquire(str(self.target), readahead)
        except lmdb.Error as exc:
            if isinstance(exc, lmdb.MemoryError):  # the map does not fit this process's address space
                raise_if_out_of_memory(MemoryError(), data)
            if HELD not in str(exc):
                raise SampleError(self.layout, index, self.where(index),
                                  f"cannot open the environment: {exc}") from None
            stored = self._open_pages(data)  # the program's own Environment: read through it
        else:
            self._env, self._db = env, db
            if not large and not readahead:  # larger than memory: see the module docstring
                table = _value_table(data, self.spec.count)
                if table is not None:
                    self._pages = (os.open(data, os.O_RDONLY), *table)
            if large:
                try:
                    self._loc = Locator(data, b"payload")
                    self._where = {}
                    self._advised = os.path.getsize(data) > memory_available()
                    if self._advised:  # larger than memory: read exactly the value
                        os.posix_fadvise(self._loc.fd, 0, 0, os.POSIX_FADV_RANDOM)
                except (LocateError, OSError):
                    self._loc = None  # not the format we know: py-lmdb's get() reads every value
            try:
                with env.begin(db=env.open_db(b"meta", create=False)) as txn:
                    stored = txn.get(b"spec")
            except lmdb.Error as exc:
                self._close()
                raise SampleError(self.layout, index, self.where(index), f"unreadable environment: {exc}") from None
        try:
            spec = stored_spec(stored, f"{self.target} (meta key spec)") if stored is not None else self.spec
        except CorpusError:
            self._close()
            raise
        if not spec.same_corpus(self.spec):
            self._close()
            raise CorpusError(f"{self.target} holds a corpus of another spec than {self.root}/manifest.json; "
                              f"regenerate the corpus with --force")

    def _open_pages(self, data: str) -> bytes | None:
        """py-lmdb refused: this process already has the environment open (module docstring, "Your
        own Environment"). Every value's place from one walk of the tree, data.mdb opened for pread;
        the stored spec. A file not in the format parsed: one line naming the Environment."""
        table = _value_table(data, self.spec.count)
        try:
            stored = self._meta_value(data, b"spec")
        except (LocateError, OSError, struct.error):
            table = None
        if table is None:
            raise LayoutbenchError(
                f"{self.target}: this process already has this LMDB environment open (an lmdb.Environment "
                f"of its own: py-lmdb opens an environment once per process) and data.mdb is not in the format "
                f"layoutbench can read without py-lmdb: close that Environment (env.close()) before reading "
                f"with layoutbench, or read in another process")
        self._pages = (os.open(data, os.O_RDONLY), *table)
        return stored

    @staticmethod
    def _meta_value(data: str, key: bytes) -> bytes | None:
        meta = Locator(data, b"meta")
        try:
            return meta.value(key)
        finally:
            meta.close()

    def _paged(self, idx: list[int]) -> list:
        """Each value of `idx` by pread, at the place the tree walk found it (`_pages`),
        the next ones advised WILLNEED meanwhile (Reader._pread_advised)."""
        fd, offsets, sizes = self._pages
        spans = []
        for i in idx:
            if offsets[i] < 0:
                self._missing(i)
            spans.append((fd, int(offsets[i]), int(sizes[i])))
        return self._pread_advised(idx, spans)

    def _close(self) -> None:
        if self._pages is not None:
            os.close(self._pages[0])
            self._pages = None
        if self._loc is not None:
            self._loc.close()
            self._loc = self._where = None
        if self._env is not None:
            _release(str(self.target))
            self._env = self._db = None

    def __del__(self):
        try:
            if self._pid == os.getpid():
                self._close()
        except Exception:
            pass

    def _missing(self, i: int):
        raise SampleError(self.layout, i, self.where(i), "missing: no such key")

    def _lmdb_error(self, i: int, exc: Exception):
        raise SampleError(self.layout, i, self.where(i), f"unreadable: {exc}") from None

    def _read_one(self, i: int):
        return self._read_many([i])[0]

    def _read_many(self, idx: list[int]) -> list:
        if self._pages is not None:
            return self._paged(idx)
        with self._env.begin(db=self._db) as txn:
            return self._get_all(txn, idx)

    def _get_all(self, txn, idx: list[int]) -> list:
        """Every value of `idx` in `txn`, or the named error of the first that is missing or damaged."""
        import lmdb

        get = txn.get
        try:
            values = [get(i.to_bytes(8, "big")) for i in idx]
        except lmdb.Error as exc:
            self._find_error(txn, idx, exc)
        if None in values:
            self._missing(idx[values.index(None)])
        return values

    no_extents = ("data.mdb is not in the LMDB format loaders/lmdbpages.py parses (then only py-lmdb's get() "
                  "knows where a value lies), or a key is missing (its read names it)")

    def extents(self, indices):
        """Each value's bytes in data.mdb, from LMDB's B+tree pages (loaders/lmdbpages.py): large
        values in their overflow pages (located per key, tree pages only); small ones inside
        their leaf page, from a table of every value's place made by one walk of the tree per
        process (finding one value would read the very leaf the probe asks about) and kept
        across forks. None when the file's format is not the one parsed, or a key is missing."""
        idx = self.check_indices(indices)
        if not len(idx):
            return []
        self._ensure_open(int(idx[0]))
        target, out = str(self.target / "data.mdb"), []
        if self._loc is None:
            table = _value_table(target, self.spec.count)
            if table is None or (table[0][idx] < 0).any():
                return None
            offsets, sizes = table
            return [[(target, int(offsets[i]), int(sizes[i]))] for i in idx.tolist()]
        for i in idx.tolist():
            w = self._locate(i)
            if w is None:
                return None
            out.append([(target, *w)])
        return out

    def _locate(self, i: int) -> tuple[int, int] | None:
        """(offset, size) of value i in data.mdb, or None (then py-lmdb's get() reads it)."""
        w = self._where.get(i)
        if w is None:
            try:
                w = self._loc.locate(key_of(i))
            except (LocateError, OSError):
                return None
            if w is None:
                return None
            self._where[i] = w
        return w

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        if self._pages is not None:  # read by pread (a user's own Environment, or larger than memory): _read_many
            return super()._read_into(idx, out)
        if self._loc is not None:
            return self._read_located(idx, out)
        with self._env.begin(db=self._db, buffers=True) as txn:  # views into the map: valid in this txn only
            values = self._get_all(txn, idx)
            if self.small:
                self._assemble(idx, values, out)  # copies out of the map before the txn ends
            else:
                flat = memoryview(out).cast("B")
                for k, (i, v) in enumerate(zip(idx, values)):
                    self._place(i, v, flat, k, out)

    def _read_located(self, idx: list[int], out: np.ndarray) -> None:
        """Large values: copied out of the map when resident, else preadv into the batch."""
        flat = memoryview(out).cast("B")
        h, n, fd = len(self.codec.header), self.spec.pixel_bytes, self._loc.fd
        head = bytearray(h)
        txn = None
        ahead = None
        if self._advised:  # the misses ahead in flight meanwhile (pagecache.advised_ahead)
            ahead = advised_ahead([(fd, *w) if w is not None else (fd, 0, 0) for w in map(self._locate, idx)])
        try:
            for k, i in enumerate(idx):
                if ahead is not None:
                    next(ahead)
                w = self._locate(i)
                if w is not None:
                    off, size = w
                    if size != self._sizes[i]:
                        self.fail_size(i, size)
                    res, pages = cached_pages(fd, off, size)
                if w is not None and res < pages:
                    row = flat[k * n:(k + 1) * n]
                    try:
                        got = os.preadv(fd, [head, row], off)
                    except OSError as exc:
                        raise SampleError(self.layout, i, self.where(i), f"unreadable: {os_reason(exc)}") from None
                    self._check_read(i, head, row, got, k, out)
                    continue
                if txn is None:
                    txn = self._env.begin(db=self._db, buffers=True)  # views into the map: valid in this txn
                self._place(i, self._get_all(txn, [i])[0], flat, k, out)
        finally:
            if txn is not None:
                txn.abort()

    def _find_error(self, txn, idx: list[int], exc: Exception):
        """A library error in a batch: name the sample that raised it."""
        import lmdb

        for i in idx:
            try:
                txn.get(i.to_bytes(8, "big"))
            except lmdb.Error as e:
                self._lmdb_error(i, e)
        self._lmdb_error(idx[0], exc)

    def stored_labels(self) -> np.ndarray:
        self._ensure_open(0)
        if self._env is None:  # a program's own Environment: read without py-lmdb
            try:
                raw = self._meta_value(str(self.target / "data.mdb"), b"labels")
            except (LocateError, OSError, struct.error) as exc:
                raise SampleError(self.layout, -1, f"{self.target} (meta key labels)", f"unreadable: {exc}") from None
        else:
            with self._env.begin(db=self._env.open_db(b"meta", create=False)) as txn:
                raw = txn.get(b"labels")
        if raw is None or len(raw) != 2 * self.spec.count:
            raise CorpusError(f"{self.target}: the meta labels are missing or of the wrong length; regenerate with --force")
        return np.frombuffer(raw, "<u2").astype(np.int64)

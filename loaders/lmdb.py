"""`lmdb` reader: the lmdb/ environment (see generator.layouts.lmdb for the format).

Opened readonly, lock=False (nothing writes while we read, and no lock file means nothing shared
between processes), max_readers far above any worker count. One read transaction per batch.
read_many copies each value out (bytes, valid after the transaction); read_batch uses
buffers=True and copies the pixels straight from the memory map into the batch while the
transaction is open.

Readahead depends on the value size. py-lmdb's get() touches every page of a value before it
returns (lib/py-lmdb/preload.h: page faults taken with the GIL released), so nothing can be
hinted between finding a value and reading it. With readahead=False (LMDB advises the whole map
MADV_RANDOM) each of those faults is one synchronous 4 KiB read: 70 MB/s cold here, for a
46 MB value as for a 150 KB one. With readahead on, a fault reads the device's readahead window
around it and the next faults stream. So readahead is on when the typical value is at least half
that window (read_ahead_kb of the device; 128 KiB when unknown): the neighbours dragged in are
then at most as many bytes as the value. Smaller values keep readahead off: random access to
them must not drag in neighbouring samples (6.7x the bytes read for ImageNet-size values on this
machine's 8 MiB window, measured on a partial epoch).

py-lmdb refuses to open one environment twice in a process, so the readers of a process share
one Environment per directory (counted; closed with the last reader). A forked child inherits
the parent's and must close it before opening its own: with lock=False and readonly there is
no lock table or writer state to disturb, closing only unmaps the child's copy of the map.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from generator.errors import CorpusError, SampleError
from generator.layouts.lmdb import key_of, missing_bytes
from generator.manifest import stored_spec

from .base import Reader
from .pagecache import readahead_window

MAX_READERS = 1024

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
            env = lmdb.open(path, readonly=True, lock=False, readahead=readahead, max_readers=MAX_READERS,
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


def library_versions() -> dict[str, str]:
    import lmdb

    return {"liblmdb": ".".join(map(str, lmdb.version()))}


class LMDBReader(Reader):
    layout = "lmdb"
    reads_through_map = True
    stores_spec = True
    handles = ("_env", "_db")

    def where(self, index: int) -> str:
        return f"{self.target} key {key_of(index).hex()}"

    def paths(self):
        return [self.target / "data.mdb"]

    def _open(self, index: int) -> None:
        import lmdb

        if not (self.target / "data.mdb").exists():
            raise SampleError(self.layout, index, self.where(index), "missing (no data.mdb in the environment)")
        self.check_inside(self.target / "data.mdb")  # lmdb follows a symlinked data.mdb
        typical = int(np.median(self._size_arr)) if len(self._size_arr) else 0
        readahead = 2 * typical >= readahead_window(self.target / "data.mdb")  # see the module docstring
        try:
            env, db = _acquire(str(self.target), readahead)
        except lmdb.Error as exc:
            raise SampleError(self.layout, index, self.where(index), f"cannot open the environment: {exc}") from None
        self._env, self._db = env, db
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

    def _close(self) -> None:
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

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        with self._env.begin(db=self._db, buffers=True) as txn:  # views into the map: valid in this txn only
            values = self._get_all(txn, idx)
            if self.small:
                self._assemble(idx, values, out)  # copies out of the map before the txn ends
            else:
                flat = memoryview(out).cast("B")
                for k, (i, v) in enumerate(zip(idx, values)):
                    self._place(i, v, flat, k, out)

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
        with self._env.begin(db=self._env.open_db(b"meta", create=False)) as txn:
            raw = txn.get(b"labels")
        if raw is None or len(raw) != 2 * self.spec.count:
            raise CorpusError(f"{self.target}: the meta labels are missing or of the wrong length; regenerate with --force")
        return np.frombuffer(raw, "<u2").astype(np.int64)

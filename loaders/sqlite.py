"""`sqlite` reader: corpus.sqlite (see generator.layouts.sqlite for the format).

One connection per process, opened lazily in _open (never inherited over a fork: a forked child
opens its own), as `file:corpus.sqlite?mode=ro&immutable=1`: read-only, no locks, no journal or
-wal lookups (nothing writes a finished corpus). Threads of a process share it (SQLite's
serialized mode runs their statements one at a time on it). A batch is one query,
`SELECT idx, payload FROM samples WHERE idx IN (?, ...)`, whose rows come back in B-tree order
and are put back in the batch's order.

Damage is a SampleError naming the file and sample: a file shorter than its header says
("truncated") is refused before any page is read; SQLite's own errors (a malformed page, a short
read) name the sample whose row raised them. The connection's SQLITE_LIMIT_LENGTH is set just
above the largest payload the manifest lists, so a damaged record claiming a huge blob is an
error ("string or blob too big"), never a huge allocation. A database larger than the memory
the process may use (a capped run) has SQLite's own descriptors advised random access
(pagecache.advise_random_fds): the kernel's readahead, whose window grows along a blob's
overflow chain, read 6-7x the blobs under a cap.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from urllib.parse import quote

import numpy as np

from generator.errors import CorpusError, SampleError
from generator.layouts.sqlite import FORMAT
from generator.manifest import stored_spec

from .base import Reader
from .pagecache import advise_random_fds, memory_available

MAX_PARAMS = 999  # host parameters per statement (SQLite's historical limit; newer builds allow more)
MAGIC = b"SQLite format 3\0"


_TABLES: dict[str, tuple] = {}  # realpath -> ((mtime_ns, size), (ranges, first) or None)


def _blob_table(reader: "SQLiteReader"):
    """Every row's blob ranges (sqlitepages.BlobMap.blob_ranges) of the reader's file, made once per
    file and kept in this process and the ones it forks; None when the format is not the one parsed."""
    from .sqlitepages import BlobMap, SQLitePagesError

    path = str(reader.target)
    key, st = os.path.realpath(path), os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size)
    got = _TABLES.get(key)
    if got is None or got[0] != stamp:
        try:
            root, column = reader._schema()
            pages = BlobMap(path)
            try:
                table = pages.blob_ranges(root, column, reader.spec.count)
            finally:
                pages.close()
        except (SQLitePagesError, OSError, ValueError, IndexError, sqlite3.Error):
            table = None
        got = _TABLES[key] = (stamp, table)
    return got[1]


def library_versions() -> dict[str, str]:
    return {"sqlite": sqlite3.sqlite_version}


class SQLiteReader(Reader):
    layout = "sqlite"
    stores_spec = True
    handles = ("_conn", "_serial")
    read_unit = ("whole database pages (PRAGMA page_size: 64 KiB for large payloads) holding the row: its leaf "
                 "page, shared with its neighbours, and each page of its overflow chain, read one page at a time")

    def where(self, index: int) -> str:
        return f"{self.target} (table samples, idx {index})"

    # -- opening -------------------------------------------------------------------------------

    def _open(self, index: int) -> None:
        self._check_file(index)
        uri = f"file:{quote(str(self.target.resolve()))}?mode=ro&immutable=1"
        try:
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise SampleError(self.layout, index, str(self.target), f"cannot open the database: {exc}") from None
        # Longest value SQLite will hand back: the largest payload, or the spec's JSON.
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max(self._size_arr.max(initial=0), 1 << 20) + 1)
        try:
            rows = conn.execute("SELECT key, value FROM meta WHERE key IN ('spec', 'format')").fetchall()
            conn.execute("SELECT idx, label, payload FROM samples LIMIT 0").fetchall()
        except sqlite3.Error as exc:
            conn.close()
            if "no such" in str(exc):
                raise CorpusError(f"{self.target} is not a layoutbench corpus database ({exc}); regenerate the "
                                  f"corpus with --force") from None
            raise SampleError(self.layout, index, str(self.target), f"damaged database: {exc}") from None
        meta = dict(rows)
        try:
            if meta.get("format") != str(FORMAT) or "spec" not in meta:
                raise CorpusError(f"{self.target} is not a layoutbench corpus database of format {FORMAT} (meta "
                                  f"holds {sorted(meta)}); regenerate the corpus with --force")
            if not stored_spec(meta["spec"], f"{self.target} (meta key spec)").same_corpus(self.spec):
                raise CorpusError(f"{self.target} holds a corpus of another spec than {self.root}/manifest.json; "
                                  f"regenerate the corpus with --force")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if os.path.getsize(self.target) > memory_available():
            advise_random_fds(self.target)  # sqlite3 does not hand out its descriptors
        # A lock only where the library could not share one connection between threads safely.
        self._serial = threading.Lock() if sqlite3.threadsafety < 3 else None

    def _check_file(self, index: int) -> None:
        """The file exists, is ours to read, and is as long as its header says (else SQLite would
        read zeros past the end: a short read, or worse, rows that silently look absent)."""
        if not self.target.exists():
            raise SampleError(self.layout, index, str(self.target), "missing (no such file)")
        self.check_inside(self.target)
        try:
            with open(self.target, "rb") as f:
                head = f.read(100)
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise SampleError(self.layout, index, str(self.target), f"unreadable: {exc.strerror}") from None
        if len(head) < 100 or not head.startswith(MAGIC):
            raise SampleError(self.layout, index, str(self.target), "cannot open the database: not an SQLite file")
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        if page < 512 or page & (page - 1):
            raise SampleError(self.layout, index, str(self.target),
                              f"cannot open the database: its header is damaged (page size {page})")
        pages = int.from_bytes(head[28:32], "big")
        valid = head[24:28] == head[92:96] and pages  # the header's page count is current (SQLite's rule)
        if valid and size < pages * page:
            raise SampleError(self.layout, index, str(self.target),
                              f"truncated: the file has {size:,} bytes, its header says {pages * page:,}")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # -- reading -------------------------------------------------------------------------------

    def _query(self, sql: str, params) -> list:
        if self._serial is None:
            return self._conn.execute(sql, params).fetchall()
        with self._serial:
            return self._conn.execute(sql, params).fetchall()

    def _read_one(self, i: int):
        try:
            rows = self._query("SELECT payload FROM samples WHERE idx = ?", (i,))
        except sqlite3.Error as exc:
            raise SampleError(self.layout, i, self.where(i), f"unreadable: {exc}") from None
        if not rows:
            raise SampleError(self.layout, i, self.where(i), "missing: no such row")
        return rows[0][0]

    def _read_many(self, idx: list[int]) -> list:
        got = {}
        for a in range(0, len(idx), MAX_PARAMS):
            part = idx[a:a + MAX_PARAMS]
            sql = f"SELECT idx, payload FROM samples WHERE idx IN ({','.join('?' * len(part))})"
            try:
                got.update(self._query(sql, part))
            except sqlite3.Error as exc:
                self._find_error(part, exc)
        try:
            return [got[i] for i in idx]
        except KeyError as missing:
            i = missing.args[0]
            raise SampleError(self.layout, i, self.where(i), "missing: no such row") from None

    def _find_error(self, idx: list[int], exc: Exception):
        """A batch's query failed: name the sample whose row raises on its own."""
        for i in idx:
            self._read_one(i)
        raise SampleError(self.layout, idx[0], self.where(idx[0]), f"unreadable: {exc}")

    # -- where samples lie ---------------------------------------------------------------------

    no_extents = ("the file is not laid out as loaders/sqlitepages.py parses SQLite's format (a page or record "
                  "of another kind), or a row is missing (its read names it)")

    def extents(self, indices):
        """Each payload blob's exact bytes in corpus.sqlite: its piece inside the row's leaf cell,
        then a piece of each overflow page of its chain (loaders/sqlitepages.py, from SQLite's file
        format; the table's root page and the payload column from SQLite's own schema). Found by
        one walk of the table's pages per process, kept across forks. None as `no_extents` says."""
        idx = self.check_indices(indices)
        if not len(idx):
            return []
        self._ensure_open(int(idx[0]))
        got = _blob_table(self)
        if got is None:
            return None
        ranges, first = got
        if (first[idx + 1] == first[idx]).any():
            return None
        path = str(self.target)
        return [[(path, int(o), int(n)) for o, n in ranges[first[i]:first[i + 1]].tolist()] for i in idx.tolist()]

    def _schema(self) -> tuple[int, int]:
        """(root page of table samples, the payload column's position), from SQLite itself."""
        (root,), = self._query("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = 'samples'", ())
        cols = [name for _, name, *_ in self._query("PRAGMA table_info(samples)", ())]
        return int(root), cols.index("payload")

    # -- what verify asks ----------------------------------------------------------------------

    def stored_labels(self) -> np.ndarray:
        self._ensure_open(0)
        try:
            rows = self._query("SELECT idx, label FROM samples ORDER BY idx", ())
        except sqlite3.Error as exc:
            raise SampleError(self.layout, -1, f"{self.target} (table samples, labels)", f"unreadable: {exc}") from None
        try:
            table = np.array(rows, np.int64).reshape(-1, 2)
        except (ValueError, TypeError, OverflowError):
            table = np.zeros((0, 2), np.int64)  # not integers: reported as the wrong rows below
        if len(table) != self.spec.count or (table[:, 0] != np.arange(self.spec.count)).any():
            raise CorpusError(f"{self.target}: table samples holds {len(table)} rows, not the {self.spec.count} "
                              f"samples 0..{self.spec.count - 1}; regenerate the corpus with --force")
        return table[:, 1]

    def unexpected_entries(self) -> list[str]:
        self._ensure_open(0)
        try:
            rows = self._query("SELECT idx FROM samples WHERE idx < 0 OR idx >= ? ORDER BY idx LIMIT 100",
                               (self.spec.count,))
        except sqlite3.Error:
            return []  # the sample reads name the damage
        return [self.where(i) for (i,) in rows]

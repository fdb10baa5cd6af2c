"""`sqlite` reader: corpus.sqlite (see generator.layouts.sqlite for the format).

One connection per process, opened lazily in _open (never inherited over a fork: a forked child
opens its own), as `file:corpus.sqlite?mode=ro&immutable=1`: read-only, no locks, no journal or
-wal lookups (nothing of ours writes a finished corpus).

What someone else's sqlite3 left beside the file is first settled as sqlite3 itself would settle it
on open, so the reader sees exactly what a plain `sqlite3` connection sees (immutable=1 alone would
not look): a `corpus.sqlite-journal` (a writer killed mid-transaction leaves a hot journal, and the
pages it changed in the file) is rolled back, and a `corpus.sqlite-wal` holding committed changes
is checkpointed into the file, each through one ordinary read-write sqlite3 connection (_settle).
When that cannot be done (no write access, another process holds the database), the reader
refuses in one line naming the journal or WAL and what to do, rather than read pages that are
not the database's current state. Each thread of a process reads through a connection of its
own, opened on its first read the same way: one connection shared by thread workers ran their
queries one at a time (SQLite's serialized mode), the sqlite3 module lets go of the GIL while
SQLite reads, so their own connections read in parallel. A batch is one query,
`SELECT idx, payload FROM samples WHERE idx IN (?, ...)`, whose rows come back in B-tree order
and are put back in the batch's order.

Damage is a SampleError naming the file and sample: a file shorter than its header says
("truncated") is refused before any page is read; SQLite's own errors (a malformed page, a short
read) name the sample whose row raised them. The connection's SQLITE_LIMIT_LENGTH is set just
above the largest payload the manifest lists, so a damaged record claiming a huge blob is an
error ("string or blob too big"), never a huge allocation. A database larger than the memory
the process may use (a capped run) has SQLite's own descriptors advised random access
(pagecache.advise_random_fds): the kernel's readahead, whose window grows along a blob's
overflow chain, read 6-7x the blobs under a cap. SQLite's pager then reads a blob's pages one
after another, one read each, so a batch is queried in parts of about pagecache.advice_window() bytes, each
part's database pages (its rows' leaf pages and overflow chains, where loaders/sqlitepages.py
finds them) advised WILLNEED just before its query: the part's misses are in flight together,
as the other readers' are (pagecache.advised_ahead), and SQLite's reads find them in the cache.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np

from generator.errors import CorpusError, SampleError, os_reason
from generator.layouts.sqlite import FORMAT
from generator.manifest import stored_spec

from .base import Reader
from .pagecache import advice_window, advise_random_fds, memory_available

# SQLite's own page cache per connection of a database larger than memory (a capped run), KiB: it
# holds data pages outside the page cache the cap bounds, in the loader's own memory, and filled
# up to its default 2 MiB per thread's connection after own memory was measured (the OOM killer
# stopped an MNIST run under 2.5 MiB); the blobs are read once an epoch, so a few pages will do.
SMALL_CACHE_KIB = 256
MAX_PARAMS = 999  # host parameters per statement (SQLite's historical limit; newer builds allow more)
MAGIC = b"SQLite format 3\0"
BUSY_TIMEOUT = 10.0  # seconds a settling connection waits for another process's lock


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


def _nonempty(path: Path) -> bool:
    """Whether a journal or WAL file is there with something in it (an empty one is what a
    finished transaction or checkpoint leaves; sqlite3 ignores it)."""
    try:
        return path.lstat().st_size > 0
    except OSError:
        return False


def _hot(journal: Path) -> bool:
    """Whether a rollback journal still starts with its header's magic (a journal sqlite3 has
    finished with is deleted, truncated or has its header zeroed)."""
    try:
        with open(journal, "rb") as f:
            return f.read(8) == b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7"
    except OSError:
        return False


def library_versions() -> dict[str, str]:
    return {"sqlite": sqlite3.sqlite_version}


class SQLiteReader(Reader):
    layout = "sqlite"
    stores_spec = True
    handles = ("_conn", "_uri", "_local", "_conns", "_conns_lock", "_advise_fd", "_page")
    read_unit = ("whole database pages (PRAGMA page_size: 64 KiB for large payloads) holding the row: its leaf "
                 "page, shared with its neighbours, and each page of its overflow chain, read one page at a time")

    def where(self, index: int) -> str:
        return f"{self.target} (table samples, idx {index})"

    # -- opening -------------------------------------------------------------------------------

    def _open(self, index: int) -> None:
        if self.target.exists():
            self.check_inside(self.target)
            self._settle()
        self._check_file(index)
        self._uri = f"file:{quote(os.fsencode(self.target.resolve()))}?mode=ro&immutable=1"
        conn = self._connect(index)
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
        self._conn, self._conns, self._conns_lock = conn, [conn], threading.Lock()
        self._local = threading.local()
        self._local.conn = conn
        if os.path.getsize(self.target) > memory_available():
            advise_random_fds(self.target)  # sqlite3 does not hand out its descriptors
            (self._page,), = self._query("PRAGMA page_size", ())
            self._advise_fd = os.open(self.target, os.O_RDONLY)  # ours, for WILLNEED (see the module docstring)
            conn.execute(f"PRAGMA cache_size = -{SMALL_CACHE_KIB}")

    def _connect(self, index: int):
        """A read-only connection to the file (self._uri), its longest value bounded."""
        try:
            conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise SampleError(self.layout, index, str(self.target), f"cannot open the database: {exc}") from None
        # Longest value SQLite will hand back: the largest payload, or the spec's JSON.
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max(self._size_arr.max(initial=0), 1 << 20) + 1)
        return conn

    def _thread_connection(self):
        """This thread's connection, opened on its first read (see the module docstring)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(-1)
            with self._conns_lock:
                self._conns.append(conn)
            if self._advise_fd is not None:
                advise_random_fds(self.target)  # its own descriptor too
                conn.execute(f"PRAGMA cache_size = -{SMALL_CACHE_KIB}")
        return conn

    def _settle(self) -> None:
        """Roll back a hot journal and checkpoint a WAL beside the file, through sqlite3 (see the
        module docstring); nothing when neither holds anything. CorpusError, one line naming the
        file and what to do, when sqlite3 cannot."""
        journal, wal = Path(f"{self.target}-journal"), Path(f"{self.target}-wal")
        pending = [p for p in (journal, wal) if _nonempty(p)]
        if not pending:
            return
        names = " and ".join(p.name for p in pending)
        what = ("a rollback journal (a writer killed mid-transaction leaves one: sqlite3 rolls it back on open)"
                if journal in pending else "a write-ahead log holding changes sqlite3 reads as part of the database")
        try:
            conn = sqlite3.connect(f"file:{quote(os.fsencode(self.target.resolve()))}?mode=rw", uri=True,
                                   timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unsettled(names, what, exc) from None
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # a hot journal is rolled back here
            if _nonempty(wal):
                busy, log, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy or log != done:
                    raise sqlite3.OperationalError(f"database is locked: {done} of the log's {log} frames could "
                                                   f"be checkpointed")
        except sqlite3.Error as exc:
            raise self._unsettled(names, what, exc) from None
        finally:
            conn.close()
        if _nonempty(journal) and _hot(journal):
            raise self._unsettled(names, what, "database is locked: the journal's transaction is still open")

    def _unsettled(self, names: str, what: str, exc) -> CorpusError:
        text = " ".join(str(exc).split())
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            do = (f"open it once where it can be written (`sqlite3 {self.target} 'PRAGMA quick_check'` as its "
                  f"owner settles it) and rerun")
        elif "locked" in text or "busy" in text:
            do = "another process has the database open for writing: let it finish or stop it, then rerun"
        else:
            do = "regenerate the corpus with --force"
        return CorpusError(f"{self.target} has {names} beside it, {what}, and sqlite3 could not apply it ({text}); "
                           f"its pages alone are not the database's current state: {do}")

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
            raise SampleError(self.layout, index, str(self.target), f"unreadable: {os_reason(exc)}") from None
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
        for conn in self._conns or ():
            conn.close()
        if self._advise_fd is not None:
            os.close(self._advise_fd)

    # -- reading -------------------------------------------------------------------------------

    def _query(self, sql: str, params) -> list:
        conn = self._conn if self._local is None else self._thread_connection()
        return conn.execute(sql, params).fetchall()

    def _read_one(self, i: int):
        try:
            rows = self._query("SELECT payload FROM samples WHERE idx = ?", (i,))
        except sqlite3.Error as exc:
            raise SampleError(self.layout, i, self.where(i), f"unreadable: {exc}") from None
        if not rows:
            raise SampleError(self.layout, i, self.where(i), "missing: no such row")
        return rows[0][0]

    def _parts(self, idx: list[int]):
        """`idx` in parts of at most MAX_PARAMS rows; a database larger than memory, in parts of
        about advice_window() bytes of database pages, each advised WILLNEED as it is handed out (see
        the module docstring)."""
        table = _blob_table(self) if self._advise_fd is not None else None
        if table is None:
            yield from (idx[a:a + MAX_PARAMS] for a in range(0, len(idx), MAX_PARAMS))
            return
        ranges, first = table
        page, part, spans, size, window = self._page, [], [], 0, advice_window()
        for i in idx:
            pieces = [(o - o % page, -(-(o + n) // page) * page - (o - o % page))
                      for o, n in ranges[first[i]:first[i + 1]].tolist()]
            n = sum(length for _, length in pieces)
            if part and (size + n > window or len(part) == MAX_PARAMS):
                yield self._advised(part, spans)
                part, spans, size = [], [], 0
            part.append(i)
            spans += pieces
            size += n
        if part:
            yield self._advised(part, spans)

    def _advised(self, part: list[int], spans) -> list[int]:
        for at, length in spans:
            os.posix_fadvise(self._advise_fd, at, length, os.POSIX_FADV_WILLNEED)
        return part

    def _read_many(self, idx: list[int]) -> list:
        got = {}
        for part in self._parts(idx):
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

"""`sqlite`: one database, corpus.sqlite.

- table `samples(idx INTEGER PRIMARY KEY, label INTEGER NOT NULL, payload BLOB NOT NULL)`: one row
  per sample, keyed by its index (the rowid, so a lookup is one B-tree descent and rows are
  appended in index order); the payload bytes stored verbatim.
- table `meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)`: `spec` = the spec as JSON, `format` = 1.
  No pickle anywhere.
- page size: page_size(spec) (docs/lab/2026-12-01-sqlite-zarr-crossover.md has the measurements behind it). The journal mode
  in the finished file is the default rollback journal (DELETE): the file is self-contained, with
  no -wal or -shm beside it, so readers open it read-only and `immutable=1`.

Written as .corpus.sqlite.partial in transactions of about 64 MiB or 16,384 samples with
synchronous=OFF (a killed process loses nothing it committed: the kernel still writes it out;
only a power cut could), then fsynced and renamed to corpus.sqlite. After a kill the rollback
journal (.corpus.sqlite.partial-journal) undoes the open transaction when the file is next
opened, and a rerun resumes after the last commit; a partial file of another spec, or one that
fails SQLite's quick_check, is started over.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from urllib.parse import quote

from ..manifest import fsync_dir
from . import LayoutWriter, payload_estimate

FILENAME = "corpus.sqlite"
PARTIAL = ".corpus.sqlite.partial"
JOURNAL = PARTIAL + "-journal"  # SQLite's rollback journal of the partial file
FORMAT = 1
TXN_BYTES = 64 << 20
TXN_SAMPLES = 16_384
SMALL_PAGE, LARGE_PAGE = 4096, 65536
LARGE_FROM = 16 << 10  # payloads from this size on get the large page

SCHEMA = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE samples(idx INTEGER PRIMARY KEY, label INTEGER NOT NULL, payload BLOB NOT NULL)",
)


def page_size(spec, codec) -> int:
    """4 KiB pages for small payloads (several rows per page; a random read touches one page),
    64 KiB (SQLite's largest) for large ones: a payload is a chain of overflow pages read one
    page at a time, so larger pages mean fewer reads per sample."""
    return LARGE_PAGE if payload_estimate(spec, codec) >= LARGE_FROM else SMALL_PAGE


def sqlite_error(exc, path) -> OSError:
    """sqlite3.Error as the OSError the driver reports (a full disk as ENOSPC)."""
    text = str(exc)
    code = errno.ENOSPC if "full" in text.lower() else errno.EIO
    return OSError(code, f"{os.strerror(code)} ({text})", str(path))


class SQLiteWriter(LayoutWriter):
    name = "sqlite"
    target = FILENAME

    def paths(self):
        return [self.root / FILENAME, self.root / PARTIAL, self.root / JOURNAL]

    def begin(self) -> int:
        import sqlite3

        self.path = self.root / PARTIAL
        self.conn = None
        self.pending = self.pending_samples = 0
        try:
            done = self._resume_point() if self.path.exists() else None
            if done is None:
                self._remove_partial()
                self._create()
            self.conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path) from None
        return done or 0

    def _connect(self):
        import sqlite3

        conn = sqlite3.connect(os.fsencode(self.path), isolation_level=None)  # transactions are ours (BEGIN/COMMIT)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")
        return conn

    def _create(self) -> None:
        self.conn = self._connect()
        self.conn.execute(f"PRAGMA page_size={page_size(self.spec, self.codec)}")  # before the first table
        self.conn.execute("BEGIN")
        for statement in SCHEMA:
            self.conn.execute(statement)
        self.conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                              [("spec", json.dumps(self.spec.to_dict())), ("format", str(FORMAT))])
        self.conn.execute("COMMIT")

    def _resume_point(self) -> int | None:
        """Samples committed by an earlier run of this spec, or None to start over. Opening the file
        rolls back what a killed run left uncommitted (its hot journal)."""
        import sqlite3

        from ..spec import Spec

        try:
            self.conn = self._connect()
            ok = self.conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            stored = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
            same = (ok and stored.get("format") == str(FORMAT)
                    and Spec.from_dict(json.loads(stored["spec"])).same_corpus(self.spec)
                    and self.conn.execute("PRAGMA page_size").fetchone()[0] == page_size(self.spec, self.codec))
            count, last = self.conn.execute("SELECT count(*), coalesce(max(idx), -1) FROM samples").fetchone()
        except (sqlite3.Error, ValueError, KeyError, TypeError):
            same = False
        if same and last == count - 1:  # rows are appended in index order, whole transactions at a time
            return count
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        return None

    def _remove_partial(self) -> None:
        # The database before its journal: a journal left beside a new file would be "hot" and
        # played into it.
        self.path.unlink(missing_ok=True)
        (self.root / JOURNAL).unlink(missing_ok=True)

    def put_many(self, indices, payloads, labels) -> None:
        import sqlite3

        try:
            self.conn.executemany("INSERT INTO samples(idx, label, payload) VALUES (?, ?, ?)",
                                  zip(indices, map(int, labels), map(memoryview, payloads)))
            self.pending += sum(map(len, payloads))
            self.pending_samples += len(payloads)
            if self.pending >= TXN_BYTES or self.pending_samples >= TXN_SAMPLES:
                self.conn.execute("COMMIT")
                self.conn.execute("BEGIN")
                self.pending = self.pending_samples = 0
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path) from None

    def end(self, labels) -> None:
        import sqlite3

        try:
            self.conn.execute("COMMIT")
            self.conn.close()
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path) from None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.path, self.root / FILENAME)
        fsync_dir(self.root)

    def abort(self) -> None:
        try:
            self.conn.close()  # rolls back the open transaction; committed ones stay for a rerun
        except Exception:
            pass

    @classmethod
    def snapshot(cls, root) -> dict[str, bytes]:
        """Every row of both tables (the file's header counts its transactions, so a resumed write
        differs there from an uninterrupted one)."""
        import sqlite3

        conn = sqlite3.connect(f"file:{quote(os.fsencode(Path(root) / FILENAME))}?mode=ro", uri=True)
        try:
            out = {f"meta/{k}": str(v).encode() for k, v in conn.execute("SELECT key, value FROM meta")}
            for idx, label, payload in conn.execute("SELECT idx, label, payload FROM samples ORDER BY idx"):
                out[f"samples/{idx}"] = str(label).encode() + b":" + bytes(payload)
            out["page_size"] = str(conn.execute("PRAGMA page_size").fetchone()[0]).encode()
        finally:
            conn.close()
        return out

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        value, page = payload_estimate(spec, codec), page_size(spec, codec)
        row = value + 64  # cell header, rowid, label, B-tree share
        if row > page - 35:  # spills into overflow pages: a partly used last page per row
            row += page
        return int(1.1 * spec.count * row) + 8 * page  # + the header, schema and meta pages


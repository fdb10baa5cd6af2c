"""sqlite: Python's sqlite3, as its docs give a read-only database: one connection per DataLoader
worker, opened lazily (`sqlite3.connect("file:...?mode=ro", uri=True)`; a connection must not
cross a fork) and kept (persistent workers); each sample is one
`SELECT label, payload FROM samples WHERE idx = ?` (idx is the rowid; generator/layouts/sqlite.py),
the payload decoded by our codec."""

from __future__ import annotations

import sqlite3
from urllib.parse import quote

from .common import LazyDataset, Source

QUERY = "SELECT label, payload FROM samples WHERE idx = ?"


class SQLiteDataset(LazyDataset):
    handles = ("conn",)

    def __init__(self, path: str, n: int, decode):
        super().__init__(n, decode)
        self.path = path

    def __getitem__(self, i: int):
        if self.conn is None:
            self.conn = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True)
        row = self.conn.execute(QUERY, (i,)).fetchone()
        if row is None:
            from generator.errors import SampleError

            raise SampleError("sqlite", i, self.path, "no such row")
        return self.decode(row[1], i), int(row[0]), i


class SQLiteSource(Source):
    library = "sqlite3"
    modules = ("sqlite3",)

    def dataset(self, rank: int):
        path = str(self.root / "corpus.sqlite")
        return SQLiteDataset(path, self.n, self.decoder(path))

    def extra_settings(self) -> dict:
        return {"dataset": f"map-style: sqlite3.connect('file:corpus.sqlite?mode=ro') per worker, {QUERY!r} per sample"}

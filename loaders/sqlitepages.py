"""Where SQLite keeps each sample's payload blob in corpus.sqlite, from the database file format
(https://www.sqlite.org/fileformat2.html), read with pread without SQLite.

The table `samples(idx INTEGER PRIMARY KEY, label, payload BLOB)` is a table B-tree keyed by
rowid (= idx). Each row is one cell of a leaf page (0x0D): varint payload size P, varint rowid,
then the record; the first `local` bytes of it lie in the cell, the rest in a chain of overflow
pages, each starting with the next page's number (4 bytes) followed by U - 4 bytes of the record
(U = page size - reserved bytes). local is P when P <= U - 35, else M + (P - M) % (U - 4) when that
is <= U - 35, else M, with M = (U - 12) * 32 / 255 - 23 (the format's rule). The record is a header
(its size, then one serial type per column) and the column values back to back: idx is stored as
NULL (an alias of the rowid), label as an integer, payload as a blob of (type - 12) / 2 bytes.

`blob_ranges` walks the tree once (every interior and leaf page, and the first 4 bytes of every
overflow page: the whole file is read once) and returns each row's blob as the exact (offset,
length) ranges of the file that hold it: its piece inside the leaf cell, then a piece of each
overflow page. Anything unexpected (a page of another type, a record not of this shape, a
cycle) is SQLitePagesError: the reader then gives no extents.
"""

from __future__ import annotations

import os

import numpy as np

INTERIOR_TABLE, LEAF_TABLE = 0x05, 0x0D


class SQLitePagesError(Exception):
    pass


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    """(value, position after it) of the SQLite varint at buf[at] (1-9 bytes, big-endian)."""
    v = 0
    for k in range(8):
        b = buf[at + k]
        v = (v << 7) | (b & 0x7F)
        if b < 0x80:
            return v, at + k + 1
    return (v << 8) | buf[at + 8], at + 9


def _serial_bytes(t: int) -> int:
    """Bytes a value of serial type t takes in a record body."""
    if t >= 12:
        return (t - 12) // 2 if t % 2 == 0 else (t - 13) // 2
    sizes = (0, 1, 2, 3, 4, 6, 8, 8, 0, 0)
    if t >= len(sizes):
        raise SQLitePagesError(f"reserved serial type {t}")
    return sizes[t]


class BlobMap:
    """The page walk of one database file (see the module docstring)."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            head = os.pread(self.fd, 100, 0)
            if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
                raise SQLitePagesError("not an SQLite database")
            page = int.from_bytes(head[16:18], "big")
            self.page = 65536 if page == 1 else page
            self.usable = self.page - head[20]
            self.pages = os.fstat(self.fd).st_size // self.page
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        os.close(self.fd)

    def _read(self, pgno: int, n: int | None = None) -> bytes:
        if not 1 <= pgno <= self.pages:
            raise SQLitePagesError(f"page {pgno} is outside the file's {self.pages} pages")
        want = self.page if n is None else n
        got = os.pread(self.fd, want, (pgno - 1) * self.page)
        if len(got) != want:
            raise SQLitePagesError(f"page {pgno} is short")
        return got

    def blob_ranges(self, root: int, column: int, count: int):
        """(ranges, first): ranges an (R, 2) int64 array of (file offset, length); row i's blob in
        column `column` is ranges[first[i]:first[i + 1]], in order (an empty slice: no such row
        among 0..count-1, or its column is not a blob)."""
        per_row: dict[int, list[tuple[int, int]]] = {}
        stack, seen = [root], 0
        while stack:
            pgno = stack.pop()
            seen += 1
            if seen > self.pages:
                raise SQLitePagesError("the tree visits more pages than the file has (a cycle)")
            p = self._read(pgno)
            h = 100 if pgno == 1 else 0
            kind, ncells = p[h], int.from_bytes(p[h + 3:h + 5], "big")
            if kind == INTERIOR_TABLE:
                stack.append(int.from_bytes(p[h + 8:h + 12], "big"))
                ptrs = h + 12
                stack.extend(int.from_bytes(p[o:o + 4], "big")
                             for o in (int.from_bytes(p[ptrs + 2 * c:ptrs + 2 * c + 2], "big") for c in range(ncells)))
                continue
            if kind != LEAF_TABLE:
                raise SQLitePagesError(f"page {pgno} is of type {kind:#x}, not a table B-tree page")
            for c in range(ncells):
                cell = int.from_bytes(p[h + 8 + 2 * c:h + 10 + 2 * c], "big")
                rowid, ranges = self._cell(pgno, p, cell, column)
                if 0 <= rowid < count and ranges is not None:
                    per_row[rowid] = ranges
        return _pack(per_row, count)

    def _cell(self, pgno: int, p: bytes, cell: int, column: int):
        """(rowid, the blob's file ranges or None) of the leaf cell at `cell` of page `pgno`."""
        size, at = _varint(p, cell)
        rowid, at = _varint(p, at)
        local = self._local(size)
        if at + local > self.page:
            raise SQLitePagesError(f"a cell of page {pgno} runs past the page")
        hsize, pos = _varint(p, at)
        if hsize > local:
            raise SQLitePagesError("a record header spills into overflow pages")
        types, body = [], hsize
        while pos < at + hsize:
            t, pos = _varint(p, pos)
            types.append(t)
        if column >= len(types) or types[column] < 12 or types[column] % 2:
            return rowid, None
        start = body + sum(_serial_bytes(t) for t in types[:column])
        length = _serial_bytes(types[column])
        if start + length > size:
            raise SQLitePagesError(f"row {rowid}'s record is longer than its cell says")
        return rowid, self._map(pgno, p, at, local, size, start, length)

    def _local(self, size: int) -> int:
        u = self.usable
        x, m = u - 35, (u - 12) * 32 // 255 - 23
        if size <= x:
            return size
        k = m + (size - m) % (u - 4)
        return k if k <= x else m

    def _map(self, pgno: int, p: bytes, at: int, local: int, size: int, start: int,
             length: int) -> list[tuple[int, int]]:
        """File ranges of record bytes [start, start + length): the record's first `local` bytes
        begin at byte `at` of page `pgno` (whose bytes are `p`), the rest follow in its overflow chain."""
        base = (pgno - 1) * self.page
        out = []
        if start < local:
            n = min(length, local - start)
            out.append((base + at + start, n))
        pos, end = local, start + length  # record position where the next overflow page begins
        nxt = int.from_bytes(p[at + local:at + local + 4], "big") if size > local else 0
        hops = 0
        while pos < end:
            if not nxt:
                raise SQLitePagesError("an overflow chain ends before its record")
            hops += 1
            if hops > self.pages:
                raise SQLitePagesError("an overflow chain longer than the file (a cycle)")
            span = self.usable - 4
            lo, hi = max(start, pos), min(end, pos + span)
            if lo < hi:
                out.append(((nxt - 1) * self.page + 4 + lo - pos, hi - lo))
            pos += span
            if pos < end:
                nxt = int.from_bytes(self._read(nxt, 4), "big")
        return _merge(out)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent ranges joined (a blob wholly inside its leaf cell stays one range)."""
    out: list[tuple[int, int]] = []
    for off, n in ranges:
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out


def _pack(per_row: dict[int, list[tuple[int, int]]], count: int):
    lens = np.zeros(count + 1, np.int64)
    for i, r in per_row.items():
        lens[i + 1] = len(r)
    first = np.cumsum(lens)
    ranges = np.zeros((int(first[-1]), 2), np.int64)
    for i, r in per_row.items():
        ranges[first[i]:first[i + 1]] = r
    return ranges, first

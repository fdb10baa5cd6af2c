"""Where LMDB keeps a large value in data.mdb, found without touching the value's pages.

py-lmdb touches every page of a value inside get() (and cursor value()), before the caller can
see where it lies, so a value cannot be read its own way (preadv straight into a batch) through
py-lmdb. This reads LMDB's on-disk B+tree itself (LMDB 0.9 format, 64-bit): the newer of the two
meta pages, the main database's leaf holding the named sub-database, then branch and leaf pages
down to the key. A value stored in overflow pages (F_BIGDATA: every value over about half a page)
starts PAGEHDRSZ bytes into its first overflow page and is contiguous. Tree pages are read with
pread and kept (they are a few per thousand large values); values are never read here.

Small values live inside their leaf page, so finding one means reading that page: `table` walks
the whole tree once (every branch and leaf page, read with pread and not kept; overflow pages
never) and gives every value's place at once, so that later probes of the page cache (the
capped regime's hit ratio) need not touch a leaf first.

`value` reads one value whole (inline or in overflow pages): the lmdb reader's meta values when
py-lmdb cannot open the environment in this process (loaders/lmdb.py, "Your own Environment").

Anything unexpected (another format, a page of the wrong kind, a key not found) is LocateError:
the reader then falls back to py-lmdb's own get(), which reports damage its own way.
"""

from __future__ import annotations

import os
import struct

PAGEHDRSZ = 16
P_BRANCH, P_LEAF, P_OVERFLOW = 0x01, 0x02, 0x04
F_BIGDATA, F_SUBDATA = 0x01, 0x02
MAGIC = 0xBEEFC0DE
_DB = struct.Struct("<IHHQQQQQ")  # md_pad (psize in the free DB), flags, depth, branch, leaf, overflow, entries, root
_NODE = struct.Struct("<HHHH")  # lo, hi, flags, ksize
_HDR = struct.Struct("<QHHHH")  # pgno, pad, flags, lower, upper


class LocateError(Exception):
    pass


class KeyMissing(LocateError):
    """The tree holds no such key (the file is in the format parsed)."""


class Locator:
    """(offset, size) in data.mdb of the values of one named sub-database, by key."""

    def __init__(self, path: str, dbname: bytes):
        self.fd = os.open(path, os.O_RDONLY)
        try:
            self._pages: dict[int, bytes] = {}
            head = os.pread(self.fd, 2 * 4096, 0)
            metas = []
            for off in (0, None):
                if off is None:
                    if not metas:
                        break
                    off = metas[0][0]  # the second meta page is one page in
                m = head[off:] if off < len(head) else os.pread(self.fd, 256, off)
                if len(m) < 152 or struct.unpack_from("<I", m, 16)[0] != MAGIC:
                    raise LocateError("no LMDB meta page")
                psize = _DB.unpack_from(m, 40)[0]
                txnid = struct.unpack_from("<Q", m, 144)[0]
                metas.append((psize, txnid, _DB.unpack_from(m, 88)))
            psize, _, main = max(metas, key=lambda t: t[1])
            if psize < 512 or psize & (psize - 1):
                raise LocateError(f"page size {psize}")
            self.psize = psize
            flags, data = self._find(main[7], dbname)
            if not flags & F_SUBDATA or len(data) < _DB.size:
                raise LocateError(f"{dbname!r} is not a sub-database")
            self.root = _DB.unpack(data[:_DB.size])[7]
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _page(self, pgno: int) -> bytes:
        p = self._pages.get(pgno)
        if p is None:
            p = os.pread(self.fd, self.psize, pgno * self.psize)
            if len(p) != self.psize:
                raise LocateError(f"page {pgno} is past the end of the file")
            if len(self._pages) < 65536:
                self._pages[pgno] = p
        return p

    def _nodes(self, p: bytes):
        pgno, _, flags, lower, upper = _HDR.unpack_from(p, 0)
        n = (lower - PAGEHDRSZ) >> 1
        if lower < PAGEHDRSZ or lower > len(p) or n < 0:
            raise LocateError("a damaged page")
        return flags, struct.unpack_from(f"<{n}H", p, PAGEHDRSZ)

    def _find(self, root: int, key: bytes) -> tuple[int, bytes]:
        """(node flags, node data) of `key` in the tree rooted at page `root`."""
        pgno = root
        for _ in range(64):  # depth guard against a cyclic (damaged) tree
            p = self._page(pgno)
            flags, ptrs = self._nodes(p)
            if flags & P_BRANCH:
                lo, hi = 0, len(ptrs) - 1  # the last node whose key <= key (node 0's key is empty: -inf)
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    o = ptrs[mid]
                    ks = _NODE.unpack_from(p, o)[3]
                    if p[o + 8:o + 8 + ks] <= key:
                        lo = mid
                    else:
                        hi = mid - 1
                a, b, c, _ = _NODE.unpack_from(p, ptrs[lo])
                pgno = a | (b << 16) | (c << 32)
                continue
            if not flags & P_LEAF:
                raise LocateError(f"page {pgno} is neither branch nor leaf")
            lo, hi = 0, len(ptrs) - 1
            while lo <= hi:
                mid = (lo + hi) // 2
                o = ptrs[mid]
                a, b, nflags, ks = _NODE.unpack_from(p, o)
                k = p[o + 8:o + 8 + ks]
                if k == key:
                    size = a | (b << 16)
                    data = p[o + 8 + ks:o + 8 + ks + (8 if nflags & F_BIGDATA else size)]
                    return nflags, data if not nflags & F_BIGDATA else data + struct.pack("<Q", size)
                if k < key:
                    lo = mid + 1
                else:
                    hi = mid - 1
            raise KeyMissing(f"key {key.hex()} not found")
        raise LocateError("the tree is deeper than 64 levels")

    def locate(self, key: bytes) -> tuple[int, int] | None:
        """(file offset, size) of a value kept in overflow pages; None for a value kept inside its
        leaf page (small values: reading them is reading the leaf, as get() does)."""
        flags, data = self._find(self.root, key)
        if not flags & F_BIGDATA:
            return None
        pgno, size = struct.unpack("<QQ", data)
        return pgno * self.psize + PAGEHDRSZ, size

    def value(self, key: bytes) -> bytes | None:
        """The value under `key` (inline in its leaf or in overflow pages), read with pread; None
        when there is no such key. For the reader's few meta values when py-lmdb cannot be used."""
        try:
            flags, data = self._find(self.root, key)
        except KeyMissing:
            return None
        if not flags & F_BIGDATA:
            return bytes(data)
        pgno, size = struct.unpack("<QQ", data)
        got = os.pread(self.fd, size, pgno * self.psize + PAGEHDRSZ)
        if len(got) != size:
            raise LocateError(f"the value of key {key.hex()} runs past the end of the file")
        return got

    def table(self, count: int):
        """(offsets, sizes): int64 arrays of `count`, the place in data.mdb of the value under key
        i (8-byte big-endian i, the layout's keys), -1 where no such key is found. Inline values
        lie at their leaf page + node offset + 8 + key size; overflow ones PAGEHDRSZ into their
        first overflow page. One pass over the tree's pages (see the module docstring)."""
        import numpy as np

        offsets = np.full(count, -1, np.int64)
        sizes = np.zeros(count, np.int64)
        stack, visited, most = [self.root], 0, os.fstat(self.fd).st_size // self.psize + 1
        while stack:
            pgno = stack.pop()
            visited += 1
            if visited > most:
                raise LocateError("the tree has more pages than the file (a cycle)")
            p = self._pages.get(pgno) or self._read_page(pgno)
            flags, ptrs = self._nodes(p)
            if flags & P_BRANCH:
                for o in ptrs:
                    a, b, c, _ = _NODE.unpack_from(p, o)
                    stack.append(a | (b << 16) | (c << 32))
                continue
            if not flags & P_LEAF:
                raise LocateError(f"page {pgno} is neither branch nor leaf")
            for o in ptrs:
                a, b, nflags, ks = _NODE.unpack_from(p, o)
                if ks != 8:
                    continue  # not one of the layout's keys
                i = int.from_bytes(p[o + 8:o + 16], "big")
                if i >= count:
                    continue
                size = a | (b << 16)
                if nflags & F_BIGDATA:
                    (ov,) = struct.unpack_from("<Q", p, o + 16)
                    offsets[i] = ov * self.psize + PAGEHDRSZ
                elif o + 16 + size > self.psize:
                    raise LocateError(f"a value of page {pgno} runs past the page's end")
                else:
                    offsets[i] = pgno * self.psize + o + 16
                sizes[i] = size
        return offsets, sizes

    def _read_page(self, pgno: int) -> bytes:
        p = os.pread(self.fd, self.psize, pgno * self.psize)
        if len(p) != self.psize:
            raise LocateError(f"page {pgno} is past the end of the file")
        return p

"""`litdata` reader: LitData's chunk files read in place (see generator.layouts.litdata).

Chunk k holds the samples [starts[k], starts[k+1]), the item counts the manifest lists
(facts: chunk_sizes). When the reader opens in a process it reads litdata/index.json and checks
it against the manifest: the classic item format (data_format ["bytes", "int"], PyTreeLoader,
no compression, no encryption), the chunk files' names (inside litdata/) and item counts. A chunk
is mapped read-only on its first read in a process and its header parsed with numpy: the item
count and the N+1 offsets, checked (increasing, inside the file) before any item is touched.

Where a payload lies follows from the offsets table alone: item j spans [offsets[j],
offsets[j+1]), its payload starts 8 bytes in (after the two u32 sizes) and ends 8 bytes before the
item's end (the label's int64). So a batch is located with a few numpy operations per chunk it
touches, and `extents` never reads a sample's pages. Each read then checks the item's own header
(the payload size it records, equal to the manifest's, and a label of 8 bytes) and the payload's
size, batch at a time; verify=True also compares the stored label with the manifest's. Small
fixed-size payloads go to the batch assembler (loaders/base.py); large ones are copied from the
map when resident, else read with preadv straight into the batch (as loaders/records.py does).

Every chunk opened stays open (an fd and a map each) for the reader's life in that process: a
corpus of 64 MiB chunks holds a terabyte in 16,384 of them. Standard library and numpy only:
LitData itself is needed to write the layout, not to read it here.
"""

from __future__ import annotations

import json
import mmap
import os

import numpy as np

from generator.errors import CorpusError, SampleError, os_reason
from generator.layouts.litdata import INDEX, ITEM_HEADER, LABEL_BYTES, SPEC, chunk_name
from generator.manifest import stored_spec

from .base import Reader
from .pagecache import advise_random, advised_ahead, memory_available, range_resident
from .records import open_regular

FORMAT = ["bytes", "int"]


class Chunk:
    """One chunk file opened in this process: fd, map, and its offsets table (int64, N+1)."""

    def __init__(self, path, fd: int, size: int):
        self.path, self.fd, self.size = path, fd, size
        self.map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        self.view = memoryview(self.map)
        self.bytes = np.frombuffer(self.map, np.uint8)
        self.addr = self.bytes.ctypes.data
        self.offsets = None

    def close(self) -> None:
        self.bytes = None
        self.view.release()
        try:
            self.map.close()
        except BufferError:  # slices still referenced (an error's traceback): unmapped when they go
            pass
        os.close(self.fd)


class LitDataReader(Reader):
    layout = "litdata"
    handles = ("_chunks", "_random")
    reads_through_map = True
    stores_spec = True
    supports_streaming = True

    def __init__(self, root, manifest, *, verify: bool = False):
        super().__init__(root, manifest, verify=verify)
        sizes = manifest.layouts[self.layout].get("chunk_sizes")
        if (not isinstance(sizes, list) or not all(type(n) is int and n >= 1 for n in sizes)
                or sum(sizes) != self.spec.count):
            raise CorpusError(f"{self.root}/manifest.json: the litdata layout's chunk_sizes is not a list of positive "
                              f"item counts adding up to {self.spec.count}; the manifest was edited or is damaged: "
                              f"regenerate the corpus with --force")
        self.chunk_sizes = sizes
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    # -- the layout's files ------------------------------------------------------------------------

    def chunk_path(self, k: int):
        return self.target / chunk_name(k)

    def paths(self):
        return [self.target / INDEX, *(self.chunk_path(k) for k in range(len(self.chunk_sizes)))]

    def unexpected_entries(self) -> list[str]:
        if not self.target.is_dir():
            return []
        names = {p.name for p in self.paths()} | {SPEC}
        return sorted(str(p) for p in self.target.iterdir() if p.name not in names)

    def shards(self) -> np.ndarray:
        return self.starts.copy()

    def where(self, index: int) -> str:
        k = self._chunk_of(index)
        return f"{self.chunk_path(k)} item {index - int(self.starts[k])}"

    def _chunk_of(self, index: int) -> int:
        return int(np.searchsorted(self.starts, index, side="right")) - 1

    # -- opening -----------------------------------------------------------------------------------

    def _open(self, index: int) -> None:
        if not self.target.is_dir():
            raise SampleError(self.layout, index, str(self.target), "missing (no such directory)")
        self._check_index(index)
        self._check_spec(index)
        self._chunks = {}
        # chunks larger together than the memory this process may use (a capped run): advised random,
        # and read by pread, as the record layouts are (loaders/records.py)
        self._random = sum(os.path.getsize(self.chunk_path(k)) for k in range(len(self.chunk_sizes))
                           if self.chunk_path(k).exists()) > memory_available()

    def _close(self) -> None:
        for chunk in self._chunks.values():
            chunk.close()

    def _read_json(self, name: str, index: int):
        path = self.target / name
        self.check_inside(path)
        try:
            with open(path, "rb") as f:
                raw = f.read(1 << 24)
        except FileNotFoundError:
            raise SampleError(self.layout, index, str(path), "missing (no such file)") from None
        except OSError as exc:
            raise SampleError(self.layout, index, str(path), f"unreadable: {os_reason(exc)}") from None
        return path, raw

    def _check_index(self, index: int) -> None:
        path, raw = self._read_json(INDEX, index)
        try:
            doc = json.loads(raw)
            config, chunks = doc["config"], doc["chunks"]
            names = [c["filename"] for c in chunks]
            counts = [c["chunk_size"] for c in chunks]
        except (ValueError, KeyError, TypeError):
            raise CorpusError(f"{path} is not a LitData index (config and chunks): regenerate the corpus with "
                              f"--force") from None
        if (config.get("data_format") != FORMAT or config.get("item_loader") != "PyTreeLoader"
                or config.get("compression") or config.get("encryption")):
            raise CorpusError(f"{path}: items of format {config.get('data_format')!r} ({config.get('item_loader')}, "
                              f"compression {config.get('compression')!r}) where layoutbench writes {FORMAT} "
                              f"uncompressed (PyTreeLoader): it is not ours; regenerate the corpus with --force")
        if names != [chunk_name(k) for k in range(len(names))] or counts != self.chunk_sizes:
            raise CorpusError(f"{path} lists chunks {names[:3]}{'...' if len(names) > 3 else ''} of {counts[:3]}... "
                              f"items where manifest.json has {len(self.chunk_sizes)} chunks of {self.chunk_sizes[:3]}"
                              f"...: it is not this corpus's; regenerate the corpus with --force")

    def _check_spec(self, index: int) -> None:
        path, raw = self._read_json(SPEC, index)
        if not stored_spec(raw, str(path)).same_corpus(self.spec):
            raise CorpusError(f"{path} holds another spec than {self.root}/manifest.json; regenerate the corpus "
                              f"with --force")

    def _chunk(self, k: int, i: int) -> Chunk:
        chunk = self._chunks.get(k)
        if chunk is None:
            with self._lock:  # threads of one process open a chunk once
                chunk = self._chunks.get(k)
                if chunk is None:
                    chunk = self._chunks[k] = self._load(k, i)
        return chunk

    def _load(self, k: int, i: int) -> Chunk:
        path = self.chunk_path(k)
        self.check_inside(path)
        fd, size = open_regular(self.layout, path, i)
        try:
            n = self.chunk_sizes[k]
            head = 4 + 4 * (n + 1)
            if size < head:
                raise SampleError(self.layout, i, str(path), f"truncated: {size:,} bytes, less than the header "
                                                             f"of {n} items ({head:,})")
            try:
                chunk = Chunk(path, fd, size)
            except OSError as exc:
                raise SampleError(self.layout, i, str(path), f"cannot be mapped: {os_reason(exc)}") from None
        except BaseException:
            os.close(fd)
            raise
        if self._random:
            advise_random(fd, chunk.addr, size)
        table = np.frombuffer(chunk.map, "<u4", n + 2).astype(np.int64)
        problem = None
        if table[0] != n:
            problem = f"damaged: its header says {table[0]} items where index.json and the manifest say {n}"
        elif table[1] != head or (np.diff(table[1:]) < 0).any():
            problem = "damaged: its offsets table does not increase from the header's end"
        if problem is not None:
            chunk.close()
            raise SampleError(self.layout, i, str(path), problem)
        chunk.offsets = table[1:]
        return chunk

    # -- where samples lie -------------------------------------------------------------------------

    def _locate(self, idx: list[int]) -> list[tuple[Chunk, np.ndarray, np.ndarray, np.ndarray]]:
        """Per chunk the batch touches: (chunk, positions k in idx, payload starts, payload lengths),
        from the chunk's offsets table alone."""
        want = np.asarray(idx, np.int64)
        ks = np.searchsorted(self.starts, want, side="right") - 1
        out = []
        for k in np.unique(ks).tolist():
            pos = np.flatnonzero(ks == k)
            i0 = int(want[pos[0]])
            chunk = self._chunk(k, i0)
            local = want[pos] - self.starts[k]
            a, b = chunk.offsets[local], chunk.offsets[local + 1]
            out.append((chunk, pos, a + ITEM_HEADER, b - a - ITEM_HEADER - LABEL_BYTES))
        return out

    def extents(self, indices):
        """Each payload's bytes in its chunk file, from the chunk's offsets table (the header's pages,
        never the samples')."""
        idx = self.check_indices(indices)
        if not len(idx):
            return []
        self._ensure_open(int(idx[0]))
        out = [None] * len(idx)
        for chunk, pos, starts, lens in self._locate(idx.tolist()):
            for k, a, n in zip(pos.tolist(), starts.tolist(), lens.tolist()):
                out[k] = [(str(chunk.path), a, n)]
        return out

    # -- reading -----------------------------------------------------------------------------------

    def _located(self, idx: list[int]) -> list[tuple[Chunk, int]]:
        """(chunk, payload start) of each of `idx`, in order, after checking each item's header."""
        out = [None] * len(idx)
        want = np.asarray(idx, np.int64)
        for chunk, pos, starts, lens in self._locate(idx):
            if (lens < 0).any():  # an item shorter than its header and label: no payload there
                j = int(np.flatnonzero(lens < 0)[0])
                i = idx[int(pos[j])]
                raise SampleError(self.layout, i, self.where(i), f"missing: the chunk's offsets give its item "
                                                                 f"{lens[j] + ITEM_HEADER + LABEL_BYTES} bytes, "
                                                                 f"less than an item's header and label")
            ends = starts + lens + LABEL_BYTES
            inside = ends <= chunk.size
            if not inside.all():
                k = int(pos[np.flatnonzero(~inside)[0]])
                raise SampleError(self.layout, idx[k], self.where(idx[k]),
                                  f"truncated: {chunk.path.name} ends at byte {chunk.size:,}, before the item's "
                                  f"end at {int(ends[np.flatnonzero(~inside)[0]]):,}")
            if self._random:  # by pread, not faulted in through the map (loaders/records.py, ShardedReader._head)
                heads = np.frombuffer(b"".join(os.pread(chunk.fd, ITEM_HEADER, a - ITEM_HEADER)
                                               for a in starts.tolist()), "<u4").reshape(-1, ITEM_HEADER // 4)
            else:
                heads = chunk.bytes[(starts - ITEM_HEADER)[:, None] + np.arange(ITEM_HEADER)].copy().view("<u4")
            recorded, label_size = heads[:, 0].astype(np.int64), heads[:, 1]
            expect = self._size_arr[want[pos]]
            bad = (recorded != lens) | (label_size != LABEL_BYTES) | (lens != expect)
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                i = idx[int(pos[j])]
                if label_size[j] != LABEL_BYTES or recorded[j] != lens[j]:
                    raise SampleError(self.layout, i, self.where(i),
                                      f"damaged: the item's header says {recorded[j]} payload and {label_size[j]} "
                                      f"label bytes where the chunk's offsets leave {lens[j]} and {LABEL_BYTES}")
                self.fail_size(i, int(lens[j]))
            if self.verify:
                labels = chunk.bytes[(starts + lens)[:, None] + np.arange(LABEL_BYTES)].copy().view("<i8")[:, 0]
                wrong = labels != self._label_arr[want[pos]]
                if wrong.any():
                    j = int(np.flatnonzero(wrong)[0])
                    i = idx[int(pos[j])]
                    raise SampleError(self.layout, i, self.where(i),
                                      f"damaged: the stored label is {labels[j]}, the manifest's {self.label(i)}")
            for k, a in zip(pos.tolist(), starts.tolist()):
                out[k] = (chunk, a)
        return out

    def _read_one(self, i: int):
        return self._read_many([i])[0]

    def _read_many(self, idx: list[int]) -> list:
        sizes, located = self._sizes, self._located(idx)
        if self._random:  # one pread each, the next ones advised (Reader._pread_advised)
            return self._pread_advised(idx, [(chunk.fd, a, sizes[i]) for i, (chunk, a) in zip(idx, located)])
        return [chunk.view[a:a + sizes[i]].tobytes() for i, (chunk, a) in zip(idx, located)]

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        size = self.codec.fixed_size
        if self.small and self._random:
            return self._assemble(idx, self._read_many(idx), out)
        located = self._located(idx)
        if self.small:
            return self._assemble(idx, [chunk.view[a:a + size] for chunk, a in located], out)
        flat = memoryview(out).cast("B")
        h, n = len(self.codec.header), self.spec.pixel_bytes
        head = bytearray(h)
        ahead = advised_ahead([(chunk.fd, a, size) for chunk, a in located]) if self._random else None
        for k, (i, (chunk, a)) in enumerate(zip(idx, located)):
            if ahead is not None:
                next(ahead)
            if self.verify or range_resident(chunk.addr, a, size):
                self._place(i, chunk.view[a:a + size], flat, k, out)
                continue
            row = flat[k * n:(k + 1) * n]
            try:
                got = os.preadv(chunk.fd, [head, row] if h else [row], a)
            except OSError as exc:
                raise SampleError(self.layout, i, self.where(i), f"unreadable: {os_reason(exc)}") from None
            self._check_read(i, head, row, got, k, out)

    def stored_labels(self) -> np.ndarray:
        self._ensure_open(0)
        out = np.empty(self.spec.count, np.int64)
        for k in range(len(self.chunk_sizes)):
            first = int(self.starts[k])
            idx = list(range(first, int(self.starts[k + 1])))
            for chunk, pos, starts, lens in self._locate(idx):
                ends = starts + lens + LABEL_BYTES
                if (ends > chunk.size).any():
                    raise SampleError(self.layout, first, str(chunk.path), f"truncated: {chunk.size:,} bytes")
                labels = chunk.bytes[(starts + lens)[:, None] + np.arange(LABEL_BYTES)].copy().view("<i8")[:, 0]
                out[first + pos] = labels
        return out

    def check_integrity(self, indices) -> list[tuple[int, str, str]]:
        """(index, where, problem) for each sample whose item header or stored label is wrong."""
        found = []
        saved, self.verify = self.verify, True
        try:
            self._ensure_open(int(indices[0]))
            for i in indices:
                try:
                    self._located([int(i)])
                except SampleError as exc:
                    found.append((exc.index, exc.where, exc.problem))
        finally:
            self.verify = saved
        return found

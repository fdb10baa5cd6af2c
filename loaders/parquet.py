"""`parquet` reader: corpus.parquet (see generator.layouts.parquet for the format).

Parquet has no per-row index: a sample is read by reading its row group's payload column chunk
(ParquetFile.read_row_group). A batch's indices are grouped by row group; each group it needs is
read once (with use_threads=False: no pyarrow thread pool inside loader workers) and the rows
the batch wants are copied out of the group's data buffer from its offsets buffer, with no
Python object per sample inside pyarrow (what Table.take would do, less one copy). The last row
group read is kept per thread, so a sequential epoch reads each group once; a shuffled one reads
about one group per sample. Each thread has its own ParquetFile (pyarrow's readers are not
documented as safe for concurrent use).

Checked before a group is decoded: the schema and its stored spec against manifest.json
(CorpusError for another corpus or a file not ours); at most `count` rows in all; a row group's
column chunk no larger than the file and its decoded size no larger than what the manifest's
sizes for its rows need (so hostile footer values never become a huge allocation). pyarrow's
errors on a damaged file are a SampleError naming the row group and sample.
"""

from __future__ import annotations

import os

import threading

import numpy as np

from generator.errors import CorpusError, LayoutbenchError, SampleError

from .arrow import arrow_errors, check_schema
from .base import Reader
from .pagecache import advise_random_fds, memory_available

_SLACK = 1 << 20  # page headers and offsets beyond the payload bytes a row group decodes to



def _source(path):
    """The Parquet file opened by its bytes (pyarrow encodes a str name as UTF-8, which a name
    the locale's encoding cannot hold is not): read with plain reads, no memory map."""
    import pyarrow as pa

    return pa.OSFile(os.fsencode(path))

class ParquetReader(Reader):
    layout = "parquet"
    stores_spec = True
    supports_random_access = False  # one sample costs its whole row group's I/O
    handles = ("_local", "_opened", "_group_starts", "_file_size", "_chunks")
    extents_cover = "chunk"
    no_extents = None
    read_unit = ("its row group's whole payload column chunk (every payload of the group, about 8 MiB or 1,024 "
                 "rows): Parquet has no per-row index")

    def where(self, index: int) -> str:
        return f"{self.target} (payload row {index})"

    def _open(self, index: int) -> None:
        self._local, self._opened = threading.local(), []
        self._file_size = self._data_size(index)
        meta = self._file(index).metadata
        rows = np.array([meta.row_group(g).num_rows for g in range(min(meta.num_row_groups, self.spec.count + 1))],
                        np.int64)
        if meta.num_row_groups > self.spec.count or rows.sum() > self.spec.count or (rows < 0).any():
            raise CorpusError(f"{self.target} has {meta.num_rows} rows in {meta.num_row_groups} row groups for "
                              f"{self.spec.count} samples: it is not this corpus's; regenerate with --force")
        self._group_starts = np.concatenate([[0], np.cumsum(rows)])

    def _data_size(self, index: int) -> int:
        """corpus.parquet's size in bytes (SampleError when it is missing)."""
        self.check_inside(self.target)
        if not self.target.exists():
            raise SampleError(self.layout, index, str(self.target), "missing (no such file)")
        return os.stat(self.target).st_size

    def _source_file(self, index: int):
        """A new pyarrow source over corpus.parquet for one thread's ParquetFile."""
        return _source(self.target)

    def _file(self, index: int):
        """This thread's ParquetFile, opened (and its schema checked) on first use."""
        f = getattr(self._local, "file", None)
        if f is None:
            import pyarrow.parquet as pq

            try:
                f = pq.ParquetFile(self._source_file(index), pre_buffer=False)
                self._check_schema(f.schema_arrow)
            except LayoutbenchError:
                raise
            except arrow_errors() as exc:
                raise SampleError(self.layout, index, str(self.target), f"cannot open the Parquet file: {exc}") from None
            self._local.file = f
            self._opened.append(f)
            self._advise()
        return f

    def _advise(self) -> None:
        if self._file_size > memory_available():  # a capped run: read the chunk, not 8 MiB around it
            advise_random_fds(self.target)

    def extents(self, indices):
        """Each sample's row group's payload column chunk in corpus.parquet (from the footer's
        ColumnChunk metadata: the dictionary page's offset if it has one, else the first data
        page's, for total_compressed_size bytes, page headers included): read_row_group reads that
        whole chunk for any one of its rows, so it is the unit a sample costs. (The label column
        chunk is never read.) Samples of one row group share one range."""
        idx = self.check_indices(indices)
        if not len(idx):
            return []
        self._ensure_open(int(idx[0]))
        if self._chunks is None:
            self._chunks = self._column_chunks(int(idx[0]))
        groups = np.searchsorted(self._group_starts, idx, side="right") - 1
        path, chunks = str(self.target), self._chunks
        if groups.max() >= len(chunks):  # rows the file lacks: their read names them
            self._read_many([int(idx[groups.argmax()])])
        return [[(path, *chunks[g])] for g in groups.tolist()]

    def _column_chunks(self, index: int) -> list[tuple[int, int]]:
        """(offset, bytes) of every row group's payload column chunk, checked to lie in the file."""
        meta = self._file(index).metadata
        out = []
        for g in range(len(self._group_starts) - 1):
            c = meta.row_group(g).column(0)
            start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
            if not (0 <= start and start + c.total_compressed_size <= self._file_size):
                raise SampleError(self.layout, index, f"{self.target} (row group {g})",
                                  f"damaged: its payload column chunk [{start:,}, +{c.total_compressed_size:,}) "
                                  f"lies outside the file of {self._file_size:,} bytes")
            out.append((int(start), int(c.total_compressed_size)))
        return out

    def _close(self) -> None:
        for f in self._opened or ():
            try:
                f.close()
            except Exception:
                pass
        self._opened, self._local = [], None

    def _check_schema(self, schema) -> None:
        check_schema(self, schema)

    # -- reading -------------------------------------------------------------------------------

    def _group(self, g: int, index: int):
        """(data view, row offsets, validity or None) of row group g's payloads; kept per thread."""
        cached = getattr(self._local, "cache", None)
        if cached is not None and cached[0] == g:
            return cached[1]
        f = self._file(index)
        lo, hi = int(self._group_starts[g]), int(self._group_starts[g + 1])
        meta = f.metadata.row_group(g)
        chunk = meta.column(0)
        need = int(self._size_arr[lo:hi].sum()) + 16 * (hi - lo) + _SLACK
        if chunk.total_compressed_size > self._file_size or chunk.total_uncompressed_size > need:
            raise SampleError(self.layout, index, self.where(index),
                              f"damaged: row group {g} claims {chunk.total_uncompressed_size:,} bytes "
                              f"({chunk.total_compressed_size:,} stored) for {hi - lo} payloads of "
                              f"{need - _SLACK:,} bytes at most")
        try:
            col = f.read_row_group(g, columns=["payload"], use_threads=False).column(0)
            arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        except arrow_errors() as exc:
            raise SampleError(self.layout, index, self.where(index), f"unreadable row group {g}: {exc}") from None
        if len(arr) != hi - lo:
            raise SampleError(self.layout, index, self.where(index),
                              f"damaged: row group {g} decodes to {len(arr)} rows, its metadata says {hi - lo}")
        import pyarrow as pa

        width = 8 if pa.types.is_large_binary(arr.type) else 4
        _, offsets_buf, data = arr.buffers()
        offs = np.frombuffer(offsets_buf, f"<i{width}", count=len(arr) + 1, offset=arr.offset * width)
        valid = np.asarray(arr.is_valid()) if arr.null_count else None
        entry = (memoryview(data) if data is not None else memoryview(b""), offs.astype(np.int64).tolist(), valid)
        self._local.cache = (g, entry)
        return entry

    def _read_one(self, i: int):
        return self._read_many([i])[0]

    def _read_many(self, idx: list[int]) -> list:
        count = self.spec.count
        groups = np.searchsorted(self._group_starts, idx, side="right") - 1
        out: list = [None] * len(idx)
        order = np.argsort(groups, kind="stable").tolist()
        groups = groups.tolist()
        k = 0
        while k < len(order):
            g = groups[order[k]]
            first = idx[order[k]]
            if g >= len(self._group_starts) - 1:  # rows the file lacks
                raise SampleError(self.layout, first, self.where(first),
                                  f"missing: {self.target.name} holds {int(self._group_starts[-1])} of {count} rows")
            data, offs, valid = self._group(g, first)
            lo = int(self._group_starts[g])
            while k < len(order) and groups[order[k]] == g:
                slot = order[k]
                r = idx[slot] - lo
                if valid is not None and not valid[r]:
                    raise SampleError(self.layout, idx[slot], self.where(idx[slot]), "missing: the payload is null")
                out[slot] = data[offs[r]:offs[r + 1]]
                k += 1
        return out

    def stored_labels(self) -> np.ndarray:
        import pyarrow.parquet as pq

        try:
            self._ensure_open(0)
            f = pq.ParquetFile(self._source_file(-1))
            self._check_schema(f.schema_arrow)
            if f.metadata.num_rows != self.spec.count:
                raise CorpusError(f"{self.target}: {f.metadata.num_rows} rows for {self.spec.count} samples; "
                                  f"regenerate with --force")
            labels = f.read(columns=["label"], use_threads=False).column(0).to_numpy()
            f.close()
        except LayoutbenchError:
            raise
        except arrow_errors() as exc:
            raise SampleError(self.layout, -1, f"{self.target}:label", f"unreadable: {exc}") from None
        return labels.astype(np.int64)

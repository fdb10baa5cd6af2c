"""`arrow` over S3: corpus.arrow (an Arrow IPC file) read by one ranged GET per sample, at the
file offsets the local reader computes (loaders/arrow.py, whose checks this reuses), found once
per process without fetching the record batches' bodies.

How: pyarrow opens the file through a sparse mirror of the object (_Mirror): an anonymous
private map of the object's size whose pages stay untouched (no memory) until written; a read
of at most META_BYTES (the footer, the schema, a record batch's metadata) is fetched by a ranged
GET into the mirror; of a longer one (a record batch's block: its metadata, then its body) only
the first META_BYTES are fetched, and pyarrow gets the mirror's zero pages for the body pyarrow hands out each buffer as a slice of what it read, so a
buffer's address minus the mirror's is its offset in the object; the payload column's validity
and offsets buffers are then fetched into the mirror (one ranged GET each per record batch), and
the local reader's table of every sample's (offset, length) is computed from them as it is over
a local file's map. A batch's samples that lie back to back (a sequential order) are fetched by
one GET; the GETs are in flight together. (A record batch smaller than META_BYTES is fetched
whole when the file is opened.)"""

from __future__ import annotations

import io
import mmap

import numpy as np

from generator.errors import LayoutbenchError, SampleError

from ..arrow import ArrowReader, arrow_errors
from .base import S3Reader

META_BYTES = 64 << 10


class _Mirror(io.RawIOBase):
    """The object as a file over a sparse anonymous map of its size (the module docstring)."""

    def __init__(self, reader, name: str, size: int, index: int):
        super().__init__()
        self.reader, self.name, self.size, self.index = reader, name, size, index
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        self.map = mmap.mmap(-1, max(1, size), flags=flags)
        self.view = memoryview(self.map)
        self.addr = np.frombuffer(self.map, np.uint8).ctypes.data
        self.fetched: set[tuple[int, int]] = set()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: 0, 1: self._pos, 2: self.size}[whence] + offset
        return self._pos

    def fill(self, a: int, n: int) -> None:
        """Bytes [a, a + n) of the object fetched into the mirror (once)."""
        if n > 0 and (a, n) not in self.fetched:
            self.view[a:a + n] = self.reader.fetch(self.index, self.name, a, n)
            self.fetched.add((a, n))

    def read(self, n: int = -1):
        a = self._pos
        end = self.size if n is None or n < 0 else min(self.size, a + n)
        if end <= a:
            return b""
        self.fill(a, min(end - a, META_BYTES))  # a record batch's metadata comes first in its block
        self._pos = end
        return self.view[a:end]

    def close_map(self) -> None:
        self.view.release()
        try:
            self.map.close()
        except BufferError:  # pyarrow's buffers still reference it: unmapped when they go
            pass


class _Batches:
    """The IPC file reader, each record batch's payload validity and offsets buffers fetched into
    the mirror before the local reader's table reads them."""

    def __init__(self, f, mirror: _Mirror):
        self.f, self.mirror = f, mirror
        self.schema, self.num_record_batches = f.schema, f.num_record_batches

    def get_batch(self, b: int):
        batch = self.f.get_batch(b)
        m = self.mirror
        for buf in batch.column(0).buffers()[:2]:  # validity, offsets
            if buf is not None and m.addr <= buf.address and buf.address + buf.size <= m.addr + m.size:
                m.fill(buf.address - m.addr, buf.size)
        return batch


class S3ArrowReader(S3Reader):
    layout = "arrow"
    stores_spec = True
    handles = ("_pool", "_starts", "_ok", "_table", "_file_size", "_addr")

    _index_table = ArrowReader._index_table
    _check_schema = ArrowReader._check_schema
    _fail_table = ArrowReader._fail_table
    _check_batch = ArrowReader._check_batch

    def data_name(self) -> str:
        return self.prefix  # the layout's path is the file's name (corpus.arrow)

    def data_path(self):
        from pathlib import PurePosixPath

        return PurePosixPath(self.object_url(self.data_name()))

    def where(self, index: int) -> str:
        return f"{self.object_url(self.data_name())} (payload row {index})"

    def expected_objects(self):
        return {self.data_name()}

    def _open(self, index: int) -> None:
        import pyarrow as pa

        from generator.objectstore.store import StoreError

        super()._open(index)
        try:
            size = self.store.head(self.data_name())
        except StoreError as exc:
            raise self.named(exc, index, self.data_name()) from None
        mirror = _Mirror(self, self.data_name(), size, index)
        self._addr, self._file_size = mirror.addr, size
        try:
            f = pa.ipc.open_file(pa.PythonFile(mirror, mode="r"))
            table = self._index_table(_Batches(f, mirror), index)
        except LayoutbenchError:
            raise
        except arrow_errors() as exc:
            raise SampleError(self.layout, index, self.object_url(self.data_name()),
                              f"cannot open the Arrow file: {exc}") from None
        finally:
            mirror.close_map()
        starts, lens = table.starts, table.lens
        ok = table.present & (starts >= 0) & (lens >= 0)
        self._table = table
        self._ok = ok & (np.where(ok, starts + lens, 0) <= size) & (lens == self._size_arr)
        self._starts = starts.tolist()

    def _read_one(self, i: int):
        return self._read_many([i])[0]

    def _read_many(self, idx: list[int]) -> list:
        self._check_batch(idx)
        name, starts, sizes = self.data_name(), self._starts, self._sizes
        return self.fetch_ranges([(i, name, starts[i], sizes[i]) for i in idx])

    def s3_ranges(self, indices):
        return [(self.data_name(), self._starts[i], self._sizes[i]) for i in indices]

    def stored_labels(self) -> np.ndarray:
        import pyarrow as pa

        from .base import S3File

        self._ensure_open(0)
        try:
            f = pa.ipc.open_file(pa.PythonFile(S3File(self, self.data_name(), self._file_size), mode="r"))
            labels = [f.get_batch(b).column(1).to_numpy(zero_copy_only=False) for b in range(f.num_record_batches)]
        except arrow_errors() as exc:
            raise SampleError(self.layout, -1, f"{self.object_url(self.data_name())}:label", f"unreadable: {exc}") from None
        out = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        if len(out) != self.spec.count:
            from generator.errors import CorpusError

            raise CorpusError(f"{self.object_url(self.data_name())}: {len(out)} labels for {self.spec.count} samples; "
                              f"upload the corpus again")
        return out.astype(np.int64)

"""`parquet` over S3: corpus.parquet read with pyarrow through a file over the object
(loaders.s3.base.S3File), by ranged GETs of row groups, as the local reader reads the file
(loaders/parquet.py, whose checks and batch path this reuses): each thread's ParquetFile reads
the footer once (a ranged GET of its last 64 KiB blocks), then a sample costs its row group's
payload column chunk. A batch's row groups not already held by the thread are fetched by one
ranged GET each, in flight together, before pyarrow decodes them from those bytes."""

from __future__ import annotations

import numpy as np

from ..parquet import ParquetReader
from .base import S3File, S3Reader


class S3ParquetReader(S3Reader, ParquetReader):
    layout = "parquet"
    handles = S3Reader.handles + ParquetReader.handles

    def data_name(self) -> str:
        return self.prefix  # the layout's path is the file's name (corpus.parquet)

    def where(self, index: int) -> str:
        return f"{self.object_url(self.data_name())} (payload row {index})"

    def expected_objects(self):
        return {self.data_name()}

    def _open(self, index: int) -> None:
        S3Reader._open(self, index)
        ParquetReader._open(self, index)

    def _close(self) -> None:
        ParquetReader._close(self)
        S3Reader._close(self)

    def _data_size(self, index: int) -> int:
        from generator.objectstore.store import StoreError

        try:
            return self.store.head(self.data_name())
        except StoreError as exc:
            raise self.named(exc, index, self.data_name()) from None

    def _source_file(self, index: int):
        import pyarrow as pa

        f = S3File(self, self.data_name(), self._file_size, index)
        self._local.s3file = f
        return pa.PythonFile(f, mode="r")

    def _advise(self) -> None:
        pass  # no local file

    def _read_many(self, idx: list[int]) -> list:
        groups = np.unique(np.searchsorted(self._group_starts, idx, side="right") - 1).tolist()
        f = self._file(idx[0])
        cached = getattr(self._local, "cache", None)
        held = cached[0] if cached is not None else None
        want = [g for g in groups if g != held and g < len(self._group_starts) - 1]
        if len(want) > 1:  # the batch's row groups in flight together; pyarrow then reads them from here
            if self._chunks is None:
                self._chunks = self._column_chunks(idx[0])
            name = self.data_name()
            first = {g: idx[0] for g in want}
            got = self.fetch_ranges([(first[g], name, *self._chunks[g]) for g in want])
            for g, data in zip(want, got):
                self._local.s3file.preload(self._chunks[g][0], data)
        del f
        return ParquetReader._read_many(self, idx)

    def s3_ranges(self, indices):
        if self._chunks is None:
            self._chunks = self._column_chunks(0)
        groups = np.searchsorted(self._group_starts, list(indices), side="right") - 1
        return [(self.data_name(), *self._chunks[g]) for g in groups.tolist()]

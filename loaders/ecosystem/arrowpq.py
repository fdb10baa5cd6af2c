"""arrow and parquet: pyarrow, as its docs give random access to each format.

- arrow (corpus.arrow, an IPC file): `pa.ipc.open_file(pa.memory_map(path)).read_all()` in each
  DataLoader worker (lazily, kept: persistent workers), a zero-copy table over the map; a sample
  is its row's `payload` value as a buffer (`table["payload"][i].as_buffer()`, no copy), decoded by
  our codec; the `label` column is read once.
- parquet (corpus.parquet): `pq.ParquetFile(path, memory_map=True)` in each worker; Parquet's unit
  of random access is the row group, so a sample is read by reading its row group
  (`read_row_group(g, columns=["payload", "label"])`), the last group read kept, and its row taken
  as in arrow (generator/layouts/parquet.py: row groups of at most 1,024 rows, uncompressed).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .common import LazyDataset, Source


class ArrowDataset(LazyDataset):
    handles = ("source",)

    def __init__(self, path: str, n: int, decode):
        super().__init__(n, decode)
        self.path = path

    def __getitem__(self, i: int):
        if self.source is None:
            source = pa.memory_map(self.path, "r")
            table = pa.ipc.open_file(source).read_all()
            self.payload, self.labels = table["payload"], table["label"].to_numpy()
            self.source = source
        return self.decode(self.payload[i].as_buffer(), i), int(self.labels[i]), i

    def close(self) -> None:
        self.payload = None
        super().close()


class ParquetDataset(LazyDataset):
    handles = ("file",)

    def __init__(self, path: str, n: int, decode):
        super().__init__(n, decode)
        self.path = path

    def __getitem__(self, i: int):
        if self.file is None:
            f = pq.ParquetFile(self.path, memory_map=True)
            rows = [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)]
            self.starts = np.concatenate([[0], np.cumsum(rows)])
            self.group, self.table = -1, None
            self.file = f
        g = int(np.searchsorted(self.starts, i, side="right")) - 1
        if g != self.group:
            self.table = self.file.read_row_group(g, columns=["payload", "label"], use_threads=False)
            self.group = g
        r = i - int(self.starts[g])
        return self.decode(self.table["payload"][r].as_buffer(), i), self.table["label"][r].as_py(), i

    def close(self) -> None:
        self.table, self.group = None, -1
        super().close()


class ArrowSource(Source):
    library = "pyarrow"
    modules = ("pyarrow",)

    def dataset(self, rank: int):
        path = str(self.root / "corpus.arrow")
        return ArrowDataset(path, self.n, self.decoder(path))

    def extra_settings(self) -> dict:
        return {"dataset": "map-style: pa.ipc.open_file(pa.memory_map(corpus.arrow)).read_all() per worker, "
                           "table['payload'][i].as_buffer() per sample"}


class ParquetSource(Source):
    library = "pyarrow.parquet"
    modules = ("pyarrow",)

    def dataset(self, rank: int):
        path = str(self.root / "corpus.parquet")
        return ParquetDataset(path, self.n, self.decoder(path))

    def extra_settings(self) -> dict:
        return {"dataset": "map-style: pq.ParquetFile(corpus.parquet, memory_map=True) per worker, the sample's row "
                           "group read (read_row_group, the last one kept), its row per sample"}

"""`arrow` reader: corpus.arrow (see generator.layouts.arrow for the format).

The file is mapped read-only (loaders/mapped.py) and opened with pyarrow.ipc.open_file over a
zero-copy pyarrow buffer of that map, once per process: pyarrow reads the footer and each record
batch's metadata and gives its buffers as zero-copy slices of the map. (Not pyarrow.memory_map:
its whole-file read_buffer advises MADV_WILLNEED, which read 8 MiB around the footer before any
advice could be given, and under a cap read 9x the corpus in the first epoch.)
From each batch's `payload` offsets buffer and its data buffer's address in the map, the file
offset of every sample is computed with numpy (no Python object per sample); from then on
samples are copied out of one memoryview of the same map (loaders/mapped.py), with no pyarrow
call per sample or batch.

Checked before any payload page is touched: the schema (payload binary or large_binary, label
uint16) and its stored spec against manifest.json (CorpusError for another corpus or a file not
ours); at most `count` record batches and rows in all; every buffer inside the file; offsets
monotonic and inside their data buffer. A null payload or a row the file lacks is a missing
sample; pyarrow's errors on a damaged file (ArrowInvalid, OSError) are a SampleError naming
corpus.arrow.
"""

from __future__ import annotations

import os

import numpy as np

from generator.errors import CorpusError, LayoutbenchError, SampleError
from generator.layouts.arrow import SPEC_KEY
from generator.manifest import stored_spec

from .base import Reader
from .mapped import MappedReader, Table


def arrow_errors() -> tuple:
    import pyarrow as pa

    return (pa.ArrowException, OSError)


def check_schema(reader: Reader, schema) -> None:
    """The payload/label columns and the stored spec of an Arrow or Parquet file `reader` reads:
    CorpusError for a file that is not ours or holds another corpus."""
    import pyarrow as pa

    names = schema.names
    if (len(names) < 2 or names[:2] != ["payload", "label"]
            or not (pa.types.is_binary(schema.field(0).type) or pa.types.is_large_binary(schema.field(0).type))
            or schema.field(1).type != pa.uint16()):
        raise CorpusError(f"{reader.target} has columns {schema} where layoutbench writes payload (binary) and "
                          f"label (uint16): it is not ours; regenerate the corpus with --force")
    stored = (schema.metadata or {}).get(SPEC_KEY)
    where = f"{reader.target} (schema metadata {SPEC_KEY.decode()})"
    if stored is None:
        raise CorpusError(f"{where} is missing: the file is not ours; regenerate the corpus with --force")
    if not stored_spec(stored, where).same_corpus(reader.spec):
        raise CorpusError(f"{reader.target} holds a corpus of another spec than {reader.root}/manifest.json; "
                          f"regenerate the corpus with --force")


class ArrowReader(MappedReader):
    layout = "arrow"
    stores_spec = True

    def where(self, index: int) -> str:
        return f"{self.target} (payload row {index})"

    def _locate(self, index: int) -> Table:
        import pyarrow as pa

        errors = arrow_errors()
        try:
            f = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(self._view)))  # zero-copy over our map
            return self._index_table(f, index)
        except LayoutbenchError:
            raise
        except errors as exc:
            raise SampleError(self.layout, index, str(self.target), f"cannot open the Arrow file: {exc}") from None

    def _index_table(self, f, index: int) -> Table:
        import pyarrow as pa

        self._check_schema(f.schema)
        count, base, size = self.spec.count, self._addr, self._file_size
        table = Table(count)
        table.absent = "missing: corpus.arrow has no payload for it (a null, or a row the file lacks)"
        if f.num_record_batches > count:
            raise CorpusError(f"{self.target} has {f.num_record_batches} record batches for {count} samples: it is "
                              f"not this corpus's; regenerate the corpus with --force")
        row = 0
        for b in range(f.num_record_batches):
            batch = f.get_batch(b)
            n = batch.num_rows
            if row + n > count:
                raise CorpusError(f"{self.target} holds more than the {count} rows of this corpus; regenerate "
                                  f"the corpus with --force")
            col = batch.column(0)
            validity, offsets_buf, data = col.buffers()
            width = 8 if pa.types.is_large_binary(col.type) else 4
            for buf in (validity, offsets_buf, data):
                if buf is not None and not (base <= buf.address and buf.address + buf.size <= base + size):
                    raise SampleError(self.layout, row, self.where(row), "damaged: a buffer lies outside the file")
            if n == 0:
                continue
            if offsets_buf is None or offsets_buf.size < (col.offset + n + 1) * width:
                raise SampleError(self.layout, row, self.where(row),
                                  f"damaged: record batch {b} has {n} rows and too short an offsets buffer")
            offs = np.frombuffer(offsets_buf, f"<i{width}", count=n + 1, offset=col.offset * width).astype(np.int64)
            starts, ends = offs[:-1], offs[1:]
            data_at, data_size = (data.address - base, data.size) if data is not None else (0, 0)
            good = (starts >= 0) & (starts <= ends) & (ends <= data_size)
            if col.null_count:
                good &= np.asarray(col.is_valid())
            sl = slice(row, row + n)
            table.starts[sl] = np.where(good, data_at + starts, 0)
            table.lens[sl] = np.where(good, ends - starts, 0)
            table.present[sl] = good
            row += n
        return table

    def _check_schema(self, schema) -> None:
        check_schema(self, schema)

    def stored_labels(self) -> np.ndarray:
        import pyarrow as pa

        try:
            with pa.memory_map(os.fsencode(self.target), "r") as mm:
                f = pa.ipc.open_file(mm)
                self._check_schema(f.schema)
                if f.num_record_batches > self.spec.count:
                    raise CorpusError(f"{self.target} has more record batches than samples; regenerate with --force")
                parts = [f.get_batch(b).column(1) for b in range(f.num_record_batches)]
                if sum(len(p) for p in parts) != self.spec.count:
                    raise CorpusError(f"{self.target}: its label column is not {self.spec.count} rows long; "
                                      f"regenerate with --force")
                labels = np.concatenate([p.to_numpy(zero_copy_only=False) for p in parts]) if parts else np.zeros(0)
        except LayoutbenchError:
            raise
        except arrow_errors() as exc:
            raise SampleError(self.layout, -1, f"{self.target}:label", f"unreadable: {exc}") from None
        if len(labels) != self.spec.count:
            raise CorpusError(f"{self.target}: {len(labels)} labels for {self.spec.count} samples; regenerate with --force")
        return labels.astype(np.int64)

"""`parquet`: one Parquet file, corpus.parquet.

- Columns: `payload` (large_binary) and `label` (uint16), the same as the arrow layout's.
- Row groups of `group_rows(spec)` samples: about 8 MiB of payload, at most 1,024 rows, at
  least one (MNIST-size samples: 1,024 rows, 1 MB; ImageNet-size: 55 rows; 4K: one image per
  group). Row group g holds samples [g*rows, (g+1)*rows) whatever the generator's workers, so
  the file is byte-identical across reruns. A reader gets one sample by reading its row group's
  payload column chunk, so the size is the unit of random access: smaller groups cost less per
  random sample, larger ones compress and stream better. (Hugging Face datasets writes image
  datasets in row groups of 100 rows; Parquet's own default is 1 Mi rows.)
- No compression, no dictionary encoding, no column statistics (min/max of a binary column
  would copy two payloads into the footer), PLAIN pages: a payload's bytes stand in the file as
  they are. The spec is in the Arrow schema stored in the footer (metadata `layoutbench_spec`).

Atomic: written as .corpus.parquet.partial, fsynced, renamed to corpus.parquet. A Parquet file
is only readable once its footer is written, so a kill restarts this layout from its first sample.
"""

from __future__ import annotations

import os

from pathlib import Path

from . import payload_estimate
from .arrow import BatchedWriter, schema

FILENAME = "corpus.parquet"
PARTIAL = ".corpus.parquet.partial"
GROUP_BYTES = 8 << 20
MAX_GROUP_ROWS = 1024
COMPRESSION = "none"  # a pyarrow codec name ("zstd", "snappy"...) writes compressed pages; readers handle any


def group_rows(spec, codec) -> int:
    """Samples per row group (the module docstring)."""
    return max(1, min(MAX_GROUP_ROWS, GROUP_BYTES // max(1, payload_estimate(spec, codec)), spec.count))


class ParquetWriter(BatchedWriter):
    name = "parquet"
    target = FILENAME
    partial = PARTIAL

    def _rows(self) -> int:
        return group_rows(self.spec, self.codec)

    def _start(self) -> None:
        import pyarrow.parquet as pq

        self.schema = schema(self.spec)
        import pyarrow as pa

        # the file opened by its bytes: any name the filesystem holds, whatever the locale's encoding
        self.sink = pa.OSFile(os.fsencode(self.path), "wb")
        self.file = pq.ParquetWriter(self.sink, self.schema, compression=COMPRESSION, use_dictionary=False,
                                     write_statistics=False, store_schema=True)

    def _write_batch(self, payloads, labels) -> None:
        import pyarrow as pa

        table = pa.Table.from_arrays(self._batch_arrays(payloads, labels), schema=self.schema)
        self.file.write_table(table, row_group_size=len(payloads))  # one batch, one row group

    def _finish(self) -> None:
        self.file.close()
        self.sink.close()  # the writer closes only a file it opened itself

    def abort(self) -> None:
        for handle in (getattr(self, "file", None), getattr(self, "sink", None)):
            try:
                handle.close()
            except Exception:
                pass

    @classmethod
    def snapshot(cls, root) -> dict[str, bytes]:
        """The records and how they are stored, not the file's bytes: the footer names the writing
        library's version (created_by), which changes with every pyarrow release."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        f = pq.ParquetFile(pa.OSFile(os.fsencode(Path(root) / FILENAME)))
        try:
            meta, out = f.metadata, {"schema": str(f.schema_arrow).encode()}
            out["metadata"] = repr(sorted((f.schema_arrow.metadata or {}).items())).encode()
            for g in range(meta.num_row_groups):
                group = f.read_row_group(g, use_threads=False)
                chunks = [meta.row_group(g).column(c) for c in range(meta.num_columns)]
                out[f"group/{g}/layout"] = repr([(c.compression, c.encodings, c.is_stats_set) for c in chunks]).encode()
                out[f"group/{g}/payload"] = b"".join(len(v).to_bytes(8, "little") + v
                                                    for v in group.column(0).to_pylist())
                out[f"group/{g}/label"] = group.column(1).to_numpy().tobytes()
        finally:
            f.close()
        return out

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        return spec.count * (payload_estimate(spec, codec) + 2 + 8 + 16) + (64 << 10)  # + schema, footer, headers

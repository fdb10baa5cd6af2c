"""`arrow`: one Arrow IPC file (the random-access "file" format, Feather v2), corpus.arrow.

- Columns: `payload` (large_binary: 64-bit offsets, so no record batch or sample size limit)
  and `label` (uint16). Uncompressed buffers, so a reader over a memory map gets each payload
  in place (zero copy).
- Record batches of `batch_rows(spec)` samples: about 64 MiB of payload, at most 65,536 rows,
  at least one. Batch k holds samples [k*rows, (k+1)*rows), whatever the generator's workers,
  so the file is byte-identical across reruns. (Random access in an IPC file costs the same
  whatever the batch size: the footer locates every batch; the size bounds the writer's
  buffering.)
- The schema's metadata holds the spec as JSON (`layoutbench_spec`) and the format version.

Atomic: written as .corpus.arrow.partial, fsynced, renamed to corpus.arrow. An IPC file is only
readable once its footer is written, so a kill restarts this layout from its first sample.
"""

from __future__ import annotations

import json
import os

import numpy as np

from . import LayoutWriter, payload_estimate

FILENAME = "corpus.arrow"
PARTIAL = ".corpus.arrow.partial"
BATCH_BYTES = 64 << 20
MAX_BATCH_ROWS = 65_536
SPEC_KEY = b"layoutbench_spec"
FORMAT_KEY = b"layoutbench_format"


def batch_rows(spec, codec) -> int:
    """Samples per record batch (the module docstring)."""
    return max(1, min(MAX_BATCH_ROWS, BATCH_BYTES // max(1, payload_estimate(spec, codec)), spec.count))


def schema(spec):
    import pyarrow as pa

    return pa.schema([pa.field("payload", pa.large_binary(), nullable=False),
                      pa.field("label", pa.uint16(), nullable=False)],
                     metadata={SPEC_KEY: json.dumps(spec.to_dict()).encode(), FORMAT_KEY: b"1"})


def binary_array(payloads: list):
    """A large_binary array of `payloads`: one join into its data buffer, offsets from the sizes
    (no Python object per sample inside pyarrow)."""
    import pyarrow as pa

    sizes = np.fromiter(map(len, payloads), np.int64, len(payloads))
    offsets = np.zeros(len(payloads) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = payloads[0] if len(payloads) == 1 else b"".join(payloads)
    return pa.Array.from_buffers(pa.large_binary(), len(payloads), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def fsync_path(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BatchedWriter(LayoutWriter):
    """A single writer of fixed-row batches: put_many buffers payloads and labels and hands every
    complete batch of `rows` samples to `_write_batch(payloads, labels)`; the last, short one
    goes at end(). Subclasses open their file in `_start` and close it in `_finish`."""

    rows: int

    def begin(self) -> int:
        self.rows = self._rows()
        self.pending, self.pending_labels = [], []
        self._start()
        return 0

    def put_many(self, indices, payloads, labels) -> None:
        self.pending.extend(payloads)
        self.pending_labels.extend(labels)
        while len(self.pending) >= self.rows:
            self._write_batch(self.pending[:self.rows], self.pending_labels[:self.rows])
            del self.pending[:self.rows], self.pending_labels[:self.rows]

    def end(self, labels) -> None:
        if self.pending:
            self._write_batch(self.pending, self.pending_labels)
            self.pending, self.pending_labels = [], []
        self._finish()
        fsync_path(self.path)
        os.replace(self.path, self.root / self.target)
        fsync_path(self.root)

    def paths(self):
        return [self.root / self.target, self.root / self.partial]

    @property
    def path(self):
        return self.root / self.partial

    def _batch_arrays(self, payloads, labels):
        import pyarrow as pa

        return [binary_array(payloads), pa.array(np.asarray(labels, np.uint16), pa.uint16())]


class ArrowWriter(BatchedWriter):
    name = "arrow"
    target = FILENAME
    partial = PARTIAL

    def _rows(self) -> int:
        return batch_rows(self.spec, self.codec)

    def _start(self) -> None:
        import pyarrow as pa

        self.sink = pa.OSFile(os.fsencode(self.path), "wb")  # truncates what a killed run left
        self.schema = schema(self.spec)
        self.file = pa.ipc.new_file(self.sink, self.schema)

    def _write_batch(self, payloads, labels) -> None:
        import pyarrow as pa

        self.file.write_batch(pa.record_batch(self._batch_arrays(payloads, labels), schema=self.schema))

    def _finish(self) -> None:
        self.file.close()
        self.sink.close()

    def abort(self) -> None:
        for handle in ("file", "sink"):
            try:
                getattr(self, handle).close()
            except Exception:
                pass

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        return spec.count * (payload_estimate(spec, codec) + 2 + 8 + 16) + (64 << 10)  # + schema, footer, headers

"""`lance`: one Lance dataset, corpus.lance/, written by pylance (the Lance format's own library).

- Columns: `payload` (large_binary) and `label` (uint16), the arrow layout's schema, with the spec
  as JSON in the schema's metadata (`layoutbench_spec`), which Lance keeps in its manifest.
- Fragments of `fragment_rows(spec)` samples: about 256 MiB of payload, at most 1,048,576 rows
  (`lance.write_dataset`'s default max_rows_per_file), at least one. Fragment k holds samples
  [k*rows, (k+1)*rows), whatever the generator's workers; each is one data file under data/,
  written by `lance.fragment.write_fragments` as its batch arrives, and the dataset is committed
  once, at end(), as one Overwrite of all of them (one version). Row groups inside a file are
  Lance's default (1,024 rows).
- File format version FILE_VERSION, pinned (not pylance's moving "stable"), so a newer pylance
  writes the same layout; Lance chooses each column's encoding and compression itself (it
  compresses the payload column's pages where that pays: a reader gets the payload bytes back
  through pylance, never at a file offset).

Lance names data files by random UUIDs and stamps its manifest with the time, so two writes of the
same corpus differ in bytes: `snapshot` compares the records (schema, fragment sizes, payloads,
labels), as the parquet layout does.

Atomic: written under .corpus.lance.partial/, every file fsynced, the directory renamed to
corpus.lance/ (a dataset directory is relocatable: its manifest names files relative to it). A kill
restarts this layout from its first sample.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from . import payload_estimate
from .arrow import BatchedWriter, fsync_path, schema

FILENAME = "corpus.lance"
PARTIAL = ".corpus.lance.partial"
FRAGMENT_BYTES = 256 << 20
MAX_FRAGMENT_ROWS = 1 << 20  # lance.write_dataset's max_rows_per_file default
FILE_VERSION = "2.2"  # the Lance file format version written (data_storage_version)

# pylance warns at every fork once imported; the generator's workers never call it (loaders/lance.py)
warnings.filterwarnings("ignore", message="lance is not fork-safe")


def fragment_rows(spec, codec) -> int:
    """Samples per fragment (the module docstring)."""
    return max(1, min(MAX_FRAGMENT_ROWS, FRAGMENT_BYTES // max(1, payload_estimate(spec, codec)), spec.count))


class LanceWriter(BatchedWriter):
    name = "lance"
    target = FILENAME
    partial = PARTIAL

    def _rows(self) -> int:
        return fragment_rows(self.spec, self.codec)

    def _start(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)  # what a killed run left: Lance restarts from 0
        self.path.mkdir()
        self.schema = schema(self.spec)
        self.fragments = []

    def _write_batch(self, payloads, labels) -> None:
        import pyarrow as pa
        from lance.fragment import write_fragments

        table = pa.Table.from_arrays(self._batch_arrays(payloads, labels), schema=self.schema)
        self.fragments += write_fragments(table, os.fsdecode(self.path), schema=self.schema, mode="create",
                                          max_rows_per_file=len(payloads), data_storage_version=FILE_VERSION)

    def _finish(self) -> None:
        import lance

        lance.LanceDataset.commit(os.fsdecode(self.path), lance.LanceOperation.Overwrite(self.schema, self.fragments))

    def end(self, labels) -> None:
        if self.pending:
            self._write_batch(self.pending, self.pending_labels)
            self.pending, self.pending_labels = [], []
        self._finish()
        for p in sorted(self.path.rglob("*")):
            fsync_path(p)  # files and the directories that name them
        fsync_path(self.path)
        final = self.root / self.target
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.path, final)
        fsync_path(self.root)

    @classmethod
    def snapshot(cls, root) -> dict[str, bytes]:
        """The records and how they are cut, not the files' bytes (the module docstring); the schema's
        metadata sorted (Lance keeps it in a hash map: its order changes from one open to the next)."""
        import lance

        ds = lance.dataset(os.fsdecode(Path(root) / FILENAME))
        out = {"schema": str(ds.schema.remove_metadata()).encode(), "metadata": repr(sorted((ds.schema.metadata or {}).items())).encode(),
               "fragments": repr([f.count_rows() for f in ds.get_fragments()]).encode(),
               "version": f"{ds.data_storage_version} v{ds.version}".encode()}
        for k, fragment in enumerate(ds.get_fragments()):  # (a scan's batches are cut as its threads go)
            table = fragment.to_table(columns=["payload", "label"])
            out[f"fragment/{k}/payload"] = b"".join(len(v).to_bytes(8, "little") + v
                                                   for v in table.column(0).to_pylist())
            out[f"fragment/{k}/label"] = table.column(1).to_numpy().tobytes()
        return out

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        # payload + label + offsets and page headers per sample; manifest, transaction and file footers
        return spec.count * (payload_estimate(spec, codec) + 2 + 8 + 16) + (256 << 10)

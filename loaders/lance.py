"""`lance` reader: corpus.lance/ through pylance's random access (see generator.layouts.lance).

The dataset is opened once per process (`lance.dataset`: its manifest, schema and fragment list);
then each fragment's data file is read with pylance's file-level random access
(`lance.file.LanceFileReader(path, columns=["payload"]).take_rows(rows)`, opened on first use):
a batch is sorted, split by fragment and read with one take_rows per fragment it touches, on
Lance's own I/O threads. (The dataset's `take` gives the same rows through its query planner at
about 1.6x the cost per 32-sample batch: bench/speed-style timing in docs/layouts.md.) The
payloads are slices of the returned Arrow buffers: small fixed-size ones go to the batch
assembler (loaders/base.py: one join, one header check, one copy), others are copied or decoded
one by one. A fragment that is not one data file holding every row (deleted rows, columns split
over files: not as the writer makes it) is refused when the dataset is opened. Lance's file encodings (miniblock pages, compressed where it pays)
put a payload at no byte range of a file pylance would give, so this reader has no extents
(`no_extents`) and reads nothing through a map of its own.

Checked when the dataset is opened, before any payload: the schema and its stored spec against
manifest.json (loaders.arrow.check_schema: CorpusError for a dataset not ours or of another
corpus), and the row count. A null payload is a missing sample; pylance's errors on a damaged
dataset (a data file truncated or gone, a manifest unreadable) are a SampleError naming the
dataset directory and the first sample of the batch, never a library traceback.

pylance is not fork-safe: a child forked after its parent used it (any pylance call starts its
runtime's threads) crashes in its first calls (SIGSEGV); one forked after a mere `import lance`
works. So the reader is `fork_safe = False`: process workers asked to fork are spawned instead
(Reader.process_kind: our Loader and the torch DataLoader over our readers), and a process forked
from one where this project ran pylance (`ran_pylance()`: this reader, the lance contender) gets one
line naming the problem from its first read, never a crash. Lance's own warning at every fork
("lance is not fork-safe") is silenced: this is where it is handled.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np

from generator.errors import CorpusError, LayoutbenchError, SampleError, UsageError

from .arrow import check_schema
from .base import Reader

warnings.filterwarnings("ignore", message="lance is not fork-safe")

_ran_in: int | None = None  # the process that first ran pylance here (inherited by its forks)


def ran_pylance() -> None:
    """Say that this process is about to run pylance (call before any pylance call)."""
    global _ran_in
    if _ran_in is None:
        _ran_in = os.getpid()


def check_not_forked(what: str) -> None:
    """UsageError when this process was forked from one that had run pylance (see the module docstring)."""
    if _ran_in is not None and _ran_in != os.getpid():
        raise UsageError(f"{what} cannot be read in a process forked after pylance ran in its parent (pylance is "
                         f"not fork-safe: such a child crashes); read it in threads or spawned processes "
                         f"(--worker-kind spawn; process workers are spawned for it)")


def lance_errors() -> tuple:
    import pyarrow as pa

    return (pa.ArrowException, OSError, ValueError, RuntimeError)


class LanceReader(Reader):
    layout = "lance"
    handles = ("_ds", "_files", "_starts", "_threads")
    stores_spec = True
    fork_safe = False
    no_extents = ("Lance encodes a column's values in pages of its own encoding (miniblock, compressed where it "
                  "pays); pylance gives no byte range per value")

    def where(self, index: int) -> str:
        return f"{self.target} (row {index})"

    def paths(self):
        """Every file of the dataset: data files, manifests, transactions."""
        if not self.target.is_dir():
            return [self.target]
        return sorted(p for p in self.target.rglob("*") if p.is_file())

    def _open(self, index: int) -> None:
        import lance

        if not self.target.is_dir():
            raise SampleError(self.layout, index, str(self.target), "missing (no such directory)")
        check_not_forked("the lance layout")
        ran_pylance()
        try:
            ds = lance.dataset(os.fsdecode(self.target))
            check_schema(self, ds.schema)
            fragments = [f.metadata for f in ds.get_fragments()]
        except LayoutbenchError:
            raise
        except lance_errors() as exc:
            raise SampleError(self.layout, index, str(self.target), f"cannot open the Lance dataset: {_line(exc)}") \
                from None
        files, rows = [], []
        for f in fragments:
            if len(f.files) != 1 or f.deletion_file is not None or 0 not in f.files[0].fields:
                raise CorpusError(f"{self.target}: fragment {f.id} is not one data file holding every row (deleted "
                                  f"rows, or columns over several files): not as layoutbench writes it; regenerate "
                                  f"the corpus with --force")
            files.append(self.target / "data" / f.files[0].path)
            rows.append(f.physical_rows)
        if sum(rows) != self.spec.count:
            raise CorpusError(f"{self.target} holds {sum(rows)} rows where this corpus has {self.spec.count} samples: "
                              f"it is not this corpus's; regenerate the corpus with --force")
        for path in files:
            self.check_inside(path)
        self._ds, self._files = ds, files
        self._starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
        self._threads = threading.local()  # per thread: its file readers (a LanceFileReader is not shared)

    def _close(self) -> None:
        self._ds = self._files = self._starts = self._threads = None

    def _file(self, k: int, i: int):
        """Fragment k's data file reader (payload column), opened on first use in this thread (one
        reader in two threads at once is an error of pylance's: "Already borrowed")."""
        from lance.file import LanceFileReader

        readers = getattr(self._threads, "readers", None)
        if readers is None:
            readers = self._threads.readers = [None] * len(self._files)
        reader = readers[k]
        if reader is None:
            try:
                reader = LanceFileReader(os.fsdecode(self._files[k]), columns=["payload"])
            except lance_errors() as exc:
                raise SampleError(self.layout, i, str(self._files[k]), f"unreadable: {_line(exc)}") from None
            readers[k] = reader
        return reader

    def _take(self, idx: list[int]) -> list:
        """The payloads of `idx` as memoryviews of pylance's buffers, in the order asked: the batch
        sorted and deduplicated, one take_rows per fragment touched."""
        want = np.asarray(idx, np.int64)
        rows, inverse = np.unique(want, return_inverse=True)
        frags = np.searchsorted(self._starts, rows, side="right") - 1
        cuts = np.flatnonzero(np.diff(frags)) + 1
        views = []
        for part in np.split(np.arange(len(rows)), cuts):
            k = int(frags[part[0]])
            local = (rows[part] - self._starts[k]).tolist()
            first = int(rows[part[0]])
            try:
                col = self._file(k, first).take_rows(local).to_table().column(0).combine_chunks()
            except LayoutbenchError:
                raise
            except lance_errors() as exc:
                raise SampleError(self.layout, first, self.where(first), f"unreadable: {_line(exc)}") from None
            views += self._payload_views(col, rows[part].tolist())
        return [views[j] for j in inverse.tolist()]

    def _payload_views(self, col, got: list[int]) -> list:
        """Each value of a payload column of the rows `got` as a memoryview (a null or a row
        pylance left out is a missing sample)."""
        import pyarrow as pa

        if len(col) != len(got):
            raise SampleError(self.layout, got[0], self.where(got[0]),
                              f"missing: pylance gave {len(col)} rows for {len(got)}")
        if col.null_count:
            k = int(np.flatnonzero(~np.asarray(col.is_valid()))[0])
            raise SampleError(self.layout, got[k], self.where(got[k]), "missing: the dataset holds a null payload")
        _, offsets, data = col.buffers()
        width = 8 if pa.types.is_large_binary(col.type) else 4
        offs = np.frombuffer(offsets, f"<i{width}", count=len(col) + 1, offset=col.offset * width).tolist()
        view = memoryview(data if data is not None else b"")
        return [view[a:b] for a, b in zip(offs[:-1], offs[1:])]

    def _read_one(self, i: int):
        return self._take([i])[0].tobytes()

    def _read_many(self, idx: list[int]) -> list:
        return [p.tobytes() for p in self._take(idx)]

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        payloads = self._take(idx)
        if self.small:
            return self._assemble(idx, payloads, out)
        flat = memoryview(out).cast("B")
        for k, (i, p) in enumerate(zip(idx, payloads)):
            self._place(i, p, flat, k, out)

    def stored_labels(self) -> np.ndarray:
        self._ensure_open(0)
        try:
            labels = self._ds.to_table(columns=["label"]).column(0).to_numpy()
        except lance_errors() as exc:
            raise SampleError(self.layout, -1, f"{self.target}:label", f"unreadable: {_line(exc)}") from None
        if len(labels) != self.spec.count:
            raise CorpusError(f"{self.target}: {len(labels)} labels for {self.spec.count} samples; regenerate with --force")
        return labels.astype(np.int64)


def _line(exc: BaseException) -> str:
    """A library error as one short line."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__

"""`lmdb` and `sqlite` over S3, staged: their libraries open a local path (LMDB maps its data.mdb,
SQLite pages through its own VFS), so the layout's objects are downloaded to a local temporary
directory when the reader is made (in the calling process, before any epoch), then read there
by the local reader (loaders/lmdb.py, loaders/sqlite.py), whose reads, checks and errors are
unchanged. What staging cost is the reader's `staging` (objects, bytes, seconds), which a bench
run records in each epoch's s3 part (staged_bytes, staged_s) and says in its notes.

Where: a directory LAYOUT-* inside .s3-stage-HOST-PID under $LAYOUTBENCH_STAGE_DIR (else the system's
temporary directory). It is removed when the reader is garbage collected or the process exits
(Ctrl-C and SIGTERM end the bench through exceptions, so exit runs), and a staging directory
whose owner died (SIGKILL) is removed by the next staging on this host. Process workers read the
parent's staged copy; they never stage nor remove it."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

from generator.errors import UsageError
from generator.lifetime import owned_name, sweep_dead
from generator.manifest import MANIFEST

from .base import S3Reader

STAGE_PREFIX = ".s3-stage-"


def stage_root() -> Path:
    return Path(os.environ.get("LAYOUTBENCH_STAGE_DIR") or tempfile.gettempdir())


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked child's exit leaves its parent's copy alone
        shutil.rmtree(path, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(path))  # this process's staging directory, once empty
        except OSError:
            pass


class S3StagedReader(S3Reader):
    """The layout's objects staged to a local directory, read by its local reader (`local`)."""

    staged = True  # its epochs read a local copy: no GET floor bounds them (bench.probe.floors)

    def __init__(self, store, manifest, *, verify: bool = False):
        super().__init__(store, manifest, verify=verify)
        from generator.objectstore.store import StoreError
        from generator.objectstore.transfer import _each

        from generator.layouts import get_layout

        root = stage_root()
        try:
            sweep_dead(root, STAGE_PREFIX)  # what readers of dead processes staged
            mine = root / owned_name(STAGE_PREFIX)
            mine.mkdir(parents=True, exist_ok=True)
            here = tempfile.mkdtemp(prefix=f"{self.layout}-", dir=mine)
        except OSError as exc:
            raise UsageError(f"cannot make a staging directory for {self.target} under {root} ({exc.strerror}): "
                             f"set LAYOUTBENCH_STAGE_DIR to a writable directory with room for it") from None
        self.stage_dir = here
        weakref.finalize(self, _remove, here, os.getpid())
        t0, before = time.perf_counter(), store.stats()
        names = self.staged_objects()

        def fetch(name):
            dst = Path(here) / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = store.get(name, expected_size=names[name])
            except StoreError as exc:
                raise self.named(exc, -1, name) from None
            dst.write_bytes(data)

        _each(fetch, list(names), 8)
        try:
            (Path(here) / MANIFEST).write_bytes(store.get(MANIFEST))
        except StoreError as exc:
            raise self.named(exc, -1, MANIFEST) from None
        used = store.stats() - before
        self.staging = {"objects": len(names), "bytes": used.get_bytes, "seconds": time.perf_counter() - t0}
        self.local = get_layout(self.layout).reader_class()(here, manifest, verify=verify)

    def staged_objects(self) -> dict[str, int]:
        """{object name: size} of the layout: its one file (sqlite), or the objects under its folder."""
        from generator.objectstore.store import StoreError

        names = self.store.list(self.prefix)
        if not names:
            try:
                names = {self.prefix: self.store.head(self.prefix)}
            except StoreError as exc:
                raise self.named(exc, -1, self.prefix) from None
        return names

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target} staged in {self.stage_dir} ({self.spec.count} samples)>"

    def where(self, index: int) -> str:
        return f"{self.local.where(index)} (staged from {self.target})"

    def _open(self, index: int) -> None:
        self.local._ensure_open(index)

    def _close(self) -> None:
        self.local.close()

    def _read_one(self, i: int):
        return self.local._read_one(i)

    def _read_many(self, idx: list[int]) -> list:
        return self.local._read_many(idx)

    def _read_into(self, idx: list[int], out) -> None:
        return self.local._read_into(idx, out)

    def stored_labels(self):
        return self.local.stored_labels()

    def check_integrity(self, indices):
        return self.local.check_integrity(indices)

    def unexpected_entries(self) -> list[str]:
        return self.local.unexpected_entries()

    def s3_ranges(self, indices):
        """The staged objects, whole: what staging fetched (a staged layout's reads are local)."""
        return [(name, None, size) for name, size in self.staged_objects().items()]


class S3StagedLMDB(S3StagedReader):
    layout = "lmdb"


class S3StagedSQLite(S3StagedReader):
    layout = "sqlite"

"""`lmdb`: one environment, lmdb/ (data.mdb, lock.mdb).

- sub-database `payload`: key = index as 8-byte big-endian (so keys sort in index order and
  are appended), value = the payload bytes.
- sub-database `meta`: `labels` = uint16 little-endian array of every label; `spec` = JSON.
  No pickle anywhere.
- The map size is computed from the spec (see map_size) so writing never hits MapFullError.

LMDB commits are atomic, so the environment is built in lmdb.partial/ in batched transactions
and a rerun resumes after the last committed sample; it is renamed to lmdb/ when complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from . import LayoutWriter, payload_estimate

DIRNAME = "lmdb"
PARTIAL = "lmdb.partial"
PAGE = 4096
# Commit about every 64 MiB or 16,384 samples, whichever comes first. Commits are cheap
# (sync=False: no fsync until the end); these bound the write transaction's dirty pages in
# memory and how much an interrupted run must redo.
TXN_BYTES = 64 << 20
TXN_SAMPLES = 16_384


def key_of(index: int) -> bytes:
    return index.to_bytes(8, "big")


def entry_bytes(spec, codec) -> int:
    """Upper estimate of the bytes one sample takes in the environment."""
    value = payload_estimate(spec, codec)
    if value + 8 + 16 > PAGE // 2:  # stored in overflow pages of its own
        return (-(-(value + 16) // PAGE)) * PAGE + 64
    return 2 * (value + 8 + 16)  # packed in leaf pages, which may be only half full after splits


def missing_bytes(env, data_path) -> int:
    """Bytes that data.mdb lacks of what its last commit uses (0 when whole). LMDB reads through a
    memory map, and touching a page past the end of a truncated file kills the process with
    SIGBUS instead of raising, so this is checked before any page is read (the meta pages it
    reads are the file's first two)."""
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    return max(0, used - os.stat(data_path).st_size)


def map_size(spec, codec) -> int:
    """Enough address space for the whole corpus with room for copy-on-write pages."""
    return int(1.5 * spec.count * entry_bytes(spec, codec)) + 4 * spec.count + (64 << 20)


class LMDBWriter(LayoutWriter):
    name = "lmdb"
    target = DIRNAME

    def paths(self):
        return [self.root / DIRNAME, self.root / PARTIAL]

    def begin(self) -> int:
        import lmdb

        self.path = self.root / PARTIAL
        self.path.mkdir(exist_ok=True)
        self.pending = self.pending_samples = 0
        try:
            self.env = lmdb.open(os.fsencode(self.path), map_size=map_size(self.spec, self.codec), max_dbs=2,
                                 subdir=True, sync=False, metasync=False, readahead=False)
            if missing_bytes(self.env, self.path / "data.mdb"):  # damaged, not left by a kill: start over
                self.env.close()
                shutil.rmtree(self.path)
                return self.begin()
            # A process killed inside a read transaction leaves its slot in lock.mdb's reader table:
            # LMDB's own state, not damage, but while it stays no page freed after its snapshot is
            # reused. LMDB's mdb_reader_check clears the slots of dead processes.
            self.env.reader_check()
            self.db = self.env.open_db(b"payload")
            self.meta = self.env.open_db(b"meta")
        except lmdb.Error as exc:
            raise self._as_oserror(exc) from None
        with self.env.begin() as txn:
            done = txn.stat(self.db)["entries"]
            cursor = txn.cursor(self.db)
            last = cursor.key() if cursor.last() else None
        if done and last != key_of(done - 1):
            # Appends commit whole batches in order, so anything else is damage: start over.
            self.abort()
            shutil.rmtree(self.path)
            return self.begin()
        self.txn = self.env.begin(write=True, db=self.db)
        return done

    def put_many(self, indices, payloads, labels) -> None:
        import lmdb

        try:
            for i, p in zip(indices, payloads):
                if not self.txn.put(key_of(i), p, append=True):
                    raise RuntimeError(f"lmdb refused key {i}")
                self.pending += len(p)
                self.pending_samples += 1
            if self.pending >= TXN_BYTES or self.pending_samples >= TXN_SAMPLES:
                self.txn.commit()
                self.txn = self.env.begin(write=True, db=self.db)
                self.pending = self.pending_samples = 0
        except lmdb.Error as exc:
            raise self._as_oserror(exc) from None

    def end(self, labels: np.ndarray) -> None:
        import lmdb

        try:
            self.txn.put(b"labels", labels.astype("<u2").tobytes(), db=self.meta)
            self.txn.put(b"spec", json.dumps(self.spec.to_dict()).encode(), db=self.meta)
            self.txn.commit()
            self.env.sync(True)
        except lmdb.Error as exc:
            raise self._as_oserror(exc) from None
        self.env.close()
        final = self.root / DIRNAME
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.path, final)

    def abort(self) -> None:
        try:
            self.txn.abort()
        except Exception:
            pass
        try:
            self.env.close()
        except Exception:
            pass

    def _as_oserror(self, exc) -> OSError:
        """lmdb.Error as the OSError the driver reports. LMDB turns a write cut short by a full
        disk into EIO, so a nearly full disk is taken as the cause; its ENOMEM (a map the address
        space cannot hold: `ulimit -v`) stays ENOMEM, which the driver names as such."""
        import lmdb

        code = getattr(exc, "errno", None) or (errno.ENOMEM if isinstance(exc, lmdb.MemoryError) else errno.EIO)
        if code == errno.EIO and shutil.disk_usage(self.root).free < max(self.pending, 1 << 20):
            code = errno.ENOSPC
        return OSError(code, f"{os.strerror(code)} ({exc})", str(self.path))

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        return spec.count * (entry_bytes(spec, codec) + 2) + (1 << 20)

    @classmethod
    def snapshot(cls, root) -> dict[str, bytes]:
        """Every key and value of both sub-databases (LMDB's page layout depends on its history)."""
        import lmdb

        out = {}
        env = lmdb.open(os.fsencode(Path(root) / DIRNAME), readonly=True, lock=False, max_dbs=2, subdir=True)
        try:
            for name in (b"payload", b"meta"):
                db = env.open_db(name, create=False)
                with env.begin(db=db) as txn:
                    out.update({f"{name.decode()}/{k.hex()}": bytes(v) for k, v in txn.cursor()})
        finally:
            env.close()
        return out

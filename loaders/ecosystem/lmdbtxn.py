"""lmdb: py-lmdb, as its docs and the common PyTorch recipe advise: a map-style Dataset that opens
the environment lazily in each DataLoader worker (an environment must not be used across a fork),
`readonly=True, lock=False` (no writer to coordinate with), `readahead=False` and `meminit=False`
(random reads), and keeps it open (persistent workers); each sample is one `txn.get(key)` in a
read transaction (key = the index as 8-byte big-endian in the `payload` sub-database;
generator/layouts/lmdb.py), decoded by our codec. The labels (one value of the `meta` sub-database)
are read once per worker."""

from __future__ import annotations

import os

import lmdb
import numpy as np

from .common import LazyDataset, Source


class LMDBDataset(LazyDataset):
    handles = ("env",)

    def __init__(self, path: str, n: int, decode):
        super().__init__(n, decode)
        self.path = path

    def _open(self):
        env = lmdb.open(self.path, readonly=True, lock=False, readahead=False, meminit=False, max_dbs=2, subdir=True)
        self.db = env.open_db(b"payload", create=False)
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=False) as txn:
            self.labels = np.frombuffer(txn.get(b"labels", db=meta), "<u2")
        self.env = env

    def __getitem__(self, i: int):
        if self.env is None:
            self._open()
        with self.env.begin(write=False, db=self.db) as txn:
            value = txn.get(i.to_bytes(8, "big"))
        if value is None:
            from generator.errors import SampleError

            raise SampleError("lmdb", i, self.path, "no such key")
        return self.decode(value, i), int(self.labels[i]), i


class LMDBSource(Source):
    library = "py-lmdb"
    modules = ("lmdb",)

    def dataset(self, rank: int):
        path = os.fspath(self.root / "lmdb")
        return LMDBDataset(path, self.n, self.decoder(path))

    def versions(self) -> dict:
        return {**super().versions(), "liblmdb": ".".join(map(str, lmdb.version()))}

    def extra_settings(self) -> dict:
        return {"dataset": "map-style: lmdb.open(readonly=True, lock=False, readahead=False, meminit=False) per "
                           "worker, txn.get per sample"}

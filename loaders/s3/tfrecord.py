"""`tfrecord` over S3: TFRecord shards as objects, read through their index (shard-K.tfindex, one
GET per shard per process, checked as loaders/tfrecord.py checks it), then one ranged GET per
sample of its whole record (length, its crc32c, the Example, its crc32c). Each record is checked
as the local reader checks it: the length field against the index, and the Example's bytes
before the payload against what our writer puts there (anything else parsed in full, its
image/index and label checked); verify=True parses every record in full and checks both
crc32c's. Records lie back to back, so a batch's samples that are neighbours in a shard (a
sequential order) are fetched by one GET (S3Reader.fetch_ranges); the GETs are in flight
together."""

from __future__ import annotations

import struct
import threading

import numpy as np

from generator.errors import CorpusError, SampleError
from generator.layouts.records import shard_name
from generator.layouts.tfrecord import FOOTER, HEADER, MAX_INDEX_LINE, mask, sample_fields

from ..tfrecord import TFRecordReader
from .base import S3Reader


class S3TFRecordReader(S3Reader):
    layout = "tfrecord"
    supports_streaming = True
    handles = ("_pool", "_index", "_index_lock")

    _prefix = TFRecordReader._prefix
    _parse_index = TFRecordReader._parse_index

    def __init__(self, store, manifest, *, verify: bool = False):
        super().__init__(store, manifest, verify=verify)
        per = manifest.layouts[self.layout].get("samples_per_shard")
        if type(per) is not int or not 1 <= per <= self.spec.count:
            raise CorpusError(f"{self.url}/manifest.json: the tfrecord layout's samples_per_shard is {per!r}, not an "
                              f"integer in [1, {self.spec.count}]; upload the corpus again")
        self.per_shard = per
        self.nshards = -(-self.spec.count // per)
        self._prefixes = {}

    def _open(self, index: int) -> None:
        super()._open(index)
        self._index = {}  # shard -> [(record offset, record length)]
        self._index_lock = threading.Lock()

    def shards(self) -> np.ndarray:
        return np.minimum(np.arange(self.nshards + 1, dtype=np.int64) * self.per_shard, self.spec.count)

    def shard_name(self, k: int) -> str:
        return f"{self.prefix}/{shard_name(k, 'tfrecord')}"

    def index_name(self, k: int) -> str:
        return f"{self.prefix}/{shard_name(k, 'tfindex')}"

    def where(self, index: int) -> str:
        k = index // self.per_shard
        return f"{self.object_url(self.shard_name(k))} record {index - k * self.per_shard}"

    def expected_objects(self):
        return {self.shard_name(k) for k in range(self.nshards)} | {self.index_name(k) for k in range(self.nshards)}

    def fail_at(self, i: int, problem: str, where: str | None = None):
        raise SampleError(self.layout, i, where or self.where(i), problem)

    # -- the shard indexes
    def _entries(self, k: int, i: int) -> list:
        got = self._index.get(k)
        if got is None:
            with self._index_lock:  # threads of one process read an index once
                got = self._index.get(k)
                if got is None:
                    first, count = k * self.per_shard, min(self.per_shard, self.spec.count - k * self.per_shard)
                    name = self.index_name(k)
                    raw = self.fetch(i, name)
                    if len(raw) > 64 + count * MAX_INDEX_LINE:
                        self.fail_at(i, f"damaged index: {len(raw):,} bytes, more than {count} entries can take",
                                     self.object_url(name))
                    got = self._index[k] = self._parse_index(raw, first, count, None, self.object_url(name), i)
        return got

    def _record(self, i: int) -> tuple[str, int, int]:
        k = i // self.per_shard
        o, n = self._entries(k, i)[i - k * self.per_shard]
        return self.shard_name(k), o, n

    # -- reading
    def _payload(self, i: int, rec) -> memoryview:
        """Sample i's payload inside its record's bytes `rec`, after the local reader's checks."""
        n = len(rec)
        (length,) = struct.unpack_from("<Q", rec, 0)
        if length != n - HEADER - FOOTER:
            self.fail_at(i, f"damaged: the record's length field says {length:,} bytes, the index "
                            f"{n - HEADER - FOOTER:,}")
        if self.verify:
            from generator.layouts.tfrecord import crc32c

            for what, got, want in (("length", mask(crc32c(rec[:8])), struct.unpack_from("<I", rec, 8)[0]),
                                    ("record", mask(crc32c(rec[HEADER:n - FOOTER])),
                                     struct.unpack_from("<I", rec, n - FOOTER)[0])):
                if got != want:
                    self.fail_at(i, f"corrupt: the {what}'s crc32c is {got:08x} (masked), the record says {want:08x}")
        else:
            prefix, total = self._prefix(i)
            if n == total and rec[HEADER:HEADER + len(prefix)] == prefix:
                a = HEADER + len(prefix)
                return rec[a:a + self._sizes[i]]
        try:
            (a, b), label, index = sample_fields(rec, HEADER, n - FOOTER)
        except LookupError as exc:
            self.fail_at(i, f"missing: {exc}")
        except ValueError as exc:
            self.fail_at(i, f"damaged record: {exc}")
        if index != i:
            self.fail_at(i, f"damaged: the record holds image/index {index}")
        if label != self._label_arr[i]:
            self.fail_at(i, f"damaged: the record's label is {label}, the manifest's {self._label_arr[i]}")
        return rec[a:b]

    def _read_one(self, i: int):
        return self._read_many([i])[0]

    def _read_many(self, idx: list[int]) -> list:
        recs = [self._record(i) for i in idx]
        got = self.fetch_ranges([(i, name, o, n) for i, (name, o, n) in zip(idx, recs)])
        return [self._payload(i, memoryview(rec)) for i, rec in zip(idx, got)]

    def s3_ranges(self, indices):
        out = []
        for i in indices:
            name, o, n = self._record(i)
            prefix, total = self._prefix(i)
            out.append((name, o + HEADER + len(prefix), self._sizes[i]) if n == total else (name, o, n))
        return out

    def check_integrity(self, indices) -> list[tuple[int, str, str]]:
        """(index, where, problem) for each sample whose record fails its crc32c's or structure."""
        found, saved = [], self.verify
        self.verify = True
        try:
            self._ensure_open(int(indices[0]))
            for a in range(0, len(indices), 256):
                for i in indices[a:a + 256]:
                    try:
                        self._read_many([int(i)])
                    except SampleError as exc:
                        found.append((exc.index, exc.where, exc.problem))
        finally:
            self.verify = saved
        return found

    def stored_labels(self) -> np.ndarray:
        self._ensure_open(0)
        out = np.empty(self.spec.count, np.int64)
        for k in range(self.nshards):
            first = k * self.per_shard
            recs = self.fetch_ranges([(first + j, self.shard_name(k), o, n)
                                      for j, (o, n) in enumerate(self._entries(k, first))])
            for j, rec in enumerate(recs):
                try:
                    out[first + j] = sample_fields(rec, HEADER, len(rec) - FOOTER)[1]
                except (LookupError, ValueError) as exc:
                    self.fail_at(first + j, f"damaged record: {exc}")
        return out

"""`npy` over S3: npy/data.bin (npy/images.npy for raw payloads) read with one ranged GET per
sample, at the offsets of offsets.npy (fetched once per process, its header and length checked as
loaders/npy.py checks them; for images.npy, its header: samples at fixed strides). spec.json is
checked against the manifest once per process too. A batch's samples that lie back to back in
the object (a sequential order) are fetched by one GET (S3Reader.fetch_ranges)."""

from __future__ import annotations

import threading

import numpy as np

from generator.errors import CorpusError, SampleError
from generator.layouts.npy import DATA, IMAGES, LABELS, OFFSETS, SPEC
from generator.manifest import stored_spec

from ..npy import _MAX_META, NpyReader
from .base import S3Reader


class S3NpyReader(S3Reader):
    layout = "npy"
    stores_spec = True
    handles = ("_pool", "_table", "_table_lock")

    _header_end = NpyReader._header_end  # parses bytes as well as a file

    def data_name(self) -> str:
        return f"{self.prefix}/{IMAGES if self.spec.payload == 'raw' else DATA}"

    def where(self, index: int) -> str:
        if self.spec.payload == "raw":
            return f"{self.object_url(self.data_name())}[{index}]"
        return f"{self.object_url(self.data_name())} (sample {index}, offsets.npy[{index}:{index + 2}])"

    def expected_objects(self):
        names = [self.data_name(), f"{self.prefix}/{SPEC}", f"{self.prefix}/{LABELS}"]
        if self.spec.payload != "raw":
            names.append(f"{self.prefix}/{OFFSETS}")
        return set(names)

    def _open(self, index: int) -> None:
        super()._open(index)
        self._table = None  # (starts, problems): each sample's offset in the data object, or why it has none
        self._table_lock = threading.Lock()

    def _starts(self, i: int) -> list:
        if self._table is None:
            with self._table_lock:
                if self._table is None:
                    self._table = self._locate(i)
        return self._table

    def _locate(self, i: int) -> list:
        raw = self.fetch(i, f"{self.prefix}/{SPEC}")
        if len(raw) > _MAX_META or not stored_spec(raw, self.object_url(f"{self.prefix}/{SPEC}")).same_corpus(self.spec):
            raise CorpusError(f"{self.target} holds a corpus of another spec than {self.url}/manifest.json; upload "
                              f"the corpus again")
        count = self.spec.count
        if self.spec.payload == "raw":
            name = self.data_name()
            size = self.store.head(name)
            head = self.fetch(i, name, 0, min(_MAX_META, size))
            start = self._header_end(head, self.object_url(name), i, (count, *self.spec.shape), self.spec.np_dtype)
            return (start + np.arange(count, dtype=np.int64) * self.spec.pixel_bytes).tolist()
        name = f"{self.prefix}/{OFFSETS}"
        raw = self.fetch(i, name)
        want = count + 1
        start = self._header_end(raw, self.object_url(name), i, (want,), np.dtype("<u8"))
        body = raw[start:]
        if len(body) != 8 * want:
            problem = "truncated" if len(body) < 8 * want else "too long"
            raise SampleError(self.layout, i, self.object_url(name), f"{problem}: {len(body)} bytes of offsets where "
                                                                     f"{want} offsets take {8 * want}")
        offsets = np.frombuffer(body, "<u8")
        starts, ends = offsets[:-1], offsets[1:]
        bad = (ends < starts) | (ends > offsets[-1]) | (ends - starts != np.asarray(self._sizes, np.uint64))
        big = np.uint64(np.iinfo(np.int64).max)
        out = np.minimum(starts, big).astype(np.int64)
        out[bad] = -1
        return out.tolist()

    def _start(self, i: int) -> int:
        a = self._starts(i)[i]
        if a < 0:
            raise SampleError(self.layout, i, self.where(i), "missing: offsets.npy places it outside the data, or "
                                                             "gives it another size than the manifest's")
        return a

    def _read_one(self, i: int) -> bytes:
        return self.fetch(i, self.data_name(), self._start(i), self._sizes[i])

    def _read_many(self, idx: list[int]) -> list:
        name = self.data_name()
        return self.fetch_ranges([(i, name, self._start(i), self._sizes[i]) for i in idx])

    def s3_ranges(self, indices):
        return [(self.data_name(), self._start(i), self._sizes[i]) for i in indices]

    def stored_labels(self) -> np.ndarray:
        name = f"{self.prefix}/{LABELS}"
        raw = self.fetch(-1, name)
        start = self._header_end(raw, self.object_url(name), -1, (self.spec.count,), np.dtype("<u2"))
        if len(raw) - start != 2 * self.spec.count:
            raise CorpusError(f"{self.object_url(name)}: the labels are of the wrong length; upload the corpus again")
        return np.frombuffer(raw, "<u2", offset=start).astype(np.int64)

"""`tar` over S3: WebDataset shards as objects, read through their offset index (shard-K.idx, one
GET per shard per process, checked as the local reader checks it), then one ranged GET per
sample: its 512-byte member header and payload together, the header checked (member name, ustar
magic, size; with verify=True its checksum too) as loaders/tar.py checks it. A batch's GETs are
in flight together. stored_labels() reads each `.cls` member with a ranged GET."""

from __future__ import annotations

import threading

import numpy as np

from generator.errors import CorpusError, SampleError
from generator.layouts.records import shard_name
from generator.layouts.tar import BLOCK, key_of, member_ext

from ..tar import member_problem, parse_index
from .base import S3Reader


class S3TarReader(S3Reader):
    layout = "tar"
    supports_streaming = True
    handles = ("_pool", "_index", "_index_lock")

    def __init__(self, store, manifest, *, verify: bool = False):
        super().__init__(store, manifest, verify=verify)
        facts = manifest.layouts[self.layout]
        per = facts.get("samples_per_shard")
        if type(per) is not int or not 1 <= per <= self.spec.count:
            raise CorpusError(f"{self.url}/manifest.json: the tar layout's samples_per_shard is {per!r}, not an "
                              f"integer in [1, {self.spec.count}]; upload the corpus again")
        self.per_shard = per
        self.nshards = -(-self.spec.count // per)
        self._ext = None if manifest.formats is not None else member_ext(self.spec, manifest.version)

    def _open(self, index: int) -> None:
        super()._open(index)
        self._index = {}  # shard -> its (count, 4) entries: payload offset, size, label offset, size
        self._index_lock = threading.Lock()

    def shards(self) -> np.ndarray:
        return np.minimum(np.arange(self.nshards + 1, dtype=np.int64) * self.per_shard, self.spec.count)

    def shard_name(self, k: int) -> str:
        return f"{self.prefix}/{shard_name(k, 'tar')}"

    def index_name(self, k: int) -> str:
        return f"{self.prefix}/{shard_name(k, 'idx')}"

    def member(self, index: int) -> str:
        ext = self._ext or member_ext(self.spec, self.manifest.version, self.manifest.formats[index])
        return f"{key_of(self.spec, index)}.{ext}"

    def where(self, index: int) -> str:
        return f"{self.object_url(self.shard_name(index // self.per_shard))} member {self.member(index)}"

    def expected_objects(self):
        return ({self.shard_name(k) for k in range(self.nshards)} | {self.index_name(k) for k in range(self.nshards)}
                | {f"{self.prefix}/shards.json"})

    # -- the shard indexes
    def _entries(self, k: int, i: int) -> list:
        got = self._index.get(k)
        if got is not None:
            return got
        with self._index_lock:  # threads of one process read an index once
            got = self._index.get(k)
            if got is None:
                got = self._index[k] = self._read_index(k, i)
        return got

    def _read_index(self, k: int, i: int) -> list:
        first, count = k * self.per_shard, min(self.per_shard, self.spec.count - k * self.per_shard)
        name = self.index_name(k)
        raw = self.fetch(i, name)

        entries = parse_index(raw, first, count)
        if isinstance(entries, str):
            raise SampleError(self.layout, i, self.object_url(name), f"damaged index: {entries}")
        return entries

    def _range(self, i: int) -> tuple[str, int, int, int]:
        """(shard object, the member header's offset, payload offset, payload size) of sample i."""
        k = i // self.per_shard
        a, n, _, _ = self._entries(k, i)[i - k * self.per_shard]
        if a < BLOCK or a % BLOCK:
            raise SampleError(self.layout, i, self.where(i), f"damaged index: payload offset {a} is not just after "
                                                             f"a tar header")
        if n != self._sizes[i]:
            self.fail_size(i, n)
        return self.shard_name(k), a - BLOCK, a, n

    # -- reading
    def _read_one(self, i: int):
        name, h, a, n = self._range(i)
        data = self.fetch(i, name, h, BLOCK + n)
        problem = member_problem(data[:BLOCK], self.member(i), h, n, self.verify)
        if problem is not None:
            raise SampleError(self.layout, i, self.where(i), problem)
        return memoryview(data)[BLOCK:]

    def _read_many(self, idx: list[int]) -> list:
        return self.in_flight(self._read_one, idx)

    def s3_ranges(self, indices):
        out = []
        for i in indices:
            name, _, a, n = self._range(i)
            out.append((name, a, n))
        return out

    def stored_labels(self) -> np.ndarray:
        self._ensure_open(0)

        def label(i):
            k = i // self.per_shard
            _, _, c, m = self._entries(k, i)[i - k * self.per_shard]
            raw = self.fetch(i, self.shard_name(k), c, m) if 0 < m <= 6 else b""
            if not raw.isdigit():
                raise SampleError(self.layout, i, self.where(i), f"damaged: the .cls member holds {raw[:8]!r}, "
                                                                 f"not a decimal label")
            return int(raw)

        return np.asarray(self.in_flight(label, list(range(self.spec.count))), np.int64)

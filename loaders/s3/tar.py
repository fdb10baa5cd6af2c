"""`tar` over S3: WebDataset shards as objects, read two ways.

- Ranged (any order): each shard's offset index (shard-K.idx, one GET per shard per process,
  checked as the local reader checks it), then one ranged GET per sample: its 512-byte member
  header and payload together, the header checked (member name, ustar magic, size; with
  verify=True its checksum too) as loaders/tar.py checks it. A batch's samples that lie next to
  each other in a shard (only their `.cls` member and padding between) are fetched by one GET;
  the GETs are in flight together.
- Streamed (the `shards` order, as WebDataset's users read: shards in a shuffled order, each
  front to back, through a shuffle buffer; Loader turns it on through read_as_stream): one GET
  per shard, its members parsed as the bytes arrive (loaders.s3.tarstream), no index read. A
  batch waits only for the bytes of its own samples; a shard's bytes are dropped once each of
  its samples has been handed out (a shard read again later is fetched again). Thread workers
  share one reader, so one GET per shard per epoch; process workers each stream the shards
  their batches touch.

stored_labels() reads each `.cls` member with a ranged GET."""

from __future__ import annotations

import threading

import numpy as np

from generator.errors import CorpusError, SampleError
from generator.layouts.records import shard_name
from generator.layouts.tar import BLOCK, key_of, member_ext

from ..tar import member_problem, parse_index
from .base import S3Reader
from .tarstream import ShardStreams


class S3TarReader(S3Reader):
    layout = "tar"
    supports_streaming = True
    handles = ("_pool", "_index", "_index_lock", "_streams")
    merge_gap = 3 * BLOCK - 1  # a payload's padding, then the .cls member's header and block
    streaming = False  # read_as_stream(True): whole-shard GETs (the module docstring)

    def read_as_stream(self, on: bool) -> None:
        """Whole-shard streaming GETs (True: the `shards` order) or a ranged GET per sample."""
        if bool(on) != self.streaming:
            self.close()
            self.streaming = bool(on)

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
        self._streams = ShardStreams(self) if self.streaming else None

    def _close(self) -> None:
        if self._streams is not None:
            self._streams.close()
        super()._close()

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
        if self._streams is not None:
            return self._streams.read([i])[0]
        name, h, a, n = self._range(i)
        data = self.fetch(i, name, h, BLOCK + n)
        problem = member_problem(data[:BLOCK], self.member(i), h, n, self.verify)
        if problem is not None:
            raise SampleError(self.layout, i, self.where(i), problem)
        return memoryview(data)[BLOCK:]

    def _read_many(self, idx: list[int]) -> list:
        if self._streams is not None:
            return self._streams.read(idx)
        ranges = [self._range(i) for i in idx]
        got = self.fetch_ranges([(i, name, h, BLOCK + n) for i, (name, h, _, n) in zip(idx, ranges)])
        out = []
        for i, (_, h, _, n), data in zip(idx, ranges, got):
            problem = member_problem(data[:BLOCK], self.member(i), h, n, self.verify)
            if problem is not None:
                raise SampleError(self.layout, i, self.where(i), problem)
            out.append(data[BLOCK:])
        return out

    def stream_gets(self) -> list[tuple[int, str, None, int]]:
        """(first sample, shard object, None, its size) of every shard: the GETs an epoch in the
        `shards` order makes, one whole shard each (what its floor fetches raw)."""
        first = self.shards()
        return [(int(first[k]), self.shard_name(k), None, self.store.head(self.shard_name(k)))
                for k in range(self.nshards)]

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

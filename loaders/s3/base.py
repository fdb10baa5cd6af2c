"""What the S3 readers share: a Reader over objects of one Store instead of files (no local path),
a batch's requests in flight together on a pool of threads per process, a batch's ranges of one
object merged into one GET where they are adjacent (fetch_ranges), a read-only file over one
object for the libraries that parse a file's metadata themselves (S3File: pyarrow, h5py), and
store failures as one line naming the object's URL and the sample."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from generator.codec import Codec
from generator.errors import CorpusError, SampleError

from ..base import Reader

INFLIGHT = 64  # requests in flight at most per process (a batch's samples, every thread worker's batches)


class S3Reader(Reader):
    """One layout of a corpus under an S3 prefix. `store` is a generator.objectstore Store (its
    requests are counted: store.stats()); pickled, it opens its own client in the new process."""

    handles = ("_pool",)
    reads_through_map = False
    storage = "s3"
    # ranges of one object in one batch at most this many bytes apart are fetched by one GET (0:
    # only ranges that touch: the samples lie back to back in the object)
    merge_gap = 0

    def __init__(self, store, manifest, *, verify: bool = False):  # noqa: super().__init__ takes a local root
        self.store = store
        self.url = str(store.url)
        self.root = self.url
        self.manifest = manifest
        self.spec = manifest.spec
        self.verify = verify
        self.codec = Codec(self.spec)
        self.prefix = manifest.layouts[self.layout]["path"]
        self.target = store.url.of(self.prefix)
        self._sizes = list(manifest.sizes)
        self._crc = list(manifest.crc32)
        self._size_arr = np.asarray(manifest.sizes, np.int64)
        self._label_arr = np.asarray(manifest.labels, np.int64)
        self.variable = manifest.shapes is not None
        self._shapes = manifest.shapes
        self._dtypes = manifest.dtypes
        if self.codec.fixed_size and (self._size_arr != self.codec.fixed_size).any():
            raise CorpusError(f"{self.url}/manifest.json lists payload sizes other than the {self.codec.fixed_size} "
                              f"bytes every uncompressed payload of this spec has; upload the corpus again")
        self._init_process_state()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target} ({self.spec.count} samples{', verify' if self.verify else ''})>"

    def object_url(self, name: str) -> str:
        return self.store.url.of(name)

    def paths(self) -> list:
        return []  # no local file: the storage (bench.run.s3storage) knows where the server keeps its bytes

    # -- per process
    def _open(self, index: int) -> None:
        self._pool = ThreadPoolExecutor(INFLIGHT, thread_name_prefix="s3-get")

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # -- requests
    def fetch(self, i: int, name: str, start: int | None = None, length: int | None = None) -> bytes:
        """Object `name` (whole, or `length` bytes from `start`) for sample i; a missing object is
        the sample's SampleError, any other failure the store's one line with the sample named."""
        from generator.objectstore.store import StoreError

        try:
            if start is None:
                return self.store.get(name)
            return self.store.get_range(name, start, length)
        except StoreError as exc:
            raise self.named(exc, i, name) from None

    def named(self, exc, i: int, name: str) -> Exception:
        """The store's failure `exc` reading object `name` for sample i, as the one line to raise:
        a missing or truncated object is the sample's SampleError; anything else the store's line
        with the sample named."""
        from generator.objectstore.store import BucketMissing, ObjectMissing, StoreError

        if isinstance(exc, BucketMissing):
            return type(exc)(f"{exc} (reading {self.layout} sample {i})")
        if isinstance(exc, ObjectMissing):
            return SampleError(self.layout, i, self.object_url(name),
                               f"missing (no such object at {self.store.config.where})")
        if "truncated object" in str(exc):
            return SampleError(self.layout, i, self.object_url(name),
                               "truncated: " + str(exc).split("truncated object: ", 1)[1])
        return StoreError(f"{exc} (reading {self.layout} sample {i})")

    def in_flight(self, fn, items: list) -> list:
        """[fn(item) for item in items], the requests in flight together on this process's pool."""
        if len(items) <= 1:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def fetch_ranges(self, items: list) -> list:
        """The bytes of each (sample, object name, start, length) of `items`, in that order: the
        ranges of one object sorted by start, those at most `merge_gap` bytes apart (or
        overlapping) fetched by one GET, the GETs in flight together (in_flight). Each item's
        bytes are a memoryview of its GET's body. A failing GET names its first sample."""
        runs = self.merged_runs(items)
        out: list = [None] * len(items)
        bodies = self.in_flight(lambda r: memoryview(self.fetch(r[0], r[1], r[2], r[3] - r[2])), runs)
        for r, body in zip(runs, bodies):
            for k, off, n in r[4]:
                out[k] = body[off:off + n]
        return out

    staged = False  # True: read from a local copy staged before the run (loaders.s3.staged)

    def merged_runs(self, items: list) -> list:
        """The GETs fetch_ranges makes for `items` ((sample, object name, start, length) each):
        [first sample, name, start, end, [(item's position, offset in the run, length)]] per GET."""
        order = sorted(range(len(items)), key=lambda k: (items[k][1], items[k][2]))
        runs = []
        for k in order:
            i, name, a, n = items[k]
            last = runs[-1] if runs else None
            if last is not None and last[1] == name and a - last[3] <= self.merge_gap:
                last[3] = max(last[3], a + n)
                last[4].append((k, a - last[2], n))
            else:
                runs.append([i, name, a, a + n, [(k, 0, n)]])
        return runs

    def s3_ranges(self, indices) -> list[tuple[str, int, int]]:
        """(object name, start, length) of each sample's payload bytes (start None: the whole object):
        what the floor fetches raw."""
        raise NotImplementedError

    def unexpected_entries(self) -> list[str]:
        """Objects under the layout's prefix that are not this layout's (verify lists them)."""
        expected = self.expected_objects()
        if expected is None:
            return []
        there = self.store.list(self.prefix)
        return sorted(self.object_url(n) for n in there if n not in expected)

    def expected_objects(self) -> set[str] | None:
        return None


class S3File(io.RawIOBase):
    """Object `name` of `reader`'s store as a read-only, seekable binary file of `size` bytes, for
    libraries that parse a file's metadata themselves (pyarrow.PythonFile, h5py's file-object
    driver). Each read is served from blocks of `block` bytes fetched by ranged GETs through
    reader.fetch (counted, retried, failures named for sample `index`) and kept, least recently
    used dropped past `blocks` of them; a read longer than `direct` bytes is one ranged GET of
    exactly its bytes, unless preload() put them here already (a batch's ranges fetched in
    flight together beforehand). Not for concurrent use from several threads."""

    def __init__(self, reader, name: str, size: int, index: int = -1, block: int = 64 << 10, blocks: int = 64,
                 direct: int = 256 << 10):
        super().__init__()
        self.reader, self.name, self.size, self.index = reader, name, size, index
        self.block, self.blocks, self.direct = block, blocks, direct
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._preloaded: dict[int, memoryview] = {}  # start -> bytes fetched beforehand
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def preload(self, start: int, data) -> None:
        """Bytes [start, start + len(data)) of the object, fetched by the caller: the next read of
        exactly that range is served from them (and then forgets them)."""
        self._preloaded[start] = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        with self._lock:
            a = self._pos
            end = self.size if n is None or n < 0 else min(self.size, a + n)
            if end <= a:
                return b""
            data = self._read(a, end)
            self._pos = end
            return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        memoryview(b).cast("B")[:len(data)] = data
        return len(data)

    def _read(self, a: int, end: int):
        pre = self._preloaded.get(a)
        if pre is not None and len(pre) >= end - a:
            del self._preloaded[a]
            return pre[:end - a]
        if end - a > self.direct:
            return self.reader.fetch(self.index, self.name, a, end - a)
        parts = []
        for blk in range(a // self.block, (end - 1) // self.block + 1):
            got = self._cache.get(blk)
            if got is None:
                lo = blk * self.block
                got = self.reader.fetch(self.index, self.name, lo, min(self.block, self.size - lo))
                self._cache[blk] = got
                while len(self._cache) > self.blocks:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(blk)
            lo = blk * self.block
            parts.append(memoryview(got)[max(a, lo) - lo:min(end, lo + len(got)) - lo])
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

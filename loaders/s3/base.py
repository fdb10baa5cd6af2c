"""What the S3 readers share: a Reader over objects of one Store instead of files (no local path),
a batch's requests in flight together on a pool of threads per process, and store failures as
one line naming the object's URL and the sample."""

from __future__ import annotations

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
        from generator.objectstore.store import BucketMissing, ObjectMissing, StoreError

        try:
            if start is None:
                return self.store.get(name)
            return self.store.get_range(name, start, length)
        except BucketMissing as exc:
            raise type(exc)(f"{exc} (reading {self.layout} sample {i})") from None
        except ObjectMissing:
            raise SampleError(self.layout, i, self.object_url(name),
                              f"missing (no such object at {self.store.config.where})") from None
        except StoreError as exc:
            if "truncated object" in str(exc):
                raise SampleError(self.layout, i, self.object_url(name), "truncated: " +
                                  str(exc).split("truncated object: ", 1)[1]) from None
            raise StoreError(f"{exc} (reading {self.layout} sample {i})") from None

    def in_flight(self, fn, items: list) -> list:
        """[fn(item) for item in items], the requests in flight together on this process's pool."""
        if len(items) <= 1:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

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

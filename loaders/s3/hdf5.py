"""`hdf5` over S3: corpus.h5 opened once per process with h5py through a file over the object
(loaders.s3.base.S3File: h5py's file-object driver, its metadata reads served by ranged GETs of
64 KiB blocks), only to find where each sample's bytes lie, as the local reader finds them
(loaders/hdf5.py: the contiguous `payload` dataset's offset plus `offsets`, or the chunk
addresses of an unfiltered `images` dataset); then h5py is closed and each sample is one ranged
GET of its bytes, a batch's GETs in flight together, samples that lie back to back (a sequential
order) fetched by one GET. Datasets whose bytes are not at known offsets (chunked or filtered:
compressed corpora) are read through h5py over the same file, one thread at a time."""

from __future__ import annotations

import threading

import numpy as np

from generator.errors import LayoutbenchError, SampleError

from ..hdf5 import _H5_ERRORS, HDF5Reader, _with_chunk_cache
from .base import S3File, S3Reader


class S3HDF5Reader(S3Reader):
    layout = "hdf5"
    stores_spec = True
    handles = ("_pool", "_file", "_dset", "_s3file", "_starts", "_ok", "_table", "_file_size", "_fallback_offsets",
               "_h5_lock")

    _check_spec = HDF5Reader._check_spec
    _check_local = HDF5Reader._check_local
    _payload_table = HDF5Reader._payload_table
    _images_table = HDF5Reader._images_table
    _fail_table = HDF5Reader._fail_table
    _check_batch = HDF5Reader._check_batch
    _read_fallback = HDF5Reader._read_fallback

    def data_name(self) -> str:
        return self.prefix  # the layout's path is the file's name (corpus.h5)

    def _chunked_table(self, dset, starts, ends, inside):
        """A chunked payload (the generator's JPEG and PNG corpora) is read through h5py here: the
        local reader's in-place table may put a sample in pieces, which ranged GETs of one span
        per sample cannot read."""
        return None

    def where(self, index: int) -> str:
        what = f"/images[{index}]" if self.spec.payload == "raw" else f"/payload (sample {index})"
        return f"{self.object_url(self.data_name())}:{what}"

    def expected_objects(self):
        return {self.data_name()}

    def _h5(self, index: int):
        """(h5py.File over the object, its S3File)."""
        import h5py

        from generator.objectstore.store import StoreError

        try:
            size = self.store.head(self.data_name())
        except StoreError as exc:
            raise self.named(exc, index, self.data_name()) from None
        s3file = S3File(self, self.data_name(), size, index)
        try:
            return h5py.File(s3file, "r"), s3file
        except LayoutbenchError:
            raise
        except _H5_ERRORS as exc:
            raise SampleError(self.layout, index, self.object_url(self.data_name()),
                              f"cannot open the HDF5 file: {' '.join(str(exc).split())[:200]}") from None

    def _open(self, index: int) -> None:
        super()._open(index)
        self._h5_lock = threading.Lock()
        f, self._s3file = self._h5(index)
        self._file_size = self._s3file.size
        try:
            self._check_spec(f)
            name = "images" if self.spec.payload == "raw" else "payload"
            if name not in f:
                raise SampleError(self.layout, index, self.where(index), f"missing: the file has no /{name} dataset")
            self._check_local(f, (name, "offsets"))
            table = self._images_table(f[name]) if name == "images" else self._payload_table(f, f[name])
            if table is None:
                self._file, self._dset = f, _with_chunk_cache(f, name)
                return
            f.close()
        except LayoutbenchError:
            f.close()
            raise
        except _H5_ERRORS as exc:
            f.close()
            raise SampleError(self.layout, index, self.object_url(self.data_name()),
                              f"damaged HDF5 file: {exc}") from None
        starts, lens, inside = table
        self._table = table
        self._ok = inside & (starts + lens <= self._file_size) & (lens == self._size_arr)
        self._starts = starts.tolist()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        super()._close()

    def _read_one(self, i: int):
        return self._read_many([i])[0]

    def _read_many(self, idx: list[int]) -> list:
        if self._file is not None:  # chunked or filtered: through h5py, one thread at a time
            with self._h5_lock:
                return [self._read_fallback(i) for i in idx]
        self._check_batch(idx)
        name, starts, sizes = self.data_name(), self._starts, self._sizes
        return self.fetch_ranges([(i, name, starts[i], sizes[i]) for i in idx])

    def s3_ranges(self, indices):
        if self._file is not None:
            return [(self.data_name(), None, self._file_size) for _ in indices]
        return [(self.data_name(), self._starts[i], self._sizes[i]) for i in indices]

    def stored_labels(self) -> np.ndarray:
        f, _ = self._h5(-1)
        try:
            self._check_local(f, ("labels",))
            return f["labels"][()].astype(np.int64)
        except _H5_ERRORS as exc:
            if isinstance(exc, LayoutbenchError):
                raise
            raise SampleError(self.layout, -1, f"{self.object_url(self.data_name())}:/labels",
                              f"unreadable: {exc}") from None
        finally:
            f.close()

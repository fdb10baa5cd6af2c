"""hdf5: h5py, as its docs and the PyTorch recipe for HDF5 advise: a map-style Dataset that opens
corpus.h5 lazily in each DataLoader worker (an h5py handle must not cross a fork) and keeps it
open (persistent workers), reading one sample per __getitem__ by slicing a dataset:
`payload[offsets[i]:offsets[i + 1]]` decoded by our codec (generator/layouts/hdf5.py lays the
payloads back to back), or `images[i]` for raw pixels (one chunk per image; nothing to decode).
The small `offsets` and `labels` datasets are read into memory once per worker."""

from __future__ import annotations

import h5py

from .common import LazyDataset, Source


class H5Dataset(LazyDataset):
    handles = ("file", "data")

    def __init__(self, path: str, n: int, decode):
        super().__init__(n, decode)
        self.path = path

    def _open(self):
        f = h5py.File(self.path, "r")
        self.labels = f["labels"][:]
        if self.decode is None:
            self.data = f["images"]
        else:
            self.data, self.offsets = f["payload"], f["offsets"][:]
        self.file = f

    def __getitem__(self, i: int):
        if self.file is None:
            self._open()
        if self.decode is None:
            return self.data[i], int(self.labels[i]), i
        return self.decode(self.data[self.offsets[i]:self.offsets[i + 1]], i), int(self.labels[i]), i

    def close(self) -> None:
        self.data = None
        super().close()


class H5Source(Source):
    library = "h5py"
    modules = ("h5py",)

    def __init__(self, reader, batch_size: int = 32, **kw):
        super().__init__(reader, batch_size, **kw)
        self.raw_pixels = self.manifest.spec.payload == "raw"
        self.path = str(self.root / "corpus.h5")

    def dataset(self, rank: int):
        return H5Dataset(self.path, self.n, None if self.raw_pixels else self.decoder(self.path))

    def extra_settings(self) -> dict:
        how = "images[i]" if self.raw_pixels else "payload[offsets[i]:offsets[i+1]]"
        return {"dataset": f"map-style: h5py.File(corpus.h5) opened per worker, {how} per sample",
                "hdf5": h5py.version.hdf5_version}

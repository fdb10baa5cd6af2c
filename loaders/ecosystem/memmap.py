"""npy: numpy's memory maps, as numpy's docs give them: `np.load(path, mmap_mode="r")` for the
.npy files (images.npy for raw pixels, offsets.npy, labels.npy) and `np.memmap(path, uint8, "r")`
for data.bin, the payloads back to back (DLIO's indexed_binary; generator/layouts/npy.py), opened
lazily in each DataLoader worker; a sample is a slice of the map (`images[i]`: the stored pixels,
nothing to decode; `data[offsets[i]:offsets[i + 1]]`: decoded by our codec)."""

from __future__ import annotations

import numpy as np

from .common import LazyDataset, Source


class MemmapDataset(LazyDataset):
    handles = ("data",)

    def __init__(self, top: str, n: int, decode):
        super().__init__(n, decode)
        self.top = top

    def _open(self):
        self.labels = np.load(f"{self.top}/labels.npy", mmap_mode="r")
        if self.decode is None:
            self.data = np.load(f"{self.top}/images.npy", mmap_mode="r")
        else:
            self.offsets = np.load(f"{self.top}/offsets.npy", mmap_mode="r")
            self.data = np.memmap(f"{self.top}/data.bin", np.uint8, "r")

    def __getitem__(self, i: int):
        if self.data is None:
            self._open()
        if self.decode is None:
            return self.data[i], int(self.labels[i]), i
        return self.decode(self.data[self.offsets[i]:self.offsets[i + 1]], i), int(self.labels[i]), i

    def close(self) -> None:  # numpy's maps close when the last view of them goes
        self.data = self.labels = self.offsets = None


class MemmapSource(Source):
    library = "numpy memmap"
    modules = ("numpy",)

    def __init__(self, reader, batch_size: int = 32, **kw):
        super().__init__(reader, batch_size, **kw)
        self.raw_pixels = self.manifest.spec.payload == "raw"

    def dataset(self, rank: int):
        top = str(self.root / "npy")
        return MemmapDataset(top, self.n, None if self.raw_pixels else self.decoder(f"{top}/data.bin"))

    def extra_settings(self) -> dict:
        how = ("np.load(images.npy, mmap_mode='r')[i]" if self.raw_pixels else
               "np.memmap(data.bin)[offsets[i]:offsets[i+1]] (offsets.npy by np.load(mmap_mode='r'))")
        return {"dataset": f"map-style: {how} per sample, maps opened per worker"}

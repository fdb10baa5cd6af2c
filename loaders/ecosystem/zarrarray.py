"""zarr: zarr-python (>= 3), as its docs index an array: `zarr.open_group(path, mode="r")` in each
DataLoader worker (lazily, kept: persistent workers) and `images[i]` per sample, the stored pixels
(generator/layouts/zarr.py keeps an uncompressed TIFF corpus's images as pixels, one inner chunk
per image, and raw payloads the same way: nothing to decode); a compressed corpus's `payload[i]`
(variable-length bytes) is decoded by our codec. `labels` is read once per worker."""

from __future__ import annotations

import numpy as np
import zarr

from generator.layouts.zarr import quiet as quiet_vlen

from .common import LazyDataset, Source


class ZarrDataset(LazyDataset):
    handles = ("array",)

    def __init__(self, path: str, n: int, name: str, decode):
        super().__init__(n, decode)
        self.path, self.name = path, name

    def __getitem__(self, i: int):
        if self.array is None:
            with quiet_vlen():
                group = zarr.open_group(self.path, mode="r")
                self.labels = np.asarray(group["labels"][:])
                self.array = group[self.name]
        if self.decode is None:
            return self.array[i], int(self.labels[i]), i
        with quiet_vlen():
            payload = self.array[i]
        while isinstance(payload, np.ndarray):  # zarr-python gives a bytes element as nested 0-d object arrays
            payload = payload.item()
        return self.decode(payload, i), int(self.labels[i]), i


class ZarrSource(Source):
    library = "zarr-python"
    modules = ("zarr",)

    def __init__(self, reader, batch_size: int = 32, **kw):
        super().__init__(reader, batch_size, **kw)
        self.raw_pixels = bool(reader.codec.fixed_size)
        self.name = "images" if self.raw_pixels else "payload"

    def dataset(self, rank: int):
        path = str(self.root / "corpus.zarr")
        return ZarrDataset(path, self.n, self.name, None if self.raw_pixels else self.decoder(f"{path}/{self.name}"))

    def extra_settings(self) -> dict:
        return {"dataset": f"map-style: zarr.open_group(corpus.zarr, mode='r') per worker, {self.name}[i] per sample"}

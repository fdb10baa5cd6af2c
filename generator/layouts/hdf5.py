"""`hdf5`: one file, corpus.h5.

- TIFF payloads: `payload` is a 1-D uint8 dataset holding every sample's payload back to back,
  with `offsets` (count+1, uint64) marking where each starts; sample i is
  payload[offsets[i]:offsets[i+1]]. Contiguous when payloads have a fixed size, so a reader can
  pread (or mmap) it directly; chunked and extendable when they are compressed. (Not an HDF5
  variable-length dataset: that goes through HDF5's global heap, several times slower to write
  and read; docs/lab/ has the figures.)
- raw payloads: `images`, count x H x W x C, one chunk per image.
- `labels`: uint16 per sample. The spec is in the root attribute `layoutbench_spec` (JSON).

HDF5 files are not crash-safe mid-write, so the file is built as .corpus.h5.partial and renamed
when complete; an interrupted build restarts this layout from the first sample.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import LayoutWriter, payload_estimate

FILENAME = "corpus.h5"
PARTIAL = ".corpus.h5.partial"


class HDF5Writer(LayoutWriter):
    supports_variable_raw = False  # raw pixels are one dense (N, H, W, C) array
    name = "hdf5"
    target = FILENAME

    def paths(self):
        return [self.root / FILENAME, self.root / PARTIAL]

    def begin(self) -> int:
        import h5py

        spec = self.spec
        self.path = self.root / PARTIAL
        self.file = h5py.File(self.path, "w", libver="latest")
        self.file.attrs["layoutbench_spec"] = json.dumps(spec.to_dict())
        self.file.attrs["layoutbench_format"] = 1
        self.images = self.payload = None
        if spec.payload == "raw":
            self.images = self.file.create_dataset(
                "images", (spec.count, *spec.shape), dtype=spec.np_dtype, chunks=(1, *spec.shape))
        elif self.codec.fixed_size:
            size = self.codec.fixed_size
            self.payload = self.file.create_dataset("payload", (spec.count * size,), dtype=np.uint8)
            self.offsets = np.arange(spec.count + 1, dtype=np.uint64) * size
        else:
            self.payload = self.file.create_dataset(
                "payload", (0,), maxshape=(None,), dtype=np.uint8, chunks=(1 << 20,))
            self.offsets = np.zeros(spec.count + 1, np.uint64)
        self.end_byte = 0
        return 0

    def put_many(self, indices, payloads, labels) -> None:
        if self.images is not None:
            for i, p in zip(indices, payloads):
                self.images.id.write_direct_chunk((i, 0, 0, 0), p)
            return
        # Indices arrive contiguous and in order: one write per batch, not one per sample.
        data = np.frombuffer(payloads[0] if len(payloads) == 1 else b"".join(payloads), np.uint8)
        start, stop = self.end_byte, self.end_byte + data.size
        if not self.codec.fixed_size:
            self.payload.resize((stop,))
            ends = start + np.cumsum([len(p) for p in payloads], dtype=np.uint64)
            self.offsets[indices.start + 1: indices.stop + 1] = ends
        self.payload.write_direct(data, dest_sel=np.s_[start:stop])
        self.end_byte = stop

    def end(self, labels: np.ndarray) -> None:
        self.file.create_dataset("labels", data=labels.astype(np.uint16))
        if self.payload is not None:
            self.file.create_dataset("offsets", data=self.offsets)
        self.file.close()
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.path, self.root / FILENAME)

    def abort(self) -> None:
        try:
            self.file.close()
        except Exception:
            pass

    @classmethod
    def snapshot(cls, root) -> dict[str, bytes]:
        """Every dataset's bytes and the root attributes (HDF5 library versions may lay a file out
        differently for the same contents)."""
        import h5py

        out = {}
        with h5py.File(Path(root) / FILENAME, "r") as f:
            for name, obj in f.items():
                out[f"dataset/{name}"] = obj.dtype.str.encode() + str(obj.shape).encode() + obj[()].tobytes()
            for name, value in f.attrs.items():
                out[f"attr/{name}"] = str(value).encode()
        return out

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        return spec.count * (payload_estimate(spec, codec) + 2 + 8) + (1 << 20)

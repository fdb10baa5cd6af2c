"""`npy` reader: npy/ (see generator.layouts.npy for the format).

The data file (images.npy or data.bin) is read through a read-only memory map (loaders/mapped.py).
The .npy headers are parsed with numpy.lib.format's header readers and checked against the
spec (dtype, shape, C order) before any array is made, so a hostile header claiming a huge
shape never allocates it: offsets.npy must be exactly count+1 little-endian uint64 and its
file exactly that long; images.npy must be (count, H, W, C) of the spec's dtype. Offsets that are
out of range, backwards or of another length than the manifest's are the sample's named error.
"""

from __future__ import annotations

import numpy as np

from generator.errors import CorpusError, SampleError, os_reason
from generator.layouts.npy import DATA, IMAGES, LABELS, OFFSETS, SPEC
from generator.manifest import stored_spec

from .mapped import MappedReader, Table

_MAX_META = 1 << 16  # spec.json and .npy headers are small (numpy refuses headers over 10,000 bytes)


class NpyReader(MappedReader):
    layout = "npy"
    stores_spec = True

    def data_path(self):
        return self.target / (IMAGES if self.spec.payload == "raw" else DATA)

    def paths(self):
        return [self.data_path()] + ([] if self.spec.payload == "raw" else [self.target / OFFSETS])

    def where(self, index: int) -> str:
        if self.spec.payload == "raw":
            return f"{self.data_path()}[{index}]"
        return f"{self.data_path()} (sample {index}, offsets.npy[{index}:{index + 2}])"

    # -- the index -------------------------------------------------------------------------------

    def _locate(self, index: int) -> Table:
        self._check_spec()
        count = self.spec.count
        table = Table(count)
        if self.spec.payload == "raw":
            start = self._header_end(self._view, self.data_path(), index, (count, *self.spec.shape),
                                     self.spec.np_dtype)
            size = self.spec.pixel_bytes
            table.starts[:] = start + np.arange(count, dtype=np.int64) * size
            table.lens[:] = size
            table.present[:] = True
            return table
        offsets = self._offsets(index)
        starts, ends = offsets[:-1], offsets[1:]
        # offsets[-1] is where the data ends by the index: bytes placed beyond it are missing (the
        # index is wrong); bytes inside it but past the file's end are truncated (the file is short).
        outside = (ends < starts) | (ends > offsets[-1])
        big = np.uint64(np.iinfo(np.int64).max)
        table.present[:] = ~outside
        table.starts[:] = np.minimum(starts, big).astype(np.int64)
        table.lens[:] = np.where(outside, 0, np.minimum(ends - starts, big)).astype(np.int64)
        table.absent = (f"missing: offsets.npy places it outside the data (it ends before it starts, or after "
                        f"the data's end at byte {int(offsets[-1]):,})")
        return table

    def _offsets(self, index: int) -> np.ndarray:
        path = self.target / OFFSETS
        self.check_inside(path)
        want = self.spec.count + 1
        try:
            with open(path, "rb") as f:
                start = self._header_end(f, path, index, (want,), np.dtype("<u8"))
                f.seek(start)
                raw = f.read(8 * want + 1)
        except FileNotFoundError:
            raise SampleError(self.layout, index, str(path), "missing (no such file)") from None
        except OSError as exc:
            raise SampleError(self.layout, index, str(path), f"unreadable: {os_reason(exc)}") from None
        if len(raw) != 8 * want:
            problem = "truncated" if len(raw) < 8 * want else "too long"
            raise SampleError(self.layout, index, str(path), f"{problem}: {len(raw)} bytes of offsets where "
                                                             f"{want} offsets take {8 * want}")
        return np.frombuffer(raw, "<u8")

    def _header_end(self, source, path, index: int, shape: tuple, dtype) -> int:
        """Check the .npy header at the start of `source` (a file or the mapped data) describes a
        C-ordered `shape` array of `dtype`; return where its data starts."""
        import io

        head = source.read(_MAX_META) if hasattr(source, "read") else bytes(source[:_MAX_META])
        f = io.BytesIO(head)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, SyntaxError, TypeError, EOFError, OverflowError) as exc:
            raise SampleError(self.layout, index, str(path), f"undecodable .npy header: {exc}") from None
        if tuple(got_shape) != tuple(shape) or got_dtype != np.dtype(dtype) or fortran:
            raise CorpusError(f"{path} holds a {'Fortran-ordered ' if fortran else ''}{tuple(got_shape)} {got_dtype} "
                              f"array where this corpus has {tuple(shape)} {np.dtype(dtype)}: it is not this "
                              f"corpus's; regenerate the corpus with --force")
        return f.tell()

    def _check_spec(self) -> None:
        path = self.target / SPEC
        self.check_inside(path)
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_META + 1)
        except OSError as exc:
            raise CorpusError(f"{path} cannot be read ({os_reason(exc)}); the npy layout is damaged: "
                              f"regenerate the corpus with --force") from None
        if len(raw) > _MAX_META:
            raise CorpusError(f"{path} is not a spec of ours (over {_MAX_META} bytes); regenerate with --force")
        if not stored_spec(raw, str(path)).same_corpus(self.spec):
            raise CorpusError(f"{self.target} holds a corpus of another spec than {self.root}/manifest.json; "
                              f"regenerate the corpus with --force")

    def stored_labels(self) -> np.ndarray:
        path = self.target / LABELS
        self.check_inside(path)
        try:
            with open(path, "rb") as f:
                start = self._header_end(f, path, -1, (self.spec.count,), np.dtype("<u2"))
                f.seek(start)
                raw = f.read(2 * self.spec.count + 1)
        except OSError as exc:
            raise SampleError(self.layout, -1, str(path), f"unreadable: {os_reason(exc)}") from None
        if len(raw) != 2 * self.spec.count:
            raise CorpusError(f"{path}: the labels are of the wrong length; regenerate with --force")
        return np.frombuffer(raw, "<u2").astype(np.int64)


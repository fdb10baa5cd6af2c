"""`npy`: one directory, npy/, of plain numpy files and one flat binary.

- raw payloads: `images.npy`, one count x H x W x C array in numpy's .npy format (the header
  numpy.lib.format writes, then the pixels of every image back to back, C order):
  `np.load("npy/images.npy", mmap_mode="r")` reads it.
- TIFF payloads: an indexed binary as DLIO's `indexed_binary`: `data.bin` holds the payloads
  back to back, `offsets.npy` (count+1, little-endian uint64) where each starts; sample i is
  data.bin[offsets[i]:offsets[i+1]]. Compressed (variable-size) payloads the same way.
- `labels.npy` (count, little-endian uint16) and `spec.json` (the spec, JSON) beside them.

Written in parallel (supports_parallel_write). Fixed-size payloads: every sample's place is known,
so begin() makes the data file at its full size and each part is written at its own offset
(one pwritev per part). Variable-size ones: each part goes to a file of its own (its sizes, then
its payloads; complete under its name or absent) and end() joins them, in index order, into
data.bin with copy_file_range (in the kernel; a reflink where the filesystem has them).

Atomic: the directory is built as npy.partial/ and renamed to npy/ once every file in it is
complete and fsynced. A kill leaves only npy.partial/, which the rerun removes: this layout
restarts from its first sample (the driver produces every part's payloads again anyway, so
keeping written parts would save only their writes).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from . import LayoutWriter, payload_estimate

DIRNAME = "npy"
PARTIAL = "npy.partial"
IMAGES = "images.npy"
DATA = "data.bin"
OFFSETS = "offsets.npy"
LABELS = "labels.npy"
SPEC = "spec.json"
PART_PREFIX = "part-"
_IOV_MAX = 1024  # buffers per pwritev (Linux's IOV_MAX)
_NO_COPY_RANGE = (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS)


def npy_header(shape: tuple, dtype) -> bytes:
    """The .npy format header numpy writes for a C-ordered array of `shape` and `dtype` (its
    length is a multiple of 64, so the data that follows is aligned)."""
    import io

    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_2_0(buf, header) if _needs_v2(header) else \
        np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def _needs_v2(header: dict) -> bool:
    return len(repr(header)) + 11 >= 65535  # version 1.0 headers are at most 65535 bytes


def write_npy(path: Path, array: np.ndarray) -> None:
    """A small .npy file, fsynced (labels, offsets)."""
    array = np.ascontiguousarray(array)
    _write_file(path, [npy_header(array.shape, array.dtype), memoryview(array).cast("B")])


def _write_file(path: Path, pieces) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        for piece in pieces:
            _write_all(fd, piece)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, payload) -> None:
    view = memoryview(payload).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _pwrite_all(fd: int, payloads: list, at: int) -> None:
    """Write `payloads` back to back from file offset `at` (pwritev, IOV_MAX buffers at a time)."""
    views = [memoryview(p).cast("B") for p in payloads]
    while views:
        batch = views[:_IOV_MAX]
        done = os.pwritev(fd, batch, at)
        at += done
        while done:  # drop what was written; a short write resumes inside a buffer
            if done >= len(views[0]):
                done -= len(views.pop(0))
            else:
                views[0] = views[0][done:]
                done = 0


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NpyWriter(LayoutWriter):
    supports_variable_raw = False  # raw pixels are one dense (N, H, W, C) array
    name = "npy"
    target = DIRNAME
    supports_parallel_write = True

    def paths(self):
        return [self.root / DIRNAME, self.root / PARTIAL]

    # -- where things go (plain data: the writer is pickled to workers and sent to MPI ranks) -------

    @property
    def _partial(self) -> Path:
        return self.root / PARTIAL

    @property
    def _fixed(self) -> bool:
        return self.codec.fixed_size is not None

    def _data_name(self) -> str:
        return IMAGES if self.spec.payload == "raw" else DATA

    def _data_start(self) -> int:
        """Where sample 0 starts in the data file (after the .npy header for raw payloads)."""
        if self.spec.payload != "raw":
            return 0
        return len(npy_header((self.spec.count, *self.spec.shape), self.spec.np_dtype))

    # -- the writer contract -------------------------------------------------------------------------

    def begin(self) -> int:
        partial = self._partial
        if partial.is_symlink() or partial.exists():  # left by a killed run: restart (module docstring)
            shutil.rmtree(partial) if partial.is_dir() and not partial.is_symlink() else partial.unlink()
        partial.mkdir()
        if self._fixed:
            fd = os.open(partial / self._data_name(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                if self.spec.payload == "raw":
                    _write_all(fd, npy_header((self.spec.count, *self.spec.shape), self.spec.np_dtype))
                os.ftruncate(fd, self._data_start() + self.spec.count * self.codec.fixed_size)
            finally:
                os.close(fd)
        return 0

    def write_part(self, indices: range, payloads: list, labels: list) -> None:
        if self._fixed:
            fd = os.open(self._partial / self._data_name(), os.O_WRONLY)
            try:
                _pwrite_all(fd, payloads, self._data_start() + indices.start * self.codec.fixed_size)
            finally:
                os.close(fd)
            return
        # Variable sizes: a part file of its own, complete under its name (written, then renamed).
        name = f"{PART_PREFIX}{indices.start:012d}-{indices.stop:012d}"
        tmp = self._partial / f".{name}.{os.getpid()}"
        sizes = np.array([len(p) for p in payloads], "<u8")
        _write_file(tmp, [np.array([len(payloads)], "<u8"), sizes, *payloads])
        os.rename(tmp, self._partial / name)

    def end(self, labels) -> None:
        partial = self._partial
        if not self._fixed:
            self._join_parts()
        else:
            _fsync(partial / self._data_name())
            if self.spec.payload != "raw":
                write_npy(partial / OFFSETS, np.arange(self.spec.count + 1, dtype="<u8") * self.codec.fixed_size)
        write_npy(partial / LABELS, np.asarray(labels).astype("<u2"))
        _write_file(partial / SPEC, [json.dumps(self.spec.to_dict()).encode()])
        _fsync(partial, os.O_RDONLY | os.O_DIRECTORY)
        final = self.root / DIRNAME
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        elif final.exists() or final.is_symlink():
            final.unlink()
        os.replace(partial, final)
        _fsync(self.root, os.O_RDONLY | os.O_DIRECTORY)

    def _join_parts(self) -> None:
        """Variable sizes: every part file, in index order, into data.bin; their sizes into offsets.npy."""
        partial = self._partial
        parts = sorted(p for p in partial.iterdir() if p.name.startswith(PART_PREFIX))
        offsets = np.zeros(self.spec.count + 1, "<u8")
        out = os.open(partial / DATA, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            at = expect = 0
            for part in parts:
                start, stop = (int(x) for x in part.name[len(PART_PREFIX):].split("-"))
                fd = os.open(part, os.O_RDONLY)
                try:
                    n = int(np.frombuffer(os.pread(fd, 8, 0), "<u8")[0])
                    if n != stop - start or start != expect:
                        raise OSError(f"the npy part file {part.name} does not hold samples {expect}..{stop - 1}")
                    sizes = np.frombuffer(os.pread(fd, 8 * n, 8), "<u8")
                    offsets[start + 1:stop + 1] = at + np.cumsum(sizes, dtype=np.uint64)
                    _copy_range(fd, 8 + 8 * n, out, at, int(sizes.sum()))
                    at, expect = int(offsets[stop]), stop
                finally:
                    os.close(fd)
                os.unlink(part)
            if expect != self.spec.count:
                raise OSError(f"the npy parts hold samples 0..{expect - 1} of {self.spec.count}")
            os.fsync(out)
        finally:
            os.close(out)
        write_npy(partial / OFFSETS, offsets)

    def abort(self) -> None:
        pass  # no handle is held between calls

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        return spec.count * (payload_estimate(spec, codec) + 2 + 8) + (64 << 10)  # + .npy headers, spec.json


def _copy_range(src: int, src_at: int, dst: int, dst_at: int, n: int) -> None:
    """n bytes from file src at src_at to file dst at dst_at, in the kernel where it can."""
    while n:
        try:
            done = os.copy_file_range(src, dst, n, src_at, dst_at)
        except OSError as exc:  # not supported between these files or filesystems: copy through user space
            if exc.errno not in _NO_COPY_RANGE:
                raise
            done = 0
        if not done:
            chunk = os.pread(src, min(n, 8 << 20), src_at)
            if not chunk:
                raise OSError(f"a part file ended {n} bytes early")
            _pwrite_all(dst, [chunk], dst_at)
            done = len(chunk)
        src_at, dst_at, n = src_at + done, dst_at + done, n - done

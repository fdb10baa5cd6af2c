"""The reader interface every layout implements, and what they share.

A reader reads one layout of one corpus. It is built from the manifest alone (cheap, picklable)
and opens its handles lazily, in the process that uses them: after a fork the child never
touches the parent's h5py or lmdb handles, it opens its own. Every read checks the payload's
size against the manifest (truncation); `verify=True` also checks its crc32 (bit flips).
Damage raises SampleError naming the layout, the index and the path or key, never a bare
library traceback and never a silent skip (a skipped sample would inflate throughput).

Two batch paths:
- read_many(indices) -> payloads (bytes-like, valid after the call): the stored bytes.
- read_batch(indices, out) -> decoded images in one (B, H, W, C) array; for a corpus whose
  samples have shapes of their own (`reader.variable`: a size distribution, an ingested folder)
  a list of B arrays instead, each (h_i, w_i, C) as the manifest records it (`reader.shape(i)`).
  There `out`, if given, is a flat (1-D) array of the spec's dtype of at least
  `reader.batch_elements(indices)` elements and the images are consecutive views into it (how
  process workers hand them through shared memory). Batch.images is then that list too; a
  training loop resizes or crops per sample, as torchvision's transforms do before collating. For payloads of a fixed
  size (uncompressed TIFF from our generator, raw) no TIFF parser runs: the header is compared
  with the corpus's one and the pixels are copied into `out`. Large samples are copied one by one
  straight from storage into `out` (one copy: copying is their cost). Small ones (<= 64 KiB) are
  joined into one buffer, then checked and copied with one numpy call per batch: there the
  per-sample Python work is the cost (bench/speed/loader.py measures both ways side by side).
  Anything else (compressed, foreign TIFF) goes through Codec.decode (tifffile).
"""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from generator.codec import Codec
from generator.errors import CorpusError, SampleError, UsageError, os_reason
from generator.manifest import Manifest

from .pagecache import advised_ahead

# Handles inherited over a fork are parked here rather than closed: closing an h5py handle in the
# child would call into a library whose state belongs to the parent. (LMDB is the exception the
# child must close; loaders/lmdb.py does that, and says why it is safe.)
_INHERITED: list = []

SMALL_BYTES = 64 << 10  # fixed-size payloads up to this size are assembled a batch at a time


class Reader:
    """One layout of one corpus. Capabilities, checked by generic code instead of layout names:

    - supports_random_access: read(i) of any index costs about one sample's I/O;
    - reads_through_map: samples come out of a memory map (no read() per sample; rchar stays low);
    - stores_spec: the layout keeps its own copy of the spec, checked against the manifest;
    - supports_streaming: the layout is a stream of shards (shards() gives their boundaries) that
      the `shards` sampler mode reads as its own loaders do (shard order, then a shuffle buffer).
    - fork_safe: its library works in a child forked after the parent used it. False (pylance,
      whose forked children crash): process workers of a fork are spawned instead (process_kind).
    A reader may also offer a naive baseline, what plain library calls give (`naive`, a one-line
    description, and `naive_batch`), which the bench measures beside it.
    """

    layout: ClassVar[str]
    handles: ClassVar[tuple[str, ...]] = ()  # attributes holding per-process handles
    supports_random_access: ClassVar[bool] = True
    reads_through_map: ClassVar[bool] = False
    stores_spec: ClassVar[bool] = False
    supports_streaming: ClassVar[bool] = False
    fork_safe: ClassVar[bool] = True
    naive: ClassVar[str | None] = None  # e.g. "tifffile.imread per file"
    extents_cover: ClassVar[str] = "payload"  # what extents() ranges hold: "payload" or "chunk"
    # why extents() returns None (always, or in the cases it names); None when it never does
    no_extents: ClassVar[str | None] = None
    # what the layout's own design makes it read for one sample beyond the payload's own 4 KiB pages
    # (the report names it beside the capped runs' read amplification); None: nothing more
    read_unit: ClassVar[str | None] = None
    small_bytes: int = SMALL_BYTES  # fixed-size payloads up to this are assembled a batch at a time
    _naive = None  # what naive_batch opened (never pickled; close_naive closes it)

    def __init__(self, root: str | os.PathLike, manifest: Manifest, *, verify: bool = False):
        self.root = Path(root)
        self.manifest = manifest
        self.spec = manifest.spec
        self.verify = verify
        self.codec = Codec(self.spec)
        self.target = self.root / manifest.layouts[self.layout]["path"]
        self.check_inside(self.target)
        self._sizes = list(manifest.sizes)  # lists: the fastest per-sample scalar lookups
        self._crc = list(manifest.crc32)
        self._size_arr = np.asarray(manifest.sizes, np.int64)
        self._label_arr = np.asarray(manifest.labels, np.int64)
        self.variable = manifest.shapes is not None
        self._shapes = manifest.shapes
        self._dtypes = manifest.dtypes  # an ingested corpus's per-sample dtypes (else None: the spec's)
        if self.codec.fixed_size and (self._size_arr != self.codec.fixed_size).any():
            raise CorpusError(f"{self.root}/manifest.json lists payload sizes other than the {self.codec.fixed_size} "
                              f"bytes every uncompressed payload of this spec has; regenerate the corpus with --force")
        self._init_process_state()

    def check_inside(self, path: Path) -> None:
        """Refuse a path of the layout that resolves outside the corpus root (a symlink pointing
        out): a corpus is read from its own directory only. The root itself may be a symlink."""
        real, root = Path(os.path.realpath(path)), Path(os.path.realpath(self.root))
        if real != root and root not in real.parents:
            raise CorpusError(f"{path} resolves to {real}, outside the corpus directory {self.root}: layoutbench "
                              f"reads a corpus only from inside its directory; copy the data in, or point at "
                              f"the directory that holds it")
        if real.exists() and not (real.is_file() or real.is_dir()):  # a FIFO would block the open, a device...
            raise CorpusError(f"{path} is not a regular file or directory; the corpus is damaged or not ours: "
                              f"regenerate it with --force")

    # -- per-process state: handles, and the pid that opened them ---------------------------

    def _init_process_state(self) -> None:
        self._pid = None
        self._lock = threading.Lock()
        for name in self.handles:
            setattr(self, name, None)

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in (*self.handles, "_pid", "_lock", "_naive"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_process_state()

    def _ensure_open(self, index: int) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:  # threads of one process open once
            if self._pid == os.getpid():
                return
            if self._pid is not None:  # forked: park the parent's handles
                _INHERITED.append([getattr(self, n) for n in self.handles])
                for name in self.handles:
                    setattr(self, name, None)
            self._open(index)
            self._pid = os.getpid()

    def process_kind(self, kind: str) -> str:
        """The start method its process workers get when `kind` is asked: "spawn" for "fork" when
        the reader is not fork_safe, else `kind`."""
        return "spawn" if kind == "fork" and not self.fork_safe else kind

    def close(self) -> None:
        """Close every handle this process opened (needed before evicting the page cache)."""
        with self._lock:
            if self._pid == os.getpid():
                self._close()
            elif self._pid is not None:
                _INHERITED.append([getattr(self, n) for n in self.handles])
            for name in self.handles:
                setattr(self, name, None)
            self._pid = None

    def _open(self, index: int) -> None:
        """Open this process's handles; failures raise SampleError for `index`."""

    def _close(self) -> None:
        """Close the handles opened by this process."""

    # -- the interface -----------------------------------------------------------------------

    def __len__(self) -> int:
        return self.spec.count

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target} ({self.spec.count} samples{', verify' if self.verify else ''})>"

    def where(self, index: int) -> str:
        """Where sample `index` lives: a path, or a path and key/offset."""
        return str(self.target)

    def paths(self) -> list[Path]:
        """Every file this layout reads (for eviction and residency checks)."""
        return [self.target]

    def shards(self) -> np.ndarray:
        """Shard boundaries of a streaming reader: n_shards + 1 increasing indices from 0 to len;
        shard k holds samples [b[k], b[k+1]) in stream order."""
        raise UsageError(f"the {self.layout} layout is not a stream of shards (supports_streaming is False)")

    def read_as_stream(self, on: bool) -> None:
        """Read whole shards as streams (on: the `shards` order, set by Loader) where this reader can
        and that is how the layout's users read it (tar over S3: loaders.s3.tar); else nothing."""

    def check_integrity(self, indices) -> list[tuple[int, str, str]]:
        """(index, where, problem) for samples whose container fails its own checks beyond the
        payload's (TFRecord crc32c, tar header checksums); verify calls it. Default: none."""
        return []

    def extents(self, indices) -> list[list[tuple[str, int, int]]] | None:
        """Where the stored bytes of each of `indices` lie, for page-cache probes (the capped
        regime's hit ratio, bench/probe/hits.py): one list per index, in order, of (file, offset,
        length) ranges, found from the layout's own index or metadata without touching the
        samples' pages (a probe made after a read would see them resident).

        What the ranges cover is the class's `extents_cover`:
        - "payload": exactly the sample's stored payload bytes: os.pread of its ranges, joined,
          equals read(i);
        - "chunk": the whole stored unit the layout must read to give the sample (a zarr inner
          chunk, a Parquet column chunk); it holds the sample's stored bytes. Its docstring says
          what the unit is.
        None when the layout cannot say without reading the samples: `no_extents` says why."""
        return None

    def read(self, index: int):
        """The stored payload of sample `index` (bytes-like)."""
        i = self.check_index(index)
        self._ensure_open(i)
        payload = self._read_one(i)
        self.check_payload(i, payload)
        return payload

    def read_many(self, indices) -> list:
        """Payloads of `indices`, in that order, by this layout's fastest batch path."""
        idx = self.check_indices(indices)
        if not len(idx):
            return []
        self._ensure_open(int(idx[0]))
        idx = idx.tolist()
        payloads = self._read_many(idx)
        self.check_payloads(idx, payloads)
        return payloads

    def shape(self, index: int) -> tuple[int, int, int]:
        """(H, W, C) of sample `index` as the manifest records it (the spec's shape when fixed)."""
        return tuple(self._shapes[index]) if self._shapes is not None else self.spec.shape

    def dtype(self, index: int) -> np.dtype:
        """The dtype of sample `index`'s pixels (an ingested corpus's may differ per sample)."""
        return self.spec.np_dtype if self._dtypes is None else np.dtype(self._dtypes[index]).newbyteorder("<")

    def batch_elements(self, indices) -> int:
        """Elements of the spec's dtype a flat `out` for `indices` needs (see batch_list)."""
        if self._shapes is None:
            return len(indices) * int(np.prod(self.spec.shape))
        return -(-self._layout_bytes(np.asarray(indices).tolist())[1] // self.spec.np_dtype.itemsize)

    def _layout_bytes(self, idx: list[int]) -> tuple[list[int], int]:
        """Byte offsets of each sample's pixels in a flat batch (aligned to its dtype), and the total."""
        starts, at = [], 0
        for i in idx:
            h, w, c = self._shapes[i]
            item = self.dtype(i).itemsize
            at = -(-at // item) * item
            starts.append(at)
            at += h * w * c * item
        return starts, at

    def read_batch(self, indices, out: np.ndarray | None = None) -> tuple[np.ndarray | list, int]:
        """Decoded images of `indices` in one (B, H, W, C) array (a list of (h_i, w_i, C) arrays when
        `variable`; see the module docstring), and the payload bytes read."""
        idx = self.check_indices(indices)
        if self.variable:
            images = self.batch_list(idx, out)
            if len(idx):
                self._ensure_open(int(idx[0]))
                for k, (i, p) in enumerate(zip(idx.tolist(), self.read_many(idx))):
                    images[k][...] = self.decode(p, i)
            return images, int(self._size_arr[idx].sum())
        out = self.batch_array(len(idx), out)
        if not len(idx):
            return out, 0
        self._ensure_open(int(idx[0]))
        if self.codec.fixed_size:
            self._read_into(idx.tolist(), out)
        else:
            for k, (i, p) in enumerate(zip(idx.tolist(), self.read_many(idx))):
                out[k] = self.decode(p, i)
        return out, int(self._size_arr[idx].sum())

    def decode(self, payload, index: int | None = None) -> np.ndarray:
        """(H, W, C) pixels of a payload (a view into it on the fast path)."""
        try:
            if self.variable:
                if index is None:
                    return self.codec.decode(payload)
                return self.codec.decode(payload, self.shape(index), self.dtype(index))
            return self.codec.decode(payload)
        except ValueError as exc:
            raise SampleError(self.layout, -1 if index is None else index,
                              "payload" if index is None else self.where(index), f"undecodable: {exc}") from None

    def label(self, index: int) -> int:
        return int(self._label_arr[self.check_index(index)])

    def labels(self, indices) -> np.ndarray:
        return self._label_arr[self.check_indices(indices)]

    def stored_labels(self) -> np.ndarray:
        """The labels as the layout itself stores them (verify compares them with the reference)."""
        return self._label_arr.copy()

    def unexpected_entries(self) -> list[str]:
        """Paths inside the layout that are not samples of this corpus (verify lists them). A layout
        that stores its own spec is checked through it; one that does not (loose files) shows a
        manifest edited down this way."""
        return []

    def naive_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(images, the indices in the order read, payload bytes) by plain library calls, in the
        calling process: the baseline a user without this project would write (see `naive`)."""
        raise NotImplementedError(f"the {self.layout} layout has no naive baseline")

    def close_naive(self) -> None:
        """Release what naive_batch opened."""

    # -- checks --------------------------------------------------------------------------------

    def check_index(self, index) -> int:
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise TypeError(f"sample index must be an integer, got {index!r}") from None
        if i != index or not 0 <= i < self.spec.count:
            raise IndexError(f"{self.layout}: sample index {index!r} out of range 0..{self.spec.count - 1}")
        return i

    def check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"indices must be a 1-D sequence of integers, got shape {idx.shape} {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= self.spec.count):
            bad = idx[(idx < 0) | (idx >= self.spec.count)][0]
            raise IndexError(f"{self.layout}: sample index {bad} out of range 0..{self.spec.count - 1}")
        return idx

    def check_payload(self, i: int, payload) -> None:
        if len(payload) != self._sizes[i]:
            self.fail_size(i, len(payload))
        if self.verify and zlib.crc32(payload) != self._crc[i]:
            self.fail_crc(i, zlib.crc32(payload))

    def check_payloads(self, idx: list[int], payloads: list) -> None:
        """check_payload for a batch, with the per-sample Python work kept to C-level loops."""
        sizes, fixed = self._sizes, self.codec.fixed_size
        lens = list(map(len, payloads))
        if lens.count(fixed) != len(lens) if fixed else lens != [sizes[i] for i in idx]:
            for i, n in zip(idx, lens):
                if n != sizes[i]:
                    self.fail_size(i, n)
        if self.verify:
            for i, p in zip(idx, payloads):
                if zlib.crc32(p) != self._crc[i]:
                    self.fail_crc(i, zlib.crc32(p))

    def fail_size(self, i: int, got: int):
        if got < self._sizes[i]:
            problem = f"truncated: {got} bytes where the manifest says {self._sizes[i]}"
        else:
            problem = f"too long: at least {got} bytes where the manifest says {self._sizes[i]}"
        raise SampleError(self.layout, i, self.where(i), problem)

    def fail_crc(self, i: int, got: int):
        raise SampleError(self.layout, i, self.where(i),
                          f"corrupt: crc32 {got:08x} where the manifest says {self._crc[i]:08x}")

    def batch_list(self, idx, out: np.ndarray | None) -> list[np.ndarray]:
        """Uninitialised (h_i, w_i, C) arrays for the samples `idx` of a variable-shape corpus:
        fresh ones, or consecutive views into the flat array `out` (see the module docstring)."""
        idx = np.asarray(idx).tolist()
        shapes = [self.shape(i) for i in idx]
        if out is None:
            return [np.empty(s, self.dtype(i)) for i, s in zip(idx, shapes)]
        dt = self.spec.np_dtype
        starts, need = self._layout_bytes(idx)
        if (out.ndim != 1 or out.dtype != dt or not out.flags.c_contiguous or not out.flags.writeable
                or out.nbytes < need):
            raise UsageError(f"out must be a writable flat {dt} array of at least {-(-need // dt.itemsize):,} elements "
                             f"for these samples of varying shape, got {out.shape} {out.dtype}")
        raw = out.view(np.uint8)
        return [raw[a:a + int(np.prod(s)) * self.dtype(i).itemsize].view(self.dtype(i)).reshape(s)
                for i, s, a in zip(idx, shapes, starts)]

    def batch_array(self, n: int, out: np.ndarray | None) -> np.ndarray:
        shape = (n, *self.spec.shape)
        if out is None:
            return np.empty(shape, self.spec.np_dtype)
        if (out.shape != shape or out.dtype != self.spec.np_dtype or not out.flags.c_contiguous
                or not out.flags.writeable):
            raise UsageError(f"out must be a writable C-contiguous {shape} {self.spec.np_dtype} array, "
                             f"got {out.shape} {out.dtype}")
        return out

    # -- the fixed-size fast paths -----------------------------------------------------------------

    def _assemble(self, idx: list[int], payloads: list, out: np.ndarray) -> None:
        """Small fixed-size payloads -> pixels in `out`: one join, then one vectorised header check
        and one copy for the whole batch (per-sample Python work, not copying, is the cost here)."""
        self.check_payloads(idx, payloads)
        header, b = self.codec.header, len(idx)
        h = len(header)
        rows = np.frombuffer(b"".join(payloads), np.uint8).reshape(b, self.codec.fixed_size)
        np.copyto(out.reshape(b, -1).view(np.uint8), rows[:, h:])
        if h and rows[:, :h].tobytes() != header * b:  # not our header: let tifffile judge those
            for k, i in enumerate(idx):
                if rows[k, :h].tobytes() != header:
                    out[k] = self.decode(rows[k].tobytes(), i)

    def _place(self, i: int, payload, flat: memoryview, k: int, out: np.ndarray) -> None:
        """One large fixed-size payload -> its pixels copied into row k of `out` (one copy)."""
        if len(payload) != self._sizes[i]:
            self.fail_size(i, len(payload))
        if self.verify and zlib.crc32(payload) != self._crc[i]:
            self.fail_crc(i, zlib.crc32(payload))
        h = len(self.codec.header)
        if h and payload[:h] != self.codec.header:  # not our header: let tifffile judge it
            out[k] = self.decode(bytes(payload), i)
            return
        n = self.spec.pixel_bytes
        flat[k * n:(k + 1) * n] = payload[h:] if isinstance(payload, memoryview) else memoryview(payload)[h:]

    def _check_read(self, i: int, head: bytearray, row: memoryview, got: int, k: int, out: np.ndarray) -> None:
        """A large fixed-size payload read straight into the batch (header into `head`, pixels into
        `row`, row k of `out`; `got` bytes in all): the checks _place makes, after the fact."""
        if got != self._sizes[i]:
            self.fail_size(i, got)
        if self.verify:
            crc = zlib.crc32(row, zlib.crc32(head))
            if crc != self._crc[i]:
                self.fail_crc(i, crc)
        if head != self.codec.header:  # not our header: let tifffile judge it
            out[k] = self.decode(bytes(head) + bytes(row), i)

    @property
    def small(self) -> bool:
        """Payloads small enough that batching the Python work beats copying each one once."""
        return self.codec.fixed_size is not None and self.codec.fixed_size <= self.small_bytes

    def _pread_advised(self, idx: list[int], spans) -> list[bytes]:
        """The payloads of `idx`, each read with one pread of its span (`spans`: (fd, offset, size)
        per sample, in `idx`'s order), the spans ahead of it advised WILLNEED (pagecache.advised_ahead).
        For data advised random access (larger than the memory the process may use: a capped run):
        the batch's misses are in flight at the device together and each is fetched in requests of
        its size, where copying out of a map advised random faults its pages in one 4 KiB read
        at a time, one after another. A span the file cannot give whole is the sample's error."""
        out = []
        for i, (fd, at, n) in zip(idx, advised_ahead(spans)):
            try:
                v = os.pread(fd, n, at)
            except OSError as exc:
                raise SampleError(self.layout, i, self.where(i), f"unreadable: {os_reason(exc)}") from None
            if len(v) != n:
                raise SampleError(self.layout, i, self.where(i), f"truncated: the file ends {n - len(v):,} bytes "
                                                                 f"before the sample's end")
            out.append(v)
        return out

    # -- what each layout provides -----------------------------------------------------------------

    def _read_one(self, i: int):
        raise NotImplementedError

    def _read_many(self, idx: list[int]) -> list:
        return [self._read_one(i) for i in idx]

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        """Fixed-size payloads: check each and put its pixels into `out` (default: via _read_many)."""
        payloads = self._read_many(idx)
        if self.small:
            return self._assemble(idx, payloads, out)
        flat = memoryview(out).cast("B")
        for k, (i, p) in enumerate(zip(idx, payloads)):
            self._place(i, p, flat, k, out)

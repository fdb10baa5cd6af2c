"""`zarr`: one zarr v3 group, corpus.zarr/, written through zarr-python (>= 3).

- fixed-size payloads (uncompressed TIFF, raw): array `images`, shape (N, H, W, C) of the
  spec's dtype, with the sharding codec: one inner chunk per image (1, H, W, C), shards of
  shard_samples(spec) images, no compression, little-endian bytes. An inner chunk is exactly
  the image's pixel bytes, so a TIFF payload is the corpus's fixed TIFF header (the same for
  every image of an uncompressed corpus; generator.codec) followed by that chunk: the header is
  not stored, it is put back on read, bit-exact to the manifest's size and crc32.
- variable-size payloads (compressed TIFF): array `payload`, shape (N,), zarr-python's
  variable-length bytes, sharded the same way (one inner chunk per payload, stored verbatim).
  That data type has no ratified zarr v3 specification yet (zarr-python warns so); pixels
  cannot hold these payloads bit-exact, so it is the way to keep one chunk per image.
- array `labels`: uint16, shape (N,), one chunk. Group attribute `layoutbench` =
  {"format": 1, "spec": {...}} (JSON, as zarr stores every attribute).

A shard file ends with its index: (offset, nbytes) as two little-endian uint64 per inner chunk,
then a crc32c of them (zarr's default index codecs); read_shard_index parses and checks it.

Resumable by whole shards: samples are buffered until a shard is full and written as one
zarr write (zarr-python's LocalStore writes each file under a temporary name and renames it).
The group is built in corpus.zarr.partial/; a rerun keeps the leading shards whose index is
whole and consistent and rewrites from the first one that is not (at most one shard of work is
lost); another spec, or another shard size, starts over. When complete the tree is fsynced and
renamed to corpus.zarr/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings

import numpy as np

from ..manifest import fsync_dir
from . import LayoutWriter, payload_estimate

DIRNAME = "corpus.zarr"
PARTIAL = "corpus.zarr.partial"
FORMAT = 1
SHARD_BYTES = 32 << 20  # about this many payload bytes per shard (the writer buffers one shard)
MAX_SHARD = 4096  # images per shard at most: zarr-python reads a shard's whole index per access
EMPTY = 2**64 - 1  # an index entry of an inner chunk that was never written
ENTRY = 16  # bytes of one index entry
CRC = 4  # the index's crc32c
VLEN_HEADER = 8  # a variable-length inner chunk: uint32 item count (1), uint32 length, the bytes


def shard_samples(spec, codec) -> int:
    """Images per shard: the largest power of two whose shard holds at most SHARD_BYTES of
    payload (at least 1, at most MAX_SHARD), and no more than the corpus has."""
    fit = max(1, min(MAX_SHARD, SHARD_BYTES // max(1, payload_estimate(spec, codec))))
    return min(1 << (fit.bit_length() - 1), spec.count)


def array_name(codec) -> str:
    return "images" if codec.fixed_size else "payload"


def shard_key(spec, codec, k: int) -> str:
    """Path of shard k inside the group (zarr's default chunk key encoding, separator '/')."""
    return f"{array_name(codec)}/c/{k}" + ("/0/0/0" if codec.fixed_size else "")


def chunk_bytes(spec, codec, size: int) -> int:
    """Bytes of the inner chunk holding a payload of `size` bytes."""
    return spec.pixel_bytes if codec.fixed_size else size + VLEN_HEADER


def index_bytes(per_shard: int) -> int:
    return per_shard * ENTRY + CRC


def read_shard_index(fd: int, per_shard: int, size: int):
    """(table, data_end) of a shard file open at `fd` of `size` bytes: table = per_shard x 2
    int64 (offset, nbytes; -1 where no chunk is stored), data_end = where the index starts.
    Raises ValueError saying what is wrong (too short for an index, a crc32c mismatch)."""
    import google_crc32c

    n = index_bytes(per_shard)
    if size < n:
        raise ValueError(f"the file has {size:,} bytes, less than its index's {n:,}")
    raw = os.pread(fd, n, size - n)
    if len(raw) != n:
        raise ValueError(f"the index could not be read whole ({len(raw)} of {n} bytes)")
    if google_crc32c.value(raw[:-CRC]) != int.from_bytes(raw[-CRC:], "little"):
        raise ValueError("its index fails its crc32c check (truncated or overwritten)")
    table = np.frombuffer(raw, "<u8", count=2 * per_shard).reshape(per_shard, 2)
    empty = (table == EMPTY).any(axis=1)
    out = np.where(empty[:, None], -1, np.minimum(table, 2**62)).astype(np.int64)
    return out, size - n


@contextlib.contextmanager
def quiet():
    """Silence zarr-python's warning that variable-length bytes have no v3 specification yet."""
    from zarr.errors import UnstableSpecificationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnstableSpecificationWarning)
        yield


class ZarrWriter(LayoutWriter):
    name = "zarr"
    target = DIRNAME

    def paths(self):
        return [self.root / DIRNAME, self.root / PARTIAL]

    def begin(self) -> int:
        import zarr
        from zarr.storage import LocalStore

        self.path = self.root / PARTIAL
        self.per_shard = shard_samples(self.spec, self.codec)
        done = self._resume_point() if self.path.is_dir() else None
        if done is None:
            if self.path.exists():
                shutil.rmtree(self.path)
            group = zarr.open_group(LocalStore(self.path), mode="w", zarr_format=3,
                                    attributes={"layoutbench": {"format": FORMAT, "spec": self.spec.to_dict()}})
            self._create_array(group)
            done = 0
        with quiet():
            self.group = zarr.open_group(LocalStore(self.path), mode="r+", zarr_format=3)
            self.array = self.group[array_name(self.codec)]
        self.buf_start, self.buf = done, []
        return done

    def _create_array(self, group) -> None:
        from zarr.dtype import VariableLengthBytes

        spec, s = self.spec, self.per_shard
        fixed = self.codec.fixed_size is not None
        shape = (spec.count, *spec.shape) if fixed else (spec.count,)
        chunk = (1, *spec.shape) if fixed else (1,)
        with quiet():
            group.create_array(array_name(self.codec), shape=shape, chunks=chunk, shards=(s, *chunk[1:]),
                               dtype=spec.np_dtype if fixed else VariableLengthBytes(), compressors=None,
                               filters=None, fill_value=0 if fixed else b"",
                               config={"write_empty_chunks": True})
        # even so, zarr's sharding codec stores no inner chunk equal to the fill value (an all-zero
        # image), nor a shard of them only: loaders/zarr.py reads those as zeros, as zarr does

    def _resume_point(self) -> int | None:
        """Samples in the leading whole shards of an earlier run of this spec, or None."""
        try:
            attrs = json.loads((self.path / "zarr.json").read_text()).get("attributes", {}).get("layoutbench")
            meta = json.loads((self.path / array_name(self.codec) / "zarr.json").read_text())
            from ..spec import Spec

            same = (attrs["format"] == FORMAT and Spec.from_dict(attrs["spec"]).same_corpus(self.spec)
                    and meta["chunk_grid"]["configuration"]["chunk_shape"][0] == self.per_shard)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not same:
            return None
        for stale in self.path.rglob("*.partial"):  # LocalStore's temporaries of a killed write
            stale.unlink()
        shards = -(-self.spec.count // self.per_shard)
        k = 0
        while k < shards and self._shard_whole(k):
            k += 1
        for later in range(k, shards):  # rewritten from scratch, whatever an earlier run left
            (self.path / shard_key(self.spec, self.codec, later)).unlink(missing_ok=True)
        return min(self.spec.count, k * self.per_shard)

    def _shard_whole(self, k: int) -> bool:
        try:
            fd = os.open(self.path / shard_key(self.spec, self.codec, k), os.O_RDONLY)
        except OSError:
            return False
        try:
            table, end = read_shard_index(fd, self.per_shard, os.fstat(fd).st_size)
        except (OSError, ValueError):
            return False
        finally:
            os.close(fd)
        n = min(self.per_shard, self.spec.count - k * self.per_shard)
        used = table[:n]
        stored = used[:, 0] >= 0  # zarr leaves a fill-value (all-zero) image's entry empty: whole all the same
        fill_ok = self.codec.fixed_size is not None  # a variable-length payload is never the fill value b""
        return bool((stored | fill_ok).all() and (used[stored].sum(axis=1) <= end).all())

    def put_many(self, indices, payloads, labels) -> None:
        h = len(self.codec.header)
        for i, p in zip(indices, payloads):
            if self.codec.fixed_size:
                if bytes(p[:h]) != self.codec.header:
                    raise ValueError(f"sample {i}: its payload does not start with the corpus's TIFF header")
                self.buf.append(np.frombuffer(p, np.uint8, offset=h).view(self.spec.np_dtype).reshape(self.spec.shape))
            else:
                self.buf.append(bytes(p))
            stop = self.buf_start + len(self.buf)
            if len(self.buf) == self.per_shard or stop == self.spec.count:
                self._flush()

    def _flush(self) -> None:
        a, b = self.buf_start, self.buf_start + len(self.buf)
        if self.codec.fixed_size:
            data = np.stack(self.buf)
        else:
            data = np.empty(len(self.buf), object)
            data[:] = self.buf
        with quiet():
            self.array[a:b] = data
        self.buf_start, self.buf = b, []

    def end(self, labels) -> None:
        if self.buf:
            self._flush()
        n = self.spec.count
        arr = self.group.create_array("labels", shape=(n,), chunks=(n,), dtype=np.uint16, compressors=None,
                                      filters=None, fill_value=0, overwrite=True)
        arr[:] = np.asarray(labels, np.uint16)
        for top, dirs, files in os.walk(self.path):
            for name in files:
                fd = os.open(os.path.join(top, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_dir(top)
        final = self.root / DIRNAME
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.path, final)
        fsync_dir(self.root)

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        per_shard = shard_samples(spec, codec)
        shards = -(-spec.count // per_shard)
        return (spec.count * (chunk_bytes(spec, codec, payload_estimate(spec, codec)) + 2)
                + shards * (index_bytes(per_shard) + 5 * 4096) + (128 << 10))  # + a shard's directories; metadata

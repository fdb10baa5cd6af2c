"""`zarr` reader: corpus.zarr/ (see generator.layouts.zarr for the format).

Fast path: the metadata (the group's and the array's zarr.json) is read and checked once per
process, each shard's index (its table of (offset, nbytes) per inner chunk, at the end of the
shard file) once per process on first use, and then each sample is one pread of its inner
chunk: straight into the batch for fixed-size images (the pixels are the chunk), behind the
corpus's fixed TIFF header for read/read_many. No zarr-python call per batch, no event loop,
so threads read in parallel. Shards larger together than the memory this process may use (a
capped run) are advised random access: a chunk's pread then reads the chunk, not the device's
readahead window beyond it. zarr-python's own read path (array.oindex of a sorted batch) is
the naive baseline the bench measures beside it: it re-reads every touched shard's index on
every call and goes through its asyncio machinery (docs/lab/2026-12-01-sqlite-zarr-crossover.md has the figures).

Chunks equal to the fill value are a legitimate state, not damage: zarr-python does not store an
inner chunk that equals the array's fill value (zeros) even with write_empty_chunks (its
sharding codec leaves the chunk's index entry empty), nor a shard file all of whose chunks do,
and it reads such a chunk, or a shard file that does not exist, as the fill value. This reader
does the same for a sample whose manifest crc32 is that of an all-zero image (the corpus's TIFF
header then zeros): it reads zeros, and extents() lists no stored range for it. A chunk missing
for a sample the manifest says is not all zeros stays a SampleError ("missing"): the manifest
tells the legitimate state from damage.

Every value taken from disk is checked before use: the metadata must describe this corpus's
array exactly as the generator writes it (else CorpusError: not ours), an index must pass its
crc32c and lie inside its shard, each chunk must have the size this sample's payload has. So a
damaged or hostile file is a SampleError naming the shard file and sample, never a huge
allocation: nothing is read whose size the manifest does not bound.

The labels (verify's stored_labels) are read the same way, without zarr-python: one chunk of
little-endian uint16, `labels/c/0`. zarr-python reads through process-wide settings a program
may have changed (zarr.config: `zarr.config.enable_gpu()` makes every buffer a CuPy one, and
without CuPy every read, metadata too, fails with "'NoneType' object has no attribute
'frombuffer'"; a codec pipeline or codec of its own), and its errors were blamed on the
corpus. Labels metadata not in the generator's plain form still go through zarr-python.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import zlib

import numpy as np

from generator.errors import CorpusError, SampleError, os_reason, raise_if_out_of_handles
from generator.layouts import zarr as fmt
from generator.limits import keep_open
from generator.manifest import stored_spec

from .base import Reader
from .pagecache import memory_available
from .plain import plain_decode

META_LIMIT = 1 << 20  # bytes of a zarr.json read at most
MAX_FDS = 256  # shard files held open per process at most (fewer under a low `ulimit -n`: generator.limits)


def library_versions() -> dict[str, str]:
    import numcodecs

    return {"numcodecs": numcodecs.__version__}


class ZarrReader(Reader):
    layout = "zarr"
    stores_spec = True
    naive = "zarr-python: array.oindex[sorted batch] (variable-size payloads: then their plain decode, tifffile or PIL)"
    handles = ("_fds", "_tables", "_per_shard", "_shard_lock", "_random", "_fill_crc", "_keep")

    def _init_process_state(self) -> None:
        super()._init_process_state()
        self._fixed = self.codec.fixed_size is not None
        self._name = fmt.array_name(self.codec)

    def shard_path(self, k: int):
        return self.target / fmt.shard_key(self.spec, self.codec, k)

    def where(self, index: int) -> str:
        s = self._per_shard or fmt.shard_samples(self.spec, self.codec)
        return f"{self.shard_path(index // s)} (inner chunk {index % s})"

    def paths(self):
        s = self._per_shard or fmt.shard_samples(self.spec, self.codec)
        return [self.shard_path(k) for k in range(-(-self.spec.count // s))]

    # -- opening -------------------------------------------------------------------------------

    def _open(self, index: int) -> None:
        if not self.target.is_dir():
            raise SampleError(self.layout, index, str(self.target), "missing (no such directory)")
        self.check_inside(self.target)
        group = self._json(index, "zarr.json")
        attrs = group.get("attributes") if isinstance(group, dict) else None
        ours = attrs.get("layoutbench") if isinstance(attrs, dict) else None
        if group.get("node_type") != "group" or not isinstance(ours, dict) or ours.get("format") != fmt.FORMAT:
            raise CorpusError(f"{self.target} is not a layoutbench zarr corpus of format {fmt.FORMAT}; regenerate "
                              f"the corpus with --force")
        where = f"{self.target}/zarr.json (attribute layoutbench.spec)"
        if not stored_spec(json.dumps(ours.get("spec")), where).same_corpus(self.spec):
            raise CorpusError(f"{self.target} holds a corpus of another spec than {self.root}/manifest.json; "
                              f"regenerate the corpus with --force")
        self._per_shard = self._check_array(self._json(index, f"{self._name}/zarr.json"))
        self._fds, self._tables = {}, {}
        self._shard_lock = threading.Lock()
        self._keep = min(MAX_FDS, keep_open())
        self._fill_crc = _zeros_crc(self.codec.header, self.spec.pixel_bytes) if self._fixed else None
        self._random = sum(os.path.getsize(p) for p in self.paths() if p.exists()) > memory_available()

    def _json(self, index: int, rel: str) -> dict:
        """A zarr.json of the corpus, read by ourselves: at most META_LIMIT bytes, no symlink."""
        path = self.target / rel
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            problem = "missing (no such file)" if exc.errno == errno.ENOENT else f"unreadable: {os_reason(exc)}"
            raise SampleError(self.layout, index, str(path), problem) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SampleError(self.layout, index, str(path), "unreadable: not a regular file")
            raw = os.pread(fd, META_LIMIT + 1, 0)
        finally:
            os.close(fd)
        try:
            if len(raw) > META_LIMIT:
                raise ValueError(f"over {META_LIMIT:,} bytes")
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except (ValueError, RecursionError) as exc:
            raise CorpusError(f"{path} is not zarr metadata of ours ({' '.join(str(exc).split())[:200]}); "
                              f"regenerate the corpus with --force") from None

    def _check_array(self, meta: dict) -> int:
        """Images per shard, once the array's metadata is exactly what the generator writes."""
        spec = self.spec
        inner = [1, *spec.shape] if self._fixed else [1]
        try:
            grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
            per_shard = grid[0]
            (codec,) = meta["codecs"]
            conf = codec["configuration"]
            (inner_codec,) = conf["codecs"]
            endian = (inner_codec.get("configuration") or {}).get("endian", "little")
            ok = (meta["node_type"] == "array" and meta["zarr_format"] == 3
                  and meta["shape"] == [spec.count, *inner[1:]]
                  and meta["data_type"] == (spec.dtype if self._fixed else "variable_length_bytes")
                  and meta["chunk_grid"]["name"] == "regular"
                  and type(per_shard) is int and 1 <= per_shard <= max(fmt.MAX_SHARD, 1) and grid[1:] == inner[1:]
                  and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
                  and not meta.get("storage_transformers")
                  and codec["name"] == "sharding_indexed" and conf["chunk_shape"] == inner
                  and conf["index_location"] == "end"
                  and [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
                  and conf["index_codecs"][0].get("configuration", {}).get("endian", "little") == "little"
                  and inner_codec["name"] == ("bytes" if self._fixed else "vlen-bytes") and endian == "little")
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            ok = False
        if not ok:
            raise CorpusError(f"{self.target}/{self._name}/zarr.json does not describe this corpus's array as the "
                              f"generator writes it (shape, dtype, one uncompressed inner chunk per sample, shard "
                              f"index at the end with crc32c); regenerate the corpus with --force")
        return per_shard

    def _close(self) -> None:
        for fd in (self._fds or {}).values():
            os.close(fd)

    # -- shards --------------------------------------------------------------------------------

    def _is_fill(self, i: int) -> bool:
        """Whether sample i is the fill value (an all-zero image, by the manifest's crc32): zarr
        stores no chunk for it, and reads it as zeros."""
        return self._fill_crc is not None and self._crc[i] == self._fill_crc

    def _shard(self, k: int, i: int):
        """(fd, index table, data end, owned) of shard k. The index is read and checked once per
        process; the first _keep shards' files stay open (MAX_FDS, or fewer under a low `ulimit -n`),
        any beyond are opened for the call
        (owned: the caller closes it), so no descriptor is ever closed while another thread uses it.
        A shard file zarr did not write because every image of it is the fill value gives fd None
        and a table of empty entries (data end -1)."""
        fd = self._fds.get(k)
        got = self._tables.get(k)
        if got is not None and (fd is not None or got[1] < 0):
            return fd, *got, False
        fd = self._open_shard(k, i)
        if fd is None:
            got = self._tables[k] = (np.full((self._per_shard, 2), -1, np.int64), -1)
            return None, *got, False
        try:
            if got is None:
                got = self._tables[k] = self._read_index(k, i, fd)
            with self._shard_lock:
                if k not in self._fds and len(self._fds) < self._keep:
                    self._fds[k] = fd
                    return fd, *got, False
        except BaseException:
            os.close(fd)
            raise
        return fd, *got, True

    def _open_shard(self, k: int, i: int) -> int | None:
        """Shard k's file open for reading; None when it does not exist and every sample of it is
        the fill value (zarr writes no shard then); else a missing file is sample i's error."""
        try:
            fd = os.open(self.shard_path(k), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            first = k * self._per_shard
            if exc.errno == errno.ENOENT and all(
                    self._is_fill(j) for j in range(first, min(first + self._per_shard, self.spec.count))):
                return None
            raise_if_out_of_handles(exc)
            problem = ("missing: its shard file does not exist" if exc.errno == errno.ENOENT else
                       "refused: its shard file is a symbolic link" if exc.errno == errno.ELOOP else
                       f"unreadable: {os_reason(exc)}")
            raise SampleError(self.layout, i, self.where(i), problem) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SampleError(self.layout, i, self.where(i), "unreadable: its shard is not a regular file")
        if self._random:  # larger than memory (a capped run): read the chunk, not the readahead window
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        return fd

    def _read_index(self, k: int, i: int, fd: int):
        """(table, data end) of shard k, the index passing its crc32c. An index that fails it is
        'truncated' when the file is shorter than its samples' chunks and its index need (fill-value
        chunks are not stored, so a whole shard may be shorter than that: the size alone proves
        nothing), else 'damaged'."""
        size = os.fstat(fd).st_size
        try:
            return fmt.read_shard_index(fd, self._per_shard, size)
        except (OSError, ValueError) as exc:
            first = k * self._per_shard
            sizes = self._size_arr[first:first + self._per_shard]
            if self._fixed:
                need = len(sizes) * self.spec.pixel_bytes
            else:
                need = int(sizes.sum()) + len(sizes) * fmt.VLEN_HEADER
            need += fmt.index_bytes(self._per_shard)
            if size < need:
                raise SampleError(self.layout, i, self.where(i),
                                  f"truncated: its shard file has {size:,} bytes, a whole one at least {need:,}") from None
            raise SampleError(self.layout, i, self.where(i), f"damaged shard: {exc}") from None

    def _locate(self, i: int):
        """(fd, offset, nbytes, owned) of sample i's inner chunk, checked against its index and size;
        fd None for a fill-value chunk zarr did not store (the sample is zeros, nbytes its size)."""
        k, j = divmod(i, self._per_shard)
        fd, table, end, owned = self._shard(k, i)
        a, n = int(table[j, 0]), int(table[j, 1])
        want = fmt.chunk_bytes(self.spec, self.codec, self._sizes[i])
        problem = None
        if a < 0 and self._is_fill(i):
            if owned:
                os.close(fd)
            return None, 0, want, False
        if a < 0:
            problem = "missing: the shard index lists no chunk for it"
            if self._fixed:
                problem += (" (zarr would read the fill value, zeros, but the manifest's crc32 says this image "
                            "is not all zeros)")
        elif a + n > end:
            problem = (f"missing: the shard index places its {n:,} bytes at {a:,}, past the shard's data "
                       f"(which ends at {end:,})")
        if problem is not None or n != want:
            if owned:
                os.close(fd)
            if problem is not None:
                raise SampleError(self.layout, i, self.where(i), problem)
            self.fail_size(i, n - want + self._sizes[i])
        return fd, a, n, owned

    # -- where samples lie ---------------------------------------------------------------------

    extents_cover = "chunk"
    no_extents = None
    # one inner chunk per image: the chunk read is the sample's stored bytes, nothing more (read_unit None)

    def extents(self, indices):
        """Each sample's inner chunk in its shard file, from the shard's index (read once per
        process, at the shard's end; never the chunk's pages): the whole chunk is what zarr reads
        for a sample. For fixed-size payloads the chunk is the image's pixels (the payload less the
        corpus's TIFF header, which is not stored); for variable-size ones, zarr's 8-byte
        variable-length header, then the payload. A chunk the index places wrongly is the
        sample's named error."""
        idx = self.check_indices(indices)
        if not len(idx):
            return []
        self._ensure_open(int(idx[0]))
        out = []
        for i in idx.tolist():
            fd, a, n, owned = self._locate(i)
            if owned:
                os.close(fd)
            out.append([] if fd is None else [(str(self.shard_path(i // self._per_shard)), a, n)])
        return out

    def _pread_into(self, i: int, fd: int, a: int, buf: memoryview) -> None:
        try:
            got = os.preadv(fd, [buf], a)
        except OSError as exc:
            raise SampleError(self.layout, i, self.where(i), f"unreadable: {os_reason(exc)}") from None
        if got != len(buf):
            raise SampleError(self.layout, i, self.where(i), f"truncated: {got} of its {len(buf)} bytes could be read")

    # -- reading -------------------------------------------------------------------------------

    def _read_chunk(self, i: int, into: memoryview | None = None, skip: int = 0):
        """Sample i's inner chunk, read into `into` (its exact size) or a new buffer with `skip`
        bytes before it."""
        fd, a, n, owned = self._locate(i)
        if fd is None:  # a fill-value chunk: zeros, as zarr reads it
            if into is None:
                return bytearray(skip + n)
            np.asarray(into).fill(0)
            return into
        try:
            buf = into if into is not None else bytearray(skip + n)
            self._pread_into(i, fd, a, memoryview(buf)[skip:] if into is None else into)
            return buf
        finally:
            if owned:
                os.close(fd)

    def _read_one(self, i: int):
        if self._fixed:
            h = len(self.codec.header)
            buf = self._read_chunk(i, skip=h)
            buf[:h] = self.codec.header
            return buf
        buf = self._read_chunk(i)
        n = len(buf)
        count, length = int.from_bytes(buf[:4], "little"), int.from_bytes(buf[4:8], "little")
        if count != 1 or length != n - fmt.VLEN_HEADER:
            raise SampleError(self.layout, i, self.where(i),
                              f"undecodable: its chunk holds {count} item(s) of {length} bytes, not one of "
                              f"{n - fmt.VLEN_HEADER}")
        return memoryview(buf)[fmt.VLEN_HEADER:]

    def _read_many(self, idx: list[int]) -> list:
        return [self._read_one(i) for i in idx]

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        """Each image's chunk read straight into its row of the batch (the chunk is the pixels)."""
        if not self._fixed:
            return super()._read_into(idx, out)
        flat = memoryview(out).cast("B")
        n, header = self.spec.pixel_bytes, self.codec.header
        head_crc = zlib.crc32(header)
        for k, i in enumerate(idx):
            row = flat[k * n:(k + 1) * n]
            self._read_chunk(i, into=row)
            if self.verify and zlib.crc32(row, head_crc) != self._crc[i]:
                self.fail_crc(i, zlib.crc32(row, head_crc))

    # -- zarr-python: the naive baseline (and labels not in the generator's plain form) --------

    def _zarr_group(self):
        import zarr
        from zarr.storage import LocalStore

        self._ensure_open(0)  # our checks first: zarr-python trusts the metadata it is given
        with fmt.quiet():
            return zarr.open_group(LocalStore(self.target, read_only=True), mode="r", zarr_format=3)

    def naive_batch(self, indices):
        if self._naive is None:
            with fmt.quiet():
                self._naive = self._zarr_group()[self._name]
        order = np.sort(np.asarray(indices))
        with fmt.quiet():
            got = self._naive.oindex[order]
        if self._fixed:
            images = np.asarray(got)
        else:
            images = np.stack([plain_decode(bytes(p), self.codec) for p in got])
        return images, order, int(self._size_arr[order].sum())

    def close_naive(self) -> None:
        self._naive = None

    def stored_labels(self) -> np.ndarray:
        meta = self._json(-1, "labels/zarr.json")
        if meta.get("shape") != [self.spec.count] or meta.get("data_type") != "uint16":
            raise CorpusError(f"{self.target}/labels is not {self.spec.count} uint16 labels; regenerate the corpus "
                              f"with --force")
        if _plain_labels(meta, self.spec.count):
            return self._labels_chunk()
        try:
            labels = self._zarr_group()["labels"][:]
        except Exception as exc:  # zarr-python's errors on damaged chunks are of many kinds
            raise SampleError(self.layout, -1, f"{self.target}/labels", f"unreadable: {exc}") from None
        return np.asarray(labels).astype(np.int64)

    def _labels_chunk(self) -> np.ndarray:
        """The labels' one chunk, read by ourselves (the module docstring says why)."""
        n = self.spec.count
        path = self.target / "labels" / "c" / "0"
        where = f"{self.target}/labels"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            problem = ("missing: its chunk labels/c/0 does not exist" if exc.errno == errno.ENOENT else
                       f"unreadable: {os_reason(exc)}")
            raise SampleError(self.layout, -1, where, problem) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SampleError(self.layout, -1, where, "unreadable: its chunk labels/c/0 is not a regular file")
            raw = os.pread(fd, 2 * n + 1, 0)
        except OSError as exc:
            raise SampleError(self.layout, -1, where, f"unreadable: {os_reason(exc)}") from None
        finally:
            os.close(fd)
        if len(raw) != 2 * n:
            has = f"more than {2 * n:,}" if len(raw) > 2 * n else f"{len(raw):,}"
            raise SampleError(self.layout, -1, where, f"damaged: its chunk labels/c/0 has {has} bytes, not the "
                                                      f"{2 * n:,} of {n:,} uint16 labels")
        return np.frombuffer(raw, "<u2").astype(np.int64)


def _zeros_crc(header: bytes, n: int) -> int:
    """crc32 of the payload of an all-zero image: the corpus's TIFF header, then n zero bytes."""
    crc, block = zlib.crc32(header), memoryview(bytes(min(n, 1 << 20)))
    while n > 0:
        take = min(n, len(block))
        crc = zlib.crc32(block[:take], crc)
        n -= take
    return crc


def _plain_labels(meta: dict, n: int) -> bool:
    """Whether labels/zarr.json is the generator's: one chunk of n, default keys, the bytes codec
    little-endian, nothing else (then the chunk is the labels' 2n bytes)."""
    try:
        codecs = meta["codecs"]
        return (meta["node_type"] == "array" and meta["zarr_format"] == 3
                and meta["chunk_grid"] == {"name": "regular", "configuration": {"chunk_shape": [n]}}
                and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
                and not meta.get("storage_transformers") and len(codecs) == 1 and codecs[0]["name"] == "bytes"
                and (codecs[0].get("configuration") or {}).get("endian", "little") == "little")
    except (KeyError, TypeError, AttributeError):
        return False

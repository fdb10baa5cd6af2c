"""`hdf5` reader: corpus.h5 (see generator.layouts.hdf5 for the format).

Fast path: h5py is used only to find where each sample's bytes lie in the file (the contiguous
`payload` dataset's file offset plus `offsets`; the chunk addresses of an unfiltered chunked
`payload`, encoded payloads of varying size, plus `offsets`; or the chunk addresses of an
unfiltered `images` dataset); then the h5py file is closed and samples are read straight from corpus.h5. No HDF5
call per sample, no HDF5 global lock, so threads read in parallel. Small samples are copied out
of a read-only mmap of the file. A large one is copied out of the map when all its pages are in
the page cache (mincore): a user-space copy into the batch beats read()'s kernel copy there;
otherwise it is read with preadv straight into the batch, where the kernel's readahead streams
it (faults on a map wait for one readahead window at a time). A file larger than the memory this
process may use (RAM, or its cgroup's limit) is advised random access, map and fd alike: read
around a miss would be evicted before use; its samples' bytes are then read with one pread each,
the next ones advised WILLNEED meanwhile (Reader._pread_advised), not faulted in one page at a time.
docs/lab/2026-12-01-capped.md has the figures.
Fallback (a filtered `payload` or `images`, from other writers): h5py slicing, with the
dataset's chunk cache sized to one chunk.

Other handles on corpus.h5. In this process, HDF5 shares one open file among every h5py.File of
it, whatever their modes, so a program's own h5py.File (mode 'r', 'a', 'r+', SWMR, another
libver) is read through. A writer marks the file open for writing in its superblock (the
generator writes libver='latest', whose superblock has those flags) and clears the mark when it
closes; a writer still running, or one that died (a killed notebook that had opened it with
'a'), leaves it, and HDF5 then refuses a plain open ("file is already open for write (may use
<h5clear file> to clear file consistency flags)"). A SWMR writer's mark is read through: the
file is opened again as a SWMR reader, which HDF5 allows beside one. A plain writer's mark
refuses every open, SWMR too, until h5clear clears it: one line says so (nothing here writes to
the corpus, so it is not cleared here). A writer elsewhere without SWMR (another process, or a
second HDF5 library in this one, say PyTables' own) holds HDF5's file lock instead ("unable to
lock file, errno = 11"): that is one line naming the writer and what to do, not the corpus's
damage.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

from generator.errors import CorpusError, LayoutbenchError, SampleError, os_reason
from generator.manifest import stored_spec

from .base import Reader
from .plain import plain_decode
from .pagecache import advised_ahead, memory_available, range_resident

_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)  # h5py's, on a damaged file
MARKED = "already open for write"  # HDF5: the superblock's flags say a writer has it (module docstring)
LOCKED = "unable to lock file"  # HDF5: another open file description holds the file's lock


def open_h5(path, where: str, index: int = -1):
    """h5py.File of `path` read-only; through another's writer mark as a SWMR reader; a lock held by
    a writer elsewhere is named as such (see the module docstring). Else a SampleError at `where`."""
    import h5py

    try:
        return h5py.File(path, "r")
    except _H5_ERRORS as exc:
        err = exc
    if MARKED in str(err):
        try:
            return h5py.File(path, "r", swmr=True)
        except _H5_ERRORS as exc:
            if "not already open for SWMR writing" in str(exc):  # marked by a writer without SWMR
                raise LayoutbenchError(
                    f"{path} is marked open for writing (HDF5 marks it while an h5py.File with mode 'a', 'r+' or "
                    f"'w' has it, and no reader may open it then): a program that opened it so is still running, "
                    f"or died without closing it; close that program, or if none runs, clear the mark with "
                    f"`h5clear -s {path}` (HDF5's command-line tools)") from None
            err = exc
    text = " ".join(str(err).split())
    if LOCKED in text:
        if "errno = 11," in text or "temporarily unavailable" in text:
            raise LayoutbenchError(f"{path} is open for writing elsewhere: HDF5's file lock is held (h5py.File with "
                                   f"mode 'a', 'r+' or 'w' in another process, or a second HDF5 library in this "
                                   f"one); close it there, or open it there with mode 'r', then read again") from None
        raise LayoutbenchError(f"{path}: HDF5 could not lock the file ({text}); where the file system has no locks, "
                               f"set HDF5_USE_FILE_LOCKING=FALSE") from None
    problem = "missing (no such file)" if not os.path.exists(path) else f"cannot open the HDF5 file: {text}"
    raise SampleError("hdf5", index, where, problem) from None


def library_versions() -> dict[str, str]:
    import h5py

    return {"hdf5": h5py.version.hdf5_version}


class HDF5Reader(Reader):
    layout = "hdf5"
    reads_through_map = True
    stores_spec = True
    naive = "h5py indexing of each sorted batch (images[sorted], or a payload slice per sample + its plain decode: tifffile, PIL)"
    # per-process state (dropped on pickling, rebuilt on open)
    handles = ("_file", "_dset", "_map", "_view", "_addr", "_fd", "_starts", "_ok", "_table", "_file_size", "_advised",
               "_fallback_offsets", "_split")

    def where(self, index: int) -> str:
        if self.spec.payload == "raw":
            return f"{self.target}:/images[{index}]"
        return f"{self.target}:/payload (sample {index})"

    # -- opening -------------------------------------------------------------------------------

    def _open(self, index: int) -> None:
        f = open_h5(self.target, str(self.target), index)
        try:
            self._check_spec(f)
            name = "images" if self.spec.payload == "raw" else "payload"
            if name not in f:
                raise SampleError(self.layout, index, str(self.target), f"missing: the file has no /{name} dataset")
            self._check_local(f, (name, "offsets"))
            self._split = {}
            table = self._images_table(f[name]) if name == "images" else self._payload_table(f, f[name])
            if table is not None:
                self._map_file(index, *table)
                f.close()
            else:
                self._file, self._dset = f, _with_chunk_cache(f, name)
        except LayoutbenchError:
            f.close()
            raise
        except _H5_ERRORS as exc:  # what h5py raises on damaged metadata (checksums, truncated objects)
            f.close()
            raise SampleError(self.layout, index, str(self.target), f"damaged HDF5 file: {exc}") from None
        except BaseException:
            f.close()
            raise

    no_extents = ("a filtered dataset (compressed by another writer) is read through h5py, which keeps "
                  "where its chunks lie to itself")

    def extents(self, indices):
        """The sample's bytes in corpus.h5 (the contiguous payload dataset's offset plus /offsets,
        or the raw images' chunk addresses); None for datasets read through h5py (no_extents)."""
        idx = self.check_indices(indices)
        if not len(idx):
            return []
        self._ensure_open(int(idx[0]))
        if self._map is None:  # chunked through h5py: not contiguous in the file
            return None
        target, starts, sizes, split = str(self.target), self._starts, self._sizes, self._split
        return [[(target, a, n) for a, n in split[i]] if i in split else [(target, starts[i], sizes[i])]
                for i in idx.tolist()]

    def _check_local(self, f, names) -> None:
        """Refuse datasets whose bytes live elsewhere (external link, external raw storage, virtual
        dataset): HDF5 would read them from any path, and a corpus is read only from inside itself."""
        import h5py

        for name in names:
            if name not in f:
                continue
            obj = f[name]
            if (not isinstance(f.get(name, getlink=True), h5py.HardLink) or not isinstance(obj, h5py.Dataset)
                    or obj.external or obj.is_virtual):
                raise CorpusError(f"{self.target}:/{name} is not a plain dataset stored in the file (an external or "
                                  f"virtual dataset, a link or a group): the file is not ours; regenerate the "
                                  f"corpus with --force")

    def _check_spec(self, f) -> None:
        stored = f.attrs.get("layoutbench_spec")
        where = f"{self.target} (attribute layoutbench_spec)"
        if stored is not None and not stored_spec(stored, where).same_corpus(self.spec):
            raise CorpusError(f"{self.target} holds a corpus of another spec than {self.root}/manifest.json; "
                              f"regenerate the corpus with --force")

    def _payload_table(self, f, dset):
        """(file offsets, lengths, in-dataset flags) of every sample, or None when not contiguous."""
        offsets = f["offsets"][()].astype(np.int64) if "offsets" in f else None
        if offsets is None or len(offsets) != self.spec.count + 1:
            self._fallback_offsets = None
            return None
        self._fallback_offsets = offsets.tolist()
        starts, ends = offsets[:-1], offsets[1:]
        inside = (starts >= 0) & (starts <= ends) & (ends <= dset.size)
        if dset.chunks is not None:
            return self._chunked_table(dset, starts, ends, inside)
        base = dset.id.get_offset()
        if base is None:
            return None
        return base + starts, ends - starts, inside

    def _chunked_table(self, dset, starts, ends, inside):
        """The chunked, unfiltered payload dataset of encoded payloads (the generator writes it in
        1 MiB chunks, extendable) read in place: each chunk's file address from the chunk index,
        a sample's file offset from the chunk its first byte lies in. A sample whose bytes run
        on into a chunk that is not the next one in the file (a break where HDF5 put its index
        between them) is read in pieces, one per chunk (`_split`). None (h5py reads) when the
        dataset is filtered or a chunk is filtered."""
        step = dset.chunks[0]
        if len(dset.chunks) != 1 or dset.dtype.itemsize != 1 or dset.id.get_create_plist().get_nfilters():
            return None
        nchunks = -(-dset.size // step) if dset.size else 0
        addr = np.full(nchunks + 1, -1, np.int64)  # + 1: a sentinel past the last chunk
        filtered = []

        def visit(info):
            k = info.chunk_offset[0] // step
            if info.filter_mask:
                filtered.append(k)
            elif k < nchunks and info.size == step:
                addr[k] = info.byte_offset

        dset.id.chunk_iter(visit)
        if filtered:
            return None
        last = np.maximum(ends - 1, starts)
        first_chunk, last_chunk = starts // step, last // step
        ok = inside & (first_chunk < nchunks) & (last_chunk < nchunks)
        first_chunk, last_chunk = np.where(ok, first_chunk, 0), np.where(ok, last_chunk, 0)
        # chunks stored, and each followed in the file by the next one (cumulative count of breaks)
        follows = np.append((addr[1:-1] == addr[:-2] + step) & (addr[:-2] >= 0), False)
        breaks = np.concatenate(([0], np.cumsum(~follows)))
        stored = np.concatenate(([0], np.cumsum(addr[:-1] < 0)))
        ok &= stored[last_chunk + 1] - stored[first_chunk] == 0
        whole = ok & (breaks[last_chunk] - breaks[first_chunk] == 0)
        file_starts = np.where(ok, addr[first_chunk] + starts - first_chunk * step, -1)
        self._split = {}
        for i in np.flatnonzero(ok & ~whole).tolist():
            pieces, at, end = [], int(starts[i]), int(ends[i])
            while at < end:
                k = at // step
                n = min(end, (k + 1) * step) - at
                pieces.append((int(addr[k]) + at - k * step, n))
                at += n
            self._split[i] = pieces
        return file_starts, ends - starts, ok

    def _images_table(self, dset):
        """Unfiltered one-image chunks: their file addresses from the chunk index."""
        if dset.chunks != (1, *self.spec.shape) or dset.id.get_create_plist().get_nfilters():
            return None
        starts = np.full(self.spec.count, -1, np.int64)
        lens = np.zeros(self.spec.count, np.int64)

        def visit(info):
            if info.filter_mask == 0 and info.chunk_offset[0] < self.spec.count:
                starts[info.chunk_offset[0]] = info.byte_offset
                lens[info.chunk_offset[0]] = info.size

        dset.id.chunk_iter(visit)
        return starts, lens, starts >= 0

    def _map_file(self, index: int, starts, lens, inside) -> None:
        fd = os.open(self.target, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            self._map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        except BaseException:
            os.close(fd)
            raise
        self._advised = size > memory_available()  # larger than this process's memory (a capped run):
        if self._advised:  # read what is asked for only; read-around would be evicted unused
            self._map.madvise(mmap.MADV_RANDOM)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        self._fd = fd  # large samples not in the page cache are read with preadv
        self._addr = np.frombuffer(self._map, np.uint8).ctypes.data if size else 0  # for mincore
        self._view = memoryview(self._map)
        self._file_size = size
        self._table = (starts, lens, inside)
        self._ok = inside & (starts + lens <= size) & (lens == self._size_arr)
        for i, pieces in self._split.items():  # in pieces: each piece inside the file
            self._ok[i] = inside[i] and lens[i] == self._size_arr[i] and all(a + n <= size for a, n in pieces)
        self._starts = starts.tolist()

    def _close(self) -> None:
        if self._view is not None:
            self._view.release()
            try:
                self._map.close()
            except BufferError:  # slices of it are still referenced (say, by a SampleError's traceback):
                pass  # it is unmapped when the last of them goes, instead of a BufferError hiding that error
            os.close(self._fd)
        if self._file is not None:
            self._file.close()

    # -- errors --------------------------------------------------------------------------------

    def _fail_table(self, i: int):
        starts, lens, inside = self._table
        a, n = int(starts[i]), int(lens[i])
        if not inside[i]:
            problem = ("missing: no chunk is stored for it" if self.spec.payload == "raw" else
                       f"missing: its bytes lie outside the payload dataset (offsets say {n} bytes at {a})")
        elif a + n > self._file_size:
            problem = f"truncated: the file ends at byte {self._file_size}, before the sample's end at {a + n}"
        else:
            self.fail_size(i, n)
        raise SampleError(self.layout, i, self.where(i), problem)

    def _check_batch(self, idx: list[int]) -> None:
        if not self._ok[idx].all():
            self._fail_table(next(i for i in idx if not self._ok[i]))

    # -- reading -------------------------------------------------------------------------------

    def _read_one(self, i: int):
        if self._map is None:
            return self._read_fallback(i)
        if not self._ok[i]:
            self._fail_table(i)
        if self._advised or i in self._split:
            return self._read_many([i])[0]
        a = self._starts[i]
        return self._map[a:a + self._sizes[i]]

    def _read_many(self, idx: list[int]) -> list:
        if self._map is None:
            return [self._read_fallback(i) for i in idx]
        self._check_batch(idx)
        m, starts, sizes, split = self._map, self._starts, self._sizes, self._split
        if split and not split.keys().isdisjoint(idx):  # samples in pieces: each joined
            return [self._joined(i) if i in split else self._read_many([i])[0] for i in idx]
        if self._advised:  # see the module docstring
            fd = self._fd
            return self._pread_advised(idx, [(fd, starts[i], sizes[i]) for i in idx])
        return [m[starts[i]:starts[i] + sizes[i]] for i in idx]

    def _joined(self, i: int) -> bytes:
        """A sample stored in pieces (_chunked_table), read piece by piece and joined."""
        pieces = self._split[i]
        return b"".join(self._pread_advised([i] * len(pieces), [(self._fd, a, n) for a, n in pieces]))

    def _read_into(self, idx: list[int], out: np.ndarray) -> None:
        if self._map is None:
            return super()._read_into(idx, out)
        self._check_batch(idx)
        view, starts, size = self._view, self._starts, self.codec.fixed_size
        if self.small:  # advised random (a capped run): each read by pread, not faulted in (_read_many)
            payloads = self._read_many(idx) if self._advised else [view[starts[i]:starts[i] + size] for i in idx]
            return self._assemble(idx, payloads, out)
        ahead = advised_ahead([(self._fd, starts[i], size) for i in idx]) if self._advised else None
        flat = memoryview(out).cast("B")
        h, n = len(self.codec.header), self.spec.pixel_bytes
        head = bytearray(h)
        for k, i in enumerate(idx):
            if ahead is not None:  # the misses ahead in flight meanwhile
                next(ahead)
            a = starts[i]
            if self._resident(a, size):  # see the module docstring
                self._place(i, view[a:a + size], flat, k, out)
                continue
            row = flat[k * n:(k + 1) * n]
            try:
                got = os.preadv(self._fd, [head, row], a)
            except OSError as exc:
                raise SampleError(self.layout, i, self.where(i), f"unreadable: {os_reason(exc)}") from None
            self._check_read(i, head, row, got, k, out)

    def _resident(self, a: int, size: int) -> bool:
        """Whether bytes [a, a + size) of the file are all in the page cache."""
        return range_resident(self._addr, a, size)

    def _read_fallback(self, i: int):
        """One sample through h5py (chunked or filtered datasets)."""
        try:
            if self.spec.payload == "raw":
                buf = bytearray(self.spec.pixel_bytes)
                arr = np.frombuffer(buf, self.spec.np_dtype).reshape(self.spec.shape)
                self._dset.read_direct(arr, np.s_[i])
                return buf
            offsets = self._fallback_offsets
            if offsets is None:
                raise SampleError(self.layout, i, self.where(i), "missing: the file has no valid /offsets dataset")
            a, b = offsets[i], offsets[i + 1]
            if not 0 <= a <= b <= self._dset.size:
                raise SampleError(self.layout, i, self.where(i),
                                  f"missing: its bytes [{a}, {b}) lie outside the payload dataset")
            buf = bytearray(b - a)
            if b > a:
                self._dset.read_direct(np.frombuffer(buf, np.uint8), np.s_[a:b])
            return buf
        except _H5_ERRORS as exc:
            if isinstance(exc, LayoutbenchError):
                raise
            raise SampleError(self.layout, i, self.where(i), f"unreadable: {exc}") from None

    def naive_batch(self, indices):
        if self._naive is None:
            f = open_h5(self.target, str(self.target))
            self._naive = (f, f["offsets"][:] if "offsets" in f else None)
        f, offsets = self._naive
        order = np.sort(np.asarray(indices))
        if "images" in f:
            images = f["images"][order]  # h5py fancy indexing: increasing indices
        else:
            ds = f["payload"]
            images = np.stack([plain_decode(ds[int(offsets[i]):int(offsets[i + 1])].tobytes(), self.codec)
                               for i in order.tolist()])
        return images, order, int(self._size_arr[order].sum())

    def close_naive(self) -> None:
        if self._naive is not None:
            self._naive[0].close()
            self._naive = None

    def stored_labels(self) -> np.ndarray:
        try:
            with open_h5(self.target, f"{self.target}:/labels") as f:
                self._check_local(f, ("labels",))
                return f["labels"][()].astype(np.int64)
        except _H5_ERRORS as exc:
            if isinstance(exc, LayoutbenchError):
                raise
            raise SampleError(self.layout, -1, f"{self.target}:/labels", f"unreadable: {exc}") from None


def _with_chunk_cache(f, name: str):
    """Open dataset `name` with a chunk cache that holds at least one whole chunk (HDF5's default
    1 MiB cache is smaller than one image of a large corpus, which then bypasses the cache)."""
    import h5py

    chunks = f[name].chunks
    nbytes = int(np.prod(chunks)) * f[name].dtype.itemsize if chunks else 1 << 20
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_chunk_cache(521, max(nbytes, 1 << 20), 1.0)
    return h5py.Dataset(h5py.h5d.open(f.id, name.encode(), dapl))

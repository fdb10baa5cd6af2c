"""PyTorch datasets, samplers and the DataLoader over any reader (optional: needs torch).

Nothing else in `loaders` imports this module, so `import loaders` never imports torch; import it
as `loaders.torch` where torch is installed (`make install-torch`).

    reader = loaders.open_corpus("data/mnist-60000", "hdf5")
    ds = TorchDataset(reader, output="float", channels_first=True)       # ds[i] -> (CHW float, label)
    dl = DataLoader(ds, batch_size=32, sampler=EpochSampler(len(ds)), num_workers=2)
    dl = batch_loader(reader, 32, num_workers=2, persistent_workers=True)  # one read_batch per batch
    for epoch in range(3):
        dl.sampler.set_epoch(epoch)
        for images, targets in dl: ...

Contracts:
- Every order comes from loaders.sampler (epoch_order, shard): every index exactly once per epoch
  across workers and ranks, no padding (a rank's share differs from another's by at most one).
- Images are bit-exact: `output="stored"` gives the pixels as stored, H x W x C, uint8 as uint8;
  16-bit samples as int32 (same values: torch's uint16 supports too few operations to hand out);
  `output="float"` gives float32 scaled to [0, 1] (divided by 255 or 65535). `channels_first`
  gives C x H x W (B x C x H x W for batches) as a permuted view, without a copy.
- Targets are the manifest's labels (int); `classes` are the files layout's class directory
  names, so `class_to_idx` is what torchvision's ImageFolder gives for the same corpus.
- The batch path (BatchDataset) reads each batch with one reader.read_batch into one array, and
  the batch tensor is torch.from_numpy of it; batch_size=None and an identity collate_fn, so the
  DataLoader never re-stacks it. Out of a DataLoader worker, a tensor travels through a shared
  memory segment of its own (created, and its descriptor passed over a socket, per tensor):
  large batches (>= SHM_MIN bytes) are read straight into one; through BatchLoader (what
  batch_loader builds) a smaller batch of stored 8-bit pixels is read, with its targets and
  indices, into one bytearray that travels in the worker's pipe and is unpickled in the main
  process straight into the tensors (views of it); other small batches travel as numpy arrays
  and become tensors by torch.from_numpy there (docs/lab/2026-12-01-pytorch-dataloader.md: the figures).
- Grouped items (batch_loader's `group`, default "auto"): with workers, small packable batches
  go K to a DataLoader item (an EpochBatchSampler(group=K) yields BatchGroups of K consecutive
  batches; each batch still one read_batch, into one shared bytearray), and BatchLoader yields
  the K batches one by one: the same batches, in the same order, with their own targets,
  indices and payload bytes. Why: every DataLoader item costs the same (an index put through a
  feeder thread, a result get and unpickle, a `record_function`, the worker's queue round trip),
  and with 25 KB MNIST batches those costs were the whole epoch (bench/speed/dataloader.py:
  main-process CPU per batch fell from 190-255 to 70-86 us with K=5, docs/lab/2026-12-01-pytorch-dataloader.md).
  prefetch_factor then counts items: K x prefetch_factor batches in flight per worker.
- Errors are the reader's: a SampleError names the layout, the sample and its path or key.
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from generator.errors import LayoutbenchError, UsageError
from generator.layouts.files import class_dir

from . import sampler as _sampler
from .base import Reader
from .stages import epoch_indices

OUTPUTS = ("stored", "float")
SHM_MIN = 1 << 20  # batches of at least this many bytes leave a worker in shared memory, smaller ones pickled
GROUP_BYTES = 128 << 10  # batch_loader's group="auto": packed items of about this many pixel bytes
GROUP_MAX = 8  # ... and of at most this many batches

__all__ = ["OUTPUTS", "BatchDataset", "BatchGroup", "EpochBatchSampler", "EpochSampler", "IterableEpochDataset",
           "TorchDataset", "BatchLoader", "auto_group", "batch_loader", "sample_loader", "shard_opts", "tiff_loader",
           "to_tensor"]


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise UsageError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")


def _empty(shape, dtype: torch.dtype, shared: bool) -> torch.Tensor:
    """An uninitialised tensor; with `shared`, in shared memory when inside a DataLoader worker (so
    sending it to the main process moves a handle, not the bytes). One segment per batch: never
    per sample (a segment is a file; default_collate puts a sample batch in one itself)."""
    t = torch.empty(shape, dtype=dtype)
    if shared and get_worker_info() is not None:
        t.share_memory_()
    return t


def to_tensor(pixels: np.ndarray, output: str = "stored", channels_first: bool = False,
              shared: bool = False) -> torch.Tensor:
    """(..., H, W, C) pixels as a tensor per `output` (see the module docstring). uint8 "stored"
    shares the array's memory; every other case is one conversion into a new tensor (in shared
    memory inside a DataLoader worker when `shared`)."""
    _check_output(output)
    if output == "stored" and pixels.dtype.itemsize == 1:
        t = torch.from_numpy(pixels)
    elif output == "stored":
        t = _empty(pixels.shape, torch.int32, shared)
        t.numpy()[...] = pixels  # uint16 -> int32, values unchanged
    else:
        t = _empty(pixels.shape, torch.float32, shared)
        np.divide(pixels, np.float32(np.iinfo(pixels.dtype).max), out=t.numpy())  # exact 0 and 1 at the ends
    return t.movedim(-1, -3) if channels_first else t


def tiff_loader(path) -> torch.Tensor:
    """One image file as an H x W x C tensor, bit-exact (tifffile): the `loader=` to give
    torchvision's ImageFolder for 16-bit or RGBA images, whose default PIL loader converts to
    8-bit RGB (docs/lab/2026-12-01-pytorch-dataloader.md). 16-bit comes out as int32 (same values), 8-bit as uint8."""
    import tifffile

    a = tifffile.imread(path)
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(a.astype(np.int32) if a.dtype.itemsize == 2 else np.ascontiguousarray(a))


class _ReaderDataset:
    """What the datasets share: the reader, the labels, ImageFolder's class naming."""

    def _setup(self, reader: Reader, transform, target_transform, output: str, channels_first: bool):
        _check_output(output)
        self.reader, self.transform, self.target_transform = reader, transform, target_transform
        self.output, self.channels_first = output, channels_first
        spec = reader.spec
        self.targets: list[int] = reader.labels(np.arange(len(reader))).tolist()
        self.classes: list[str] = [class_dir(spec, c) for c in range(spec.num_classes)]
        self.class_to_idx: dict[str, int] = {name: c for c, name in enumerate(self.classes)}

    def _images(self, idx, shared: bool) -> tuple[torch.Tensor, int]:
        """(batch tensor, payload bytes) of `idx` by one read_batch: uint8 "stored" straight into the
        tensor's memory (shared memory in a worker, with `shared`), else converted once."""
        spec = self.reader.spec
        if self.reader.variable:
            raise UsageError(f"{self.reader.root}: its samples have shapes of their own (a size distribution or an "
                             f"ingested folder), and a batch tensor needs one shape; read it with TorchDataset "
                             f"(one sample at a time) and a transform that resizes or crops, then collate")
        if self.output == "stored" and spec.np_dtype.itemsize == 1:
            t = _empty((len(idx), *spec.shape), torch.uint8, shared)
            _, nbytes = self.reader.read_batch(idx, t.numpy())
            return (t.movedim(-1, -3) if self.channels_first else t), nbytes
        pixels, nbytes = self.reader.read_batch(idx)
        return to_tensor(pixels, self.output, self.channels_first, shared), nbytes


class TorchDataset(_ReaderDataset, Dataset):
    """A map-style dataset, ds[i] -> (image, target): one sample per __getitem__ (what a plain
    DataLoader with batch_size does: it calls this once per index and collates the batch).

    `transform(image)` and `target_transform(target)` are applied as torchvision's datasets apply
    them. `with_index=True`: items are (image, [target, index, payload bytes]) with the three in one
    int64 array, for loops that check every index was read once (the bench does): collated, that is
    one (B, 3) tensor, so a batch leaves a worker in two tensors as (image, target) batches do.
    """

    def __init__(self, reader: Reader, transform=None, target_transform=None, output: str = "stored",
                 channels_first: bool = False, with_index: bool = False):
        self._setup(reader, transform, target_transform, output, channels_first)
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index):
        i = self.reader.check_index(index)
        images, nbytes = self._images([i], shared=False)
        image, target = images[0], self.targets[i]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return (image, np.array([target, i, nbytes], np.int64)) if self.with_index else (image, target)


class BatchDataset(_ReaderDataset, Dataset):
    """A dataset indexed by a batch of indices: ds[[i, j, ...]] -> (images (B, ...), targets (B,)
    int64). Use it with `sampler=EpochBatchSampler(...)` and `batch_size=None` (batch_loader does):
    the DataLoader then hands each batch of indices to one __getitem__ (one read_batch) and does
    not collate again. `transform` gets the batch tensor, `target_transform` the targets tensor.
    `with_index=True`: (images, targets, indices (B,) int64, payload bytes)."""

    def __init__(self, reader: Reader, transform=None, target_transform=None, output: str = "stored",
                 channels_first: bool = False, with_index: bool = False):
        self._setup(reader, transform, target_transform, output, channels_first)
        self.with_index = with_index
        self._label_np = np.asarray(self.targets, np.int64)
        self._labels = torch.from_numpy(self._label_np)

    def __len__(self) -> int:
        return len(self.reader)

    numpy_transport = False  # set by BatchLoader: small batches leave a worker as numpy arrays

    def packable(self) -> bool:
        """Whether batches can leave a worker packed into one buffer (see the module docstring):
        stored 8-bit pixels without transforms. Only those can be read in groups (BatchGroup)."""
        return (self.transform is None and self.target_transform is None and self.output == "stored"
                and self.reader.spec.np_dtype.itemsize == 1)

    def __getitem__(self, indices):
        reader = self.reader
        if isinstance(indices, BatchGroup):
            if not self.packable():
                raise UsageError("a BatchGroup (several batches per item) needs stored 8-bit pixels and no "
                                 "transforms: read such a dataset one batch per item (group=1)")
            batches = [reader.check_indices(b) for b in indices]
            if get_worker_info() is None:  # never pickled: the batches as they are
                return _PackedBatch(reader, batches, self._label_np, self.with_index).unpack()
            return _PackedBatch(reader, batches, self._label_np, self.with_index)
        idx = reader.check_indices(indices)
        piped = self.numpy_transport and len(idx) * reader.spec.pixel_bytes < SHM_MIN and get_worker_info() is not None
        if piped and self.packable():
            return _PackedBatch(reader, [idx], self._label_np, self.with_index)
        images, nbytes = self._images(idx, shared=not piped)
        index = torch.from_numpy(idx)
        targets = self._labels[index]
        if self.transform is not None:
            images = self.transform(images)
        if self.target_transform is not None:
            targets = self.target_transform(targets)
        item = (images, targets, index, nbytes) if self.with_index else (images, targets)
        return tuple(_to_numpy(x) for x in item) if piped else item


class EpochSampler(Sampler):
    """Indices of one rank's share of an epoch, in the order loaders.sampler gives (`shuffle`: any
    of its modes, with their options), a new order after each set_epoch(e). Across ranks 0..world-1
    every index comes exactly once per epoch; nothing is padded or repeated (torch's
    DistributedSampler pads), so shares differ by at most one index, except in the `shards` mode
    (option `shards`: the boundaries, e.g. a streaming reader's shards(); see shard_opts), where
    each rank takes whole shards, as our Loader's ranks do."""

    def __init__(self, n: int, shuffle: str = "shuffle", seed: int = 0, rank: int = 0, world: int = 1,
                 **order_opts):
        _sampler.shard(np.arange(0), rank, world)  # validates rank and world
        # validates the mode and its options (shard boundaries against n)
        _sampler.epoch_order(int(n) if shuffle == "shards" else 0, seed, 0, shuffle, **order_opts)
        self.n, self.shuffle, self.seed, self.rank, self.world = int(n), shuffle, seed, rank, world
        self.order_opts, self.epoch = order_opts, 0

    def set_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise UsageError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """This rank's indices for the current epoch, in reading order: what loaders.pipeline.Loader
        reads (loaders.stages.epoch_indices; in the `shards` mode each rank takes whole shards)."""
        return epoch_indices(self.n, self.seed, self.epoch, self.shuffle, self.rank, self.world, **self.order_opts)

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return (self.rank + 1) * self.n // self.world - self.rank * self.n // self.world


class BatchGroup(tuple):
    """Several consecutive batches of indices (lists of ints), read by one BatchDataset.__getitem__
    and carried out of a DataLoader worker as one item: what EpochBatchSampler(group=K) yields."""

    __slots__ = ()


class EpochBatchSampler(EpochSampler):
    """EpochSampler's indices cut into batches (lists of ints) of `batch_size`, the last one shorter
    unless drop_last. As `batch_sampler=` of a per-sample dataset, or as `sampler=` of a
    BatchDataset with batch_size=None.

    `group` K > 1 (for a BatchDataset only): it yields BatchGroups of K consecutive batches (the
    last group shorter), the same batches in the same order; len() is then the number of groups
    and num_batches() the number of batches."""

    def __init__(self, n: int, batch_size: int, drop_last: bool = False, group: int = 1, **kw):
        for name, value in (("batch_size", batch_size), ("group", group)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
        super().__init__(n, **kw)
        self.batch_size, self.drop_last, self.group = int(batch_size), drop_last, int(group)

    def __iter__(self):
        batches = (b.tolist() for b in _sampler.batches(self.order(), self.batch_size, self.drop_last))
        if self.group == 1:
            return batches
        return _groups(batches, self.group)

    def num_batches(self) -> int:
        share = super().__len__()
        return share // self.batch_size if self.drop_last else -(-share // self.batch_size)

    def __len__(self) -> int:
        return -(-self.num_batches() // self.group)


def _groups(batches, k: int):
    group = []
    for b in batches:
        group.append(b)
        if len(group) == k:
            yield BatchGroup(group)
            group = []
    if group:
        yield BatchGroup(group)


class IterableEpochDataset(_ReaderDataset, IterableDataset):
    """Batches read in epoch order, for `DataLoader(ds, batch_size=None, num_workers=K)`.

    Each iteration is one epoch: this rank's share of epoch_order(n, seed, epoch, shuffle) cut into
    batches, worker w of K reading batches w, w+K, w+2K, ... (torch.utils.data.get_worker_info).
    The DataLoader takes one item from each worker in turn, so batches arrive in the epoch's order.
    The epoch is set with set_epoch(e) and lives in shared memory, so persistent workers see it
    too (their copy of the dataset is never pickled again). Items are (images, targets) as
    BatchDataset gives them (with_index: also indices and payload bytes). For stream layouts,
    shuffle="shards" reads them in stream order (the reader's own shards, see shard_opts).
    """

    def __init__(self, reader: Reader, batch_size: int, shuffle: str = "shuffle", seed: int = 0, rank: int = 0,
                 world: int = 1, drop_last: bool = False, transform=None, target_transform=None,
                 output: str = "stored", channels_first: bool = False, with_index: bool = False, **order_opts):
        self._batches = BatchDataset(reader, transform, target_transform, output, channels_first, with_index)
        self._setup(reader, transform, target_transform, output, channels_first)
        self.order = EpochBatchSampler(len(reader), batch_size, drop_last, shuffle=shuffle, seed=seed, rank=rank,
                                       world=world, **shard_opts(reader, shuffle, order_opts))
        self._epoch = multiprocessing.RawValue("q", 0)  # shared with the workers

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)
        self._epoch.value = self.order.epoch

    def batches(self, worker: int = 0, workers: int = 1) -> list[list[int]]:
        """The batches worker `worker` of `workers` reads in the current epoch."""
        self.order.set_epoch(self._epoch.value)
        return _sampler.worker_share(list(self.order), worker, workers)

    def __iter__(self):
        info = get_worker_info()
        mine = self.batches(*((info.id, info.num_workers) if info is not None else (0, 1)))
        return (self._batches[b] for b in mine)

    def __len__(self) -> int:
        return len(self.order)


class _PackedBatch:
    """One or more batches as they leave a worker: for each, its targets, indices, payload bytes
    and pixels (one read_batch per batch) in one bytearray, pickled as that one buffer (no
    per-array pickling, no shared-memory segment) and unpickled in the main process straight
    into the batches' tensors (views of the buffer, no copy): a _Batches list of them."""

    def __init__(self, reader: Reader, batches: list, labels: np.ndarray, with_index: bool):
        spec, k = reader.spec, len(batches)
        lens = [len(b) for b in batches]
        b = sum(lens)
        # int64 targets, indices and per-batch bytes first: the pixels start 8-byte aligned
        self.buf = bytearray(8 * (2 * b + k) + b * spec.pixel_bytes)
        meta = np.frombuffer(self.buf, np.int64, count=2 * b + k)
        idx = np.concatenate(batches) if k > 1 else batches[0]
        meta[:b], meta[b:2 * b] = labels[idx], idx
        images = np.frombuffer(self.buf, spec.np_dtype, offset=8 * (2 * b + k)).reshape(b, *spec.shape)
        a = 0
        for j, n in enumerate(lens):
            meta[2 * b + j] = reader.read_batch(batches[j], images[a:a + n])[1]
            a += n
        self.lens, self.shape, self.dtype = tuple(lens), tuple(spec.shape), spec.np_dtype.str
        self.with_index = with_index

    def __reduce__(self):
        return _unpack_batch, (self.buf, self.lens, self.shape, self.dtype, self.with_index)

    def unpack(self):
        return _unpack_batch(self.buf, self.lens, self.shape, self.dtype, self.with_index)


class _Batches(list):
    """The batches of one packed item, each (images, targets[, indices, payload bytes]) as tensors
    (and an int): BatchLoader yields them one by one."""

    __slots__ = ()


def _unpack_batch(buf: bytearray, lens: tuple, shape: tuple, dtype: str, with_index: bool) -> _Batches:
    b, k = sum(lens), len(lens)
    meta = np.frombuffer(buf, np.int64, count=2 * b + k)
    pixels = np.frombuffer(buf, np.dtype(dtype), offset=8 * (2 * b + k)).reshape(b, *shape)
    from_numpy, out, a = torch.from_numpy, _Batches(), 0
    nbytes = meta[2 * b:].tolist()
    for j, n in enumerate(lens):
        images, targets = from_numpy(pixels[a:a + n]), from_numpy(meta[a:a + n])
        out.append((images, targets, from_numpy(meta[b + a:b + a + n]), nbytes[j]) if with_index else (images, targets))
        a += n
    return out


def _to_numpy(x):
    """A CPU tensor as the numpy array sharing its memory (pickled by value: no shm segment)."""
    return x.numpy() if torch.is_tensor(x) and x.device.type == "cpu" and not x.requires_grad else x


def _to_tensor(x):
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _keep(item):
    """collate_fn of batch datasets: the item as it is (already a batch; nothing re-stacked)."""
    return item


class BatchLoader(DataLoader):
    """A DataLoader over a dataset whose items are whole batches (BatchDataset, IterableEpochDataset):
    batch_size=None and collate_fn that keeps each item as it is, and small batches carried from
    the workers packed or as numpy arrays (see the module docstring), turned back into tensors
    here (and pinned here when pin_memory). Items are what the dataset gives: tensors. With an
    EpochBatchSampler(group=K), each item is K batches and this yields them one by one; len() is
    the number of batches either way."""

    def __init__(self, dataset, **kw):
        for name, want in (("batch_size", None), ("collate_fn", _keep)):
            if kw.setdefault(name, want) is not want:
                raise UsageError(f"BatchLoader's items are batches already: it takes no {name}")
        inner = getattr(dataset, "_batches", dataset)
        inner.numpy_transport = True
        sampler = kw.get("sampler")
        if getattr(sampler, "group", 1) > 1 and not (isinstance(inner, BatchDataset) and inner.packable()):
            raise UsageError("group > 1 (several batches per item) needs a BatchDataset of stored 8-bit pixels "
                             "without transforms")
        super().__init__(dataset, **kw)

    def __len__(self) -> int:
        sampler = self.sampler
        return sampler.num_batches() if isinstance(sampler, EpochBatchSampler) else super().__len__()

    def __iter__(self):
        pin = self.pin_memory and torch.cuda.is_available()
        for item in super().__iter__():
            if isinstance(item, _PackedBatch):  # num_workers=0: never pickled
                item = item.unpack()
            if isinstance(item, _Batches):
                if not pin:
                    yield from item
                    continue
            else:
                item = [tuple(_to_tensor(x) for x in item) if isinstance(item, tuple) else item]
            for batch in item:
                if pin and isinstance(batch, tuple):
                    batch = tuple(x.pin_memory() if torch.is_tensor(x) and not x.is_pinned() else x for x in batch)
                yield batch


def auto_group(dataset: "BatchDataset", batch_size: int) -> int:
    """batch_loader's group="auto": batches per item so an item holds about GROUP_BYTES of pixels
    (at most GROUP_MAX batches), for packable datasets whose batches are small (< SHM_MIN); else 1.
    Each item costs the DataLoader the same (an index put, a result get and unpickle, a worker
    round trip) whatever its size, and for small batches those costs are the whole epoch."""
    batch_bytes = batch_size * dataset.reader.spec.pixel_bytes
    if not dataset.packable() or batch_bytes >= SHM_MIN:
        return 1
    return max(1, min(GROUP_MAX, GROUP_BYTES // max(1, batch_bytes)))


def shard_opts(reader: Reader, shuffle: str, order_opts: dict | None) -> dict:
    """The order options for `reader`: in the `shards` mode, the reader's own shard boundaries
    (unless given), as loaders.pipeline.Loader takes them; a reader that is not a stream of shards
    is refused there, with one line."""
    opts = dict(order_opts or {})
    if shuffle == "shards" and "shards" not in opts:
        if not reader.supports_streaming:
            raise UsageError(f"the shards order needs a streaming layout; the {reader.layout} reader is not one "
                             f"(supports_streaming is False)")
        opts["shards"] = reader.shards()
    return opts


def batch_loader(reader: Reader, batch_size: int, *, shuffle: str = "shuffle", seed: int = 0, rank: int = 0,
                 world: int = 1, drop_last: bool = False, output: str = "stored", channels_first: bool = False,
                 transform=None, target_transform=None, with_index: bool = False, order_opts: dict | None = None,
                 group: int | str = "auto", **dataloader_kw) -> DataLoader:
    """A BatchLoader over BatchDataset: one read_batch per batch, not re-collated (batch_size=None,
    its sampler an EpochBatchSampler: call `loader.sampler.set_epoch(e)` before each epoch).
    `group`: batches per DataLoader item (each still one read_batch, yielded one by one, in the
    same order); "auto" (auto_group) packs small 8-bit batches into items of about GROUP_BYTES,
    so prefetch_factor then counts items of that many batches. `dataloader_kw` go to DataLoader
    (num_workers, persistent_workers, prefetch_factor, pin_memory...)."""
    ds = BatchDataset(reader, transform, target_transform, output, channels_first, with_index)
    if group == "auto":
        group = auto_group(ds, batch_size) if dataloader_kw.get("num_workers") else 1
    order = EpochBatchSampler(len(reader), batch_size, drop_last, group=group, shuffle=shuffle, seed=seed, rank=rank,
                              world=world, **shard_opts(reader, shuffle, order_opts))
    return BatchLoader(ds, sampler=order, **dataloader_kw)


def sample_loader(reader: Reader, batch_size: int, *, shuffle: str = "shuffle", seed: int = 0, rank: int = 0,
                  world: int = 1, drop_last: bool = False, output: str = "stored", channels_first: bool = False,
                  transform=None, target_transform=None, with_index: bool = False, order_opts: dict | None = None,
                  **dataloader_kw) -> DataLoader:
    """A DataLoader over TorchDataset, as most training scripts build one: one __getitem__ per
    sample, batches collated by torch's default_collate (its batch_sampler an EpochBatchSampler:
    call `loader.batch_sampler.set_epoch(e)` before each epoch)."""
    ds = TorchDataset(reader, transform, target_transform, output, channels_first, with_index)
    order = EpochBatchSampler(len(reader), batch_size, drop_last, shuffle=shuffle, seed=seed, rank=rank,
                              world=world, **shard_opts(reader, shuffle, order_opts))
    return DataLoader(ds, batch_sampler=order, **dataloader_kw)


# ---------------------------------------------------------------- the DataLoader as a pipeline

DATASETS = ("sample", "batch")
CONTEXTS = {"fork": "fork", "process": "fork", "spawn": "spawn"}


class DataLoaderPipeline:
    """torch.utils.data.DataLoader behind loaders.pipeline.Loader's interface (epoch(e) yields
    Batch(images, labels, indices, nbytes), worker_pids, close), so the bench times it with the
    same loop, checks the same every-index-once, and reads the same counters.

    `dataset` "sample": TorchDataset with batch_size (one __getitem__ per sample, default_collate);
    "batch": BatchDataset with batch_size=None (one read_batch per batch), `group` batches per
    DataLoader item (batch_loader's; "auto" by default: small 8-bit batches grouped, see the
    module docstring). Workers are processes (`worker_kind` fork or spawn), persistent across
    epochs, `prefetch` items each (prefetch_factor). Images are torch tensors, output "stored"
    (uint8 as uint8, 16-bit as int32). shuffle="shards" reads the reader's own shards (a streaming
    layout's; others are refused), ranks taking whole shards, as our Loader does.
    """

    def __init__(self, reader: Reader, dataset: str = "batch", batch_size: int = 32, workers: int = 0,
                 worker_kind: str = "fork", shuffle: str = "shuffle", seed: int = 0, prefetch: int = 2,
                 drop_last: bool = False, rank: int = 0, world: int = 1, pin_memory: bool = False,
                 group: int | str = "auto", **order_opts):
        if dataset not in DATASETS:
            raise UsageError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
        if workers and worker_kind not in CONTEXTS:
            raise UsageError(f"DataLoader workers are processes: worker_kind must be one of {', '.join(CONTEXTS)}, "
                             f"got {worker_kind!r}")
        worker_kind = reader.process_kind(CONTEXTS[worker_kind])  # spawned where the reader's library breaks on fork
        self.reader, self.dataset, self.workers = reader, dataset, workers
        kw = dict(num_workers=workers, pin_memory=pin_memory)
        if workers:
            kw.update(persistent_workers=True, prefetch_factor=prefetch,
                      multiprocessing_context=CONTEXTS[worker_kind])
        if dataset == "batch":
            kw["group"] = group
        make = batch_loader if dataset == "batch" else sample_loader
        self.loader = make(reader, batch_size, shuffle=shuffle, seed=seed, rank=rank, world=world, drop_last=drop_last,
                           with_index=True, order_opts=order_opts, **kw)
        self.order = self.loader.sampler if dataset == "batch" else self.loader.batch_sampler
        self.settings = {"dataset": dataset, "num_workers": workers, "persistent_workers": bool(workers),
                         "prefetch_factor": prefetch if workers else None, "pin_memory": pin_memory,
                         "multiprocessing_context": CONTEXTS[worker_kind] if workers else None,
                         "batch_size": None if dataset == "batch" else batch_size,
                         "batches_per_item": self.order.group if dataset == "batch" else 1, "torch": torch.__version__}

    @property
    def worker_pids(self) -> list[int]:
        """The DataLoader's worker processes (DataLoader keeps persistent ones in its private
        `_iterator._workers`; an empty list before the first epoch)."""
        workers = getattr(getattr(self.loader, "_iterator", None), "_workers", None) or []
        return [w.pid for w in workers if w.pid is not None]

    def epoch(self, epoch: int = 0):
        from .stages import Batch

        self.order.set_epoch(epoch)
        try:
            if self.dataset == "batch":
                for images, targets, index, nbytes in self.loader:
                    yield Batch(images, targets.numpy(), index.numpy(), nbytes)
            else:
                for images, meta in self.loader:
                    meta = meta.numpy()
                    yield Batch(images, meta[:, 0], meta[:, 1], int(meta[:, 2].sum()))
        except RuntimeError as exc:
            raise worker_error(exc) from None

    def __len__(self) -> int:
        return len(self.loader)  # batches (BatchLoader counts batches, not grouped items)

    def close(self) -> None:
        """Stop the workers (persistent ones live in the DataLoader's iterator) and close the reader."""
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader._iterator = None
        self.reader.close()


def worker_error(exc: RuntimeError) -> Exception:
    """A DataLoader worker's failure as one of ours: DataLoader re-raises a worker's exception as a
    RuntimeError holding its traceback as text when the type cannot be rebuilt from a message (ours
    cannot); the traceback's last line is our one-line message, naming the sample and its file."""
    text = str(exc)
    last = text.strip().splitlines()[-1] if text.strip() else ""
    for name in ("SampleError", "CorpusError", "LayoutbenchError"):
        head = f"generator.errors.{name}: "
        if last.startswith(head):
            return LayoutbenchError(f"in a DataLoader worker: {last[len(head):]}")
    return exc


# ---------------------------------------------------------------- the host-to-device copy

class DeviceStage:
    """Each batch to `device` as training moves it: copied into a pinned staging buffer (kept and
    reused per batch shape and dtype; a batch already pinned, by pin_memory, is used as it is),
    then copied with non_blocking=True on a side stream, then that stream synchronized, so each
    batch is on the device before the next is asked for. Counts bytes, transfers, and seconds:
    `stage_s` (host copy into staging) and `copy_s` (the transfer through its synchronize).

    device "cpu" runs the same staging logic without pinning or streams (nothing to pin for, and
    CPU-only torch cannot pin): the tests use it. A CUDA device needs torch.cuda.is_available().
    """

    def __init__(self, device: str = "cuda"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise UsageError(f"device {device}: CUDA is not available here (torch {torch.__version__}, "
                             f"torch.cuda.is_available() is False)")
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.staging: dict[tuple, torch.Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self.bytes, self.transfers, self.stage_s, self.copy_s = 0, 0, 0.0, 0.0

    def _staging(self, t: torch.Tensor) -> torch.Tensor:
        key = (tuple(t.shape), t.dtype)
        buf = self.staging.get(key)
        if buf is None:
            buf = self.staging[key] = torch.empty(t.shape, dtype=t.dtype, pin_memory=self.cuda)
        return buf

    def __call__(self, images) -> torch.Tensor:
        """`images` (a tensor or numpy array) on the device, once the copy has finished."""
        import time

        clock = time.perf_counter
        t0 = clock()
        src = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        if not (self.cuda and src.is_pinned()):
            src = self._staging(src).copy_(src)
        t1 = clock()
        dst = torch.empty(src.shape, dtype=src.dtype, device=self.device)
        if self.cuda:
            with torch.cuda.stream(self.stream):
                dst.copy_(src, non_blocking=True)
            self.stream.synchronize()
        else:
            dst.copy_(src)
        t2 = clock()
        self.bytes += src.numel() * src.element_size()
        self.transfers += 1
        self.stage_s += t1 - t0
        self.copy_s += t2 - t1
        return dst

    def wrap(self, batches):
        """Batches as they come, each with its images copied to the device first (images None: as is)."""
        for b in batches:
            if b.images is not None:
                b.images = self(b.images)
            yield b

    def floor(self, nbytes: int = 256 << 20, repeats: int = 3) -> tuple[int, float]:
        """(bytes, best seconds) of one large copy from pinned memory: this link's ceiling."""
        import time

        src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.cuda)
        src.fill_(1)
        dst = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            if self.cuda:
                with torch.cuda.stream(self.stream):
                    dst.copy_(src, non_blocking=True)
                self.stream.synchronize()
            else:
                dst.copy_(src)
            best = min(best, time.perf_counter() - t0)
        return nbytes, best

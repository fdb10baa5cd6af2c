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
  and become tensors by torch.from_numpy there (README: the figures).
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

OUTPUTS = ("stored", "float")
SHM_MIN = 1 << 20  # batches of at least this many bytes leave a worker in shared memory, smaller ones pickled

__all__ = ["OUTPUTS", "BatchDataset", "EpochBatchSampler", "EpochSampler", "IterableEpochDataset", "TorchDataset",
           "BatchLoader", "batch_loader", "sample_loader", "tiff_loader", "to_tensor"]


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
    8-bit RGB (README). 16-bit comes out as int32 (same values), 8-bit as uint8."""
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

    def __getitem__(self, indices):
        reader = self.reader
        idx = reader.check_indices(indices)
        piped = self.numpy_transport and len(idx) * reader.spec.pixel_bytes < SHM_MIN and get_worker_info() is not None
        if piped and self.transform is None and self.target_transform is None and self.output == "stored" \
                and reader.spec.np_dtype.itemsize == 1:
            return _PackedBatch(reader, idx, self._label_np, self.with_index)
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
    DistributedSampler pads), so shares differ by at most one index."""

    def __init__(self, n: int, shuffle: str = "shuffle", seed: int = 0, rank: int = 0, world: int = 1,
                 **order_opts):
        _sampler.shard(np.arange(0), rank, world)  # validates rank and world
        _sampler.epoch_order(0, seed, 0, shuffle, **order_opts)  # validates the mode and its options
        self.n, self.shuffle, self.seed, self.rank, self.world = int(n), shuffle, seed, rank, world
        self.order_opts, self.epoch = order_opts, 0

    def set_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise UsageError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """This rank's indices for the current epoch, in reading order."""
        full = _sampler.epoch_order(self.n, self.seed, self.epoch, self.shuffle, **self.order_opts)
        return _sampler.shard(full, self.rank, self.world)

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return (self.rank + 1) * self.n // self.world - self.rank * self.n // self.world


class EpochBatchSampler(EpochSampler):
    """EpochSampler's indices cut into batches (lists of ints) of `batch_size`, the last one shorter
    unless drop_last. As `batch_sampler=` of a per-sample dataset, or as `sampler=` of a
    BatchDataset with batch_size=None."""

    def __init__(self, n: int, batch_size: int, drop_last: bool = False, **kw):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        super().__init__(n, **kw)
        self.batch_size, self.drop_last = int(batch_size), drop_last

    def __iter__(self):
        return (b.tolist() for b in _sampler.batches(self.order(), self.batch_size, self.drop_last))

    def __len__(self) -> int:
        share = super().__len__()
        return share // self.batch_size if self.drop_last else -(-share // self.batch_size)


class IterableEpochDataset(_ReaderDataset, IterableDataset):
    """Batches read in epoch order, for `DataLoader(ds, batch_size=None, num_workers=K)`.

    Each iteration is one epoch: this rank's share of epoch_order(n, seed, epoch, shuffle) cut into
    batches, worker w of K reading batches w, w+K, w+2K, ... (torch.utils.data.get_worker_info).
    The DataLoader takes one item from each worker in turn, so batches arrive in the epoch's order.
    The epoch is set with set_epoch(e) and lives in shared memory, so persistent workers see it
    too (their copy of the dataset is never pickled again). Items are (images, targets) as
    BatchDataset gives them (with_index: also indices and payload bytes). For stream layouts,
    pass the order mode that reads them in stream order.
    """

    def __init__(self, reader: Reader, batch_size: int, shuffle: str = "shuffle", seed: int = 0, rank: int = 0,
                 world: int = 1, drop_last: bool = False, transform=None, target_transform=None,
                 output: str = "stored", channels_first: bool = False, with_index: bool = False, **order_opts):
        self._batches = BatchDataset(reader, transform, target_transform, output, channels_first, with_index)
        self._setup(reader, transform, target_transform, output, channels_first)
        self.order = EpochBatchSampler(len(reader), batch_size, drop_last, shuffle=shuffle, seed=seed, rank=rank,
                                       world=world, **order_opts)
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
    """A small batch as it leaves a worker: targets, indices and pixels read into one bytearray,
    pickled as that one buffer (no per-array pickling, no shared-memory segment) and unpickled in
    the main process straight into the batch's tensors (views of the buffer, no copy)."""

    def __init__(self, reader: Reader, idx: np.ndarray, labels: np.ndarray, with_index: bool):
        spec, b = reader.spec, len(idx)
        self.buf = bytearray(16 * b + b * spec.pixel_bytes)  # int64 targets and indices first: aligned pixels
        meta = np.frombuffer(self.buf, np.int64, count=2 * b)
        meta[:b], meta[b:] = labels[idx], idx
        images = np.frombuffer(self.buf, spec.np_dtype, offset=16 * b).reshape(b, *spec.shape)
        _, self.nbytes = reader.read_batch(idx, images)
        self.b, self.shape, self.dtype, self.with_index = b, tuple(spec.shape), spec.np_dtype.str, with_index

    def __reduce__(self):
        return _unpack_batch, (self.buf, self.b, self.shape, self.dtype, self.nbytes, self.with_index)

    def unpack(self):
        return _unpack_batch(self.buf, self.b, self.shape, self.dtype, self.nbytes, self.with_index)


def _unpack_batch(buf: bytearray, b: int, shape: tuple, dtype: str, nbytes: int, with_index: bool):
    meta = torch.from_numpy(np.frombuffer(buf, np.int64, count=2 * b))
    images = torch.from_numpy(np.frombuffer(buf, np.dtype(dtype), offset=16 * b).reshape(b, *shape))
    return (images, meta[:b], meta[b:], nbytes) if with_index else (images, meta[:b])


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
    the workers as numpy arrays (see the module docstring), turned back into tensors here by
    torch.from_numpy (and pinned here when pin_memory). Items are what the dataset gives: tensors."""

    def __init__(self, dataset, **kw):
        for name, want in (("batch_size", None), ("collate_fn", _keep)):
            if kw.setdefault(name, want) is not want:
                raise UsageError(f"BatchLoader's items are batches already: it takes no {name}")
        inner = getattr(dataset, "_batches", dataset)
        inner.numpy_transport = True
        super().__init__(dataset, **kw)

    def __iter__(self):
        pin = self.pin_memory and torch.cuda.is_available()
        for item in super().__iter__():
            if isinstance(item, _PackedBatch):  # num_workers=0: never pickled
                item = item.unpack()
            if isinstance(item, tuple):
                item = tuple(_to_tensor(x) for x in item)
                if pin:
                    item = tuple(x.pin_memory() if torch.is_tensor(x) and not x.is_pinned() else x for x in item)
            yield item


def batch_loader(reader: Reader, batch_size: int, *, shuffle: str = "shuffle", seed: int = 0, rank: int = 0,
                 world: int = 1, drop_last: bool = False, output: str = "stored", channels_first: bool = False,
                 transform=None, target_transform=None, with_index: bool = False, order_opts: dict | None = None,
                 **dataloader_kw) -> DataLoader:
    """A BatchLoader over BatchDataset: one read_batch per batch, not re-collated (batch_size=None,
    its sampler an EpochBatchSampler: call `loader.sampler.set_epoch(e)` before each epoch).
    `dataloader_kw` go to DataLoader (num_workers, persistent_workers, prefetch_factor, pin_memory...)."""
    ds = BatchDataset(reader, transform, target_transform, output, channels_first, with_index)
    order = EpochBatchSampler(len(reader), batch_size, drop_last, shuffle=shuffle, seed=seed, rank=rank,
                              world=world, **(order_opts or {}))
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
                              world=world, **(order_opts or {}))
    return DataLoader(ds, batch_sampler=order, **dataloader_kw)


# ---------------------------------------------------------------- the DataLoader as a pipeline

DATASETS = ("sample", "batch")
CONTEXTS = {"fork": "fork", "process": "fork", "spawn": "spawn"}


class DataLoaderPipeline:
    """torch.utils.data.DataLoader behind loaders.pipeline.Loader's interface (epoch(e) yields
    Batch(images, labels, indices, nbytes), worker_pids, close), so the bench times it with the
    same loop, checks the same every-index-once, and reads the same counters.

    `dataset` "sample": TorchDataset with batch_size (one __getitem__ per sample, default_collate);
    "batch": BatchDataset with batch_size=None (one read_batch per batch). Workers are processes
    (`worker_kind` fork or spawn), persistent across epochs, `prefetch` batches each
    (prefetch_factor). Images are torch tensors, output "stored" (uint8 as uint8, 16-bit as int32).
    """

    def __init__(self, reader: Reader, dataset: str = "batch", batch_size: int = 32, workers: int = 0,
                 worker_kind: str = "fork", shuffle: str = "shuffle", seed: int = 0, prefetch: int = 2,
                 drop_last: bool = False, rank: int = 0, world: int = 1, pin_memory: bool = False, **order_opts):
        if dataset not in DATASETS:
            raise UsageError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
        if workers and worker_kind not in CONTEXTS:
            raise UsageError(f"DataLoader workers are processes: worker_kind must be one of {', '.join(CONTEXTS)}, "
                             f"got {worker_kind!r}")
        self.reader, self.dataset, self.workers = reader, dataset, workers
        kw = dict(num_workers=workers, pin_memory=pin_memory)
        if workers:
            kw.update(persistent_workers=True, prefetch_factor=prefetch,
                      multiprocessing_context=CONTEXTS[worker_kind])
        make = batch_loader if dataset == "batch" else sample_loader
        self.loader = make(reader, batch_size, shuffle=shuffle, seed=seed, rank=rank, world=world, drop_last=drop_last,
                           with_index=True, order_opts=order_opts, **kw)
        self.order = self.loader.sampler if dataset == "batch" else self.loader.batch_sampler
        self.settings = {"dataset": dataset, "num_workers": workers, "persistent_workers": bool(workers),
                         "prefetch_factor": prefetch if workers else None, "pin_memory": pin_memory,
                         "multiprocessing_context": CONTEXTS[worker_kind] if workers else None,
                         "batch_size": None if dataset == "batch" else batch_size, "torch": torch.__version__}

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
        return len(self.order)

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

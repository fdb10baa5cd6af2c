"""What the ecosystem's contenders share: our codec as a decoder their libraries call, the Source
(one contender over one corpus, made once per run) and the loader that runs its DataLoader behind
loaders.pipeline.Loader's interface.

Map-style contenders (files, hdf5, lmdb, npy, arrow, parquet, sqlite, zarr) give the DataLoader a
Dataset whose item `pos` is (pixels, label, pos), read by their library, and a batch sampler of
this project's epoch orders (loaders.torch.EpochBatchSampler: a new shuffled order each epoch,
seeded, every index once across workers and ranks), since a map-style dataset's order is the
DataLoader's sampler's, not the library's. Items are collated by torch's default_collate, as a
plain `DataLoader(dataset, batch_size=...)` does; workers persist across epochs, so each worker's
lazily opened handles stay open, as the libraries' docs advise (h5py, py-lmdb: open in the worker,
keep it). Streaming contenders (tar, tfrecord) give it their library's IterableDataset, shuffled by
the library's own means, and their batches' indices come from what each sample carries (a tar
member's key, the Example's image/index).

A batch's payload bytes are the manifest's sizes of the samples it delivered (so no contender does
extra work to count them).
"""

from __future__ import annotations

import abc
import importlib
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from generator.codec import Codec
from generator.errors import SampleError

# Our codec returns a read-only view of the payload where it can (an uncompressed TIFF's pixels);
# torch.as_tensor then warns once per process that the array is not writable. default_collate copies
# it into the batch, which is never written through the view, so that warning says nothing here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

CONTEXTS = {"fork": "fork", "process": "fork", "thread": "fork", "spawn": "spawn"}


class PayloadDecoder:
    """Our codec (generator.codec) as a picklable callable: (payload bytes, index) -> (H, W, C)
    pixels; a damaged payload is a SampleError naming the layout, the index and `where`. Samples of
    their own shapes (size distributions, ingested folders) are decoded with their manifest shape
    and dtype, as our readers decode them."""

    def __init__(self, manifest, layout: str, where: str):
        self.spec, self.layout, self.where = manifest.spec, layout, where
        self.shapes, self.dtypes = manifest.shapes, manifest.dtypes
        self._codec = None

    def __getstate__(self):
        return {**self.__dict__, "_codec": None}

    @property
    def name(self) -> str:
        """What the results record as the decoder."""
        return f"layoutbench codec {Codec(self.spec).kind} (generator.codec)"

    def __call__(self, payload, index: int) -> np.ndarray:
        codec = self._codec
        if codec is None:
            codec = self._codec = Codec(self.spec)
        try:
            if self.shapes is None:
                return codec.decode(payload)
            return codec.decode(payload, tuple(self.shapes[index]),
                                None if self.dtypes is None else np.dtype(self.dtypes[index]).newbyteorder("<"))
        except ValueError as exc:
            raise SampleError(self.layout, index, self.where, f"undecodable: {exc}") from None


def collate_variable(items):
    """collate_fn for samples of their own shapes (no one batch tensor holds them): the images as a
    list of tensors, labels and positions collated as default_collate collates them."""
    images = [torch.as_tensor(np.asarray(item[0])) for item in items]
    rest = default_collate([item[1:] for item in items])
    return (images, *rest)


class Source(abc.ABC):
    """One contender over one corpus (a subclass per library). Made once per run: what its users'
    code builds once per training (ImageFolder's listing, a WebDataset pipeline). `loader(workers,
    rank)` gives an EcosystemLoader of one or more epochs."""

    library = ""  # as results name it (the registry's Contender.library)
    modules: tuple[str, ...] = ()  # whose versions the results record
    persistent = True  # persistent_workers (the docs' advice: handles opened in a worker stay open)

    def __init__(self, reader, batch_size: int = 32, *, shuffle: str = "shuffle", seed: int = 0, prefetch: int = 2,
                 drop_last: bool = False, world: int = 1, worker_kind: str = "fork", pin_memory: bool = False):
        self.reader, self.root, self.manifest = reader, reader.root, reader.manifest
        self.n = len(reader)
        self.batch_size, self.shuffle, self.seed, self.prefetch = batch_size, shuffle, seed, prefetch
        self.drop_last, self.world, self.pin_memory = drop_last, world, pin_memory
        self.context = CONTEXTS.get(worker_kind, worker_kind)
        self.sizes = np.asarray(self.manifest.sizes, np.int64)
        self.raw_pixels = False  # True where the library hands out pixels (nothing to decode)

    @classmethod
    def refusal(cls, manifest) -> str | None:
        """None when this contender can read the corpus of `manifest`; else one line why not."""
        return None

    # ------------------------------------------------------------ what a subclass gives

    @abc.abstractmethod
    def dataset(self, rank: int):
        """The Dataset (map-style: ds[pos] -> (pixels, label, pos)) or IterableDataset of rank `rank`."""

    def extra_settings(self) -> dict:
        return {}

    # ------------------------------------------------------------ shared

    def decoder(self, where: str) -> PayloadDecoder:
        return PayloadDecoder(self.manifest, self.reader.layout, where)

    def versions(self) -> dict:
        out = {"torch": torch.__version__}
        for name in self.modules:
            module = importlib.import_module(name)
            if name == "sqlite3":  # the module has no version of its own: the SQLite library's
                out["sqlite"] = module.sqlite_version
            elif "." not in name:
                out[name] = str(getattr(module, "__version__", "?"))
        return out

    def loader_kw(self, workers: int) -> dict:
        kw = dict(num_workers=workers, pin_memory=self.pin_memory)
        if workers:
            kw.update(persistent_workers=self.persistent, prefetch_factor=self.prefetch,
                      multiprocessing_context=self.context)
        return kw

    def settings(self, workers: int, order: str) -> dict:
        decoder = "none: the library hands out the stored pixels" if self.raw_pixels else \
            PayloadDecoder(self.manifest, self.reader.layout, "").name
        return {"library": self.library, "versions": self.versions(), "decoder": decoder, "order": order,
                "batch_size": self.batch_size, "num_workers": workers,
                "persistent_workers": bool(workers) and self.persistent,
                "prefetch_factor": self.prefetch if workers else None,
                "multiprocessing_context": self.context if workers else None, "pin_memory": self.pin_memory,
                **self.extra_settings()}

    def collate(self):
        return collate_variable if self.manifest.shapes is not None else default_collate

    def positions(self) -> np.ndarray | None:
        """index -> the dataset's position of that sample, where they differ (ImageFolder's)."""
        return None

    def loader(self, workers: int, rank: int = 0) -> "EcosystemLoader":
        """A DataLoader over the map-style dataset, in this project's epoch orders (see the module
        docstring); streaming sources override this."""
        from loaders.torch import EpochBatchSampler, shard_opts

        order = EpochBatchSampler(self.n, self.batch_size, self.drop_last, shuffle=self.shuffle, seed=self.seed,
                                  rank=rank, world=self.world, **shard_opts(self.reader, self.shuffle, None))
        ds = self.dataset(rank)
        to_pos = self.positions()
        batches = order if to_pos is None else PositionBatches(order, to_pos)
        dl = DataLoader(ds, batch_sampler=batches, collate_fn=self.collate(), **self.loader_kw(workers))
        to_index = None if to_pos is None else np.argsort(to_pos)
        return EcosystemLoader(dl, self.sizes, order.set_epoch, to_index, ds,
                               self.settings(workers, f"loaders.sampler {self.shuffle} (seed {self.seed}) as the "
                                                      f"DataLoader's batch_sampler"))


class PositionBatches:
    """A batch sampler of sample indices (EpochBatchSampler) given as the dataset's positions of
    those samples: the same samples, in the same order as our loader reads them."""

    def __init__(self, order, to_pos: np.ndarray):
        self.order, self.to_pos = order, to_pos

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __iter__(self):
        to_pos = self.to_pos
        for batch in self.order:
            yield to_pos[batch].tolist()

    def __len__(self) -> int:
        return len(self.order)


class EcosystemLoader:
    """A contender's DataLoader behind loaders.pipeline.Loader's interface: epoch(e) yields
    Batch(images (a tensor, or a list of them), labels, indices, payload bytes)."""

    def __init__(self, dataloader, sizes: np.ndarray, set_epoch, to_index: np.ndarray | None, dataset, settings: dict,
                 indices=None, torch_loader=None):
        self.dataloader, self.sizes, self._set_epoch, self.to_index = dataloader, sizes, set_epoch, to_index
        self.dataset, self.settings = dataset, settings
        self._indices = indices  # a streaming source's: batch -> (images, labels, indices)
        # the torch DataLoader itself, where `dataloader` wraps one (webdataset's WebLoader)
        self.torch_loader = dataloader if torch_loader is None else torch_loader

    @property
    def worker_pids(self) -> list[int]:
        """The DataLoader's worker processes (persistent ones live in its private `_iterator`)."""
        workers = getattr(getattr(self.torch_loader, "_iterator", None), "_workers", None) or []
        return [w.pid for w in workers if w.pid is not None]

    def epoch(self, epoch: int = 0):
        from loaders.stages import Batch
        from loaders.torch import worker_error

        if self._set_epoch is not None:
            self._set_epoch(epoch)
        sizes, to_index = self.sizes, self.to_index
        try:
            for item in self.dataloader:
                if self._indices is not None:
                    images, labels, idx = self._indices(item)
                else:
                    images, labels, pos = item
                    idx = pos.numpy()
                    labels = labels.numpy()
                    if to_index is not None:
                        idx = to_index[idx]
                yield Batch(images, labels, idx, int(sizes[idx].sum()))
        except RuntimeError as exc:
            raise worker_error(exc) from None

    def close(self) -> None:
        """Stop the workers and close what the dataset opened in this process (workers=0)."""
        it = getattr(self.torch_loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.torch_loader._iterator = None
        close = getattr(self.dataset, "close", None)
        if close is not None:
            close()


class LazyDataset(torch.utils.data.Dataset):
    """A map-style dataset whose handles are opened on first use in each process (a DataLoader
    worker opens its own; h5py's, py-lmdb's and sqlite3's docs ask for that: a handle must not
    cross a fork) and never pickled; `close()` closes this process's."""

    handles: tuple[str, ...] = ()

    def __init__(self, n: int, decode: PayloadDecoder | None):
        self.n, self.decode = n, decode
        for name in self.handles:
            setattr(self, name, None)

    def __len__(self) -> int:
        return self.n

    def __getstate__(self):
        return {**self.__dict__, **{name: None for name in self.handles}}

    def close(self) -> None:
        for name in self.handles:
            h = getattr(self, name, None)
            setattr(self, name, None)
            if h is not None and hasattr(h, "close"):
                h.close()

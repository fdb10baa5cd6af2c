"""tfrecord: the tfrecord package's PyTorch reader (no TensorFlow), as its README shows it for
several files: `MultiTFRecordDataset(data_pattern, index_pattern, splits, description,
shuffle_queue_size, transform, infinite=False)` in a DataLoader with batch_size. Every shard is a
split weighted by its sample count, read with its `.tfindex` (the index the package's tfrecord2idx
writes; it lets each DataLoader worker read its own part of every shard), records interleaved at
random across shards and shuffled through a queue of 1,024; `transform` decodes the Example's
`image/encoded` with our codec and takes `image/class/label` and `image/index` (the sample's index,
which the Example carries; generator/layouts/tfrecord.py).

The package seeds numpy's generator from the worker's seed on every pass over the data; with
persistent workers (no restart per epoch) that would repeat one order every epoch, so the epoch is
added to that seed, as DistributedSampler.set_epoch does for map-style datasets: a new order each
epoch, reproducible for a seed. That is the only change to the package's __iter__."""

from __future__ import annotations

import multiprocessing
import warnings

import numpy as np
import tfrecord
from tfrecord import iterator_utils, reader
from tfrecord.torch.dataset import MultiTFRecordDataset
from torch.utils.data import get_worker_info

from generator.errors import UsageError

from .common import EcosystemLoader, Source

QUEUE = 1024  # shuffle_queue_size: the README's
# the package warns when a worker's part of the corpus is shorter than the queue (it then shuffles all of it)
warnings.filterwarnings("ignore", message="Number of elements in the iterator is less than the queue size")
DESCRIPTION = {"image/encoded": "byte", "image/class/label": "int", "image/index": "int"}


class ExampleDecoder:
    """The reader's `transform`: an Example's features -> (pixels, label, index)."""

    def __init__(self, decode):
        self.decode = decode

    def __call__(self, features):
        i = int(features["image/index"][0])
        return self.decode(features["image/encoded"], i), int(features["image/class/label"][0]), i


class EpochMultiTFRecordDataset(MultiTFRecordDataset):
    """MultiTFRecordDataset whose shuffle seed takes the epoch (set_epoch; see the module docstring)."""

    def __init__(self, *args, seed: int = 0, **kw):
        super().__init__(*args, **kw)
        self.seed = seed
        self._epoch = multiprocessing.RawValue("q", 0)  # shared with forked workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    def __iter__(self):
        info = get_worker_info()
        base, shard = (info.seed, (info.id, info.num_workers)) if info is not None else (self.seed, None)
        np.random.seed((base + 1_000_003 * self._epoch.value) % np.iinfo(np.uint32).max)
        it = reader.multi_tfrecord_loader(
            data_pattern=self.data_pattern, index_pattern=self.index_pattern, splits=self.splits,
            description=self.description, sequence_description=self.sequence_description,
            compression_type=self.compression_type, infinite=self.infinite, shard=shard)
        if self.shuffle_queue_size:
            it = iterator_utils.shuffle_iterator(it, self.shuffle_queue_size)
        if self.transform:
            it = map(self.transform, it)
        return it


class TFRecordSource(Source):
    library = "tfrecord"
    modules = ("tfrecord",)

    @classmethod
    def refusal(cls, manifest) -> str | None:
        """The package reads an index with np.loadtxt(...)[:, 0], which fails on a shard of one record
        (loadtxt gives a 1-D array), and without the index its workers would each read every record."""
        count, per = manifest.spec.count, (manifest.layouts.get("tfrecord") or {}).get("samples_per_shard")
        if isinstance(per, int) and per >= 1 and (per == 1 or count % per == 1):
            return ("the tfrecord ecosystem loader (the tfrecord package) cannot read this corpus: it has a shard of "
                    "one record, whose index the package cannot parse; regenerate the tfrecord layout with more "
                    "samples per shard (--shard-samples)")
        return None

    def __init__(self, reader, batch_size: int = 32, **kw):
        super().__init__(reader, batch_size, **kw)
        if (why := self.refusal(self.manifest)) is not None:
            raise UsageError(why)
        self.reader_shards = reader.shards()
        self.names = [reader.shard_path(k).stem for k in range(reader.nshards)]
        self.top = str(self.root / "tfrecord")
        self.shuffled = self.shuffle != "sequential"

    def versions(self) -> dict:
        return {**super().versions(), "tfrecord": getattr(tfrecord, "__version__", None) or _dist_version("tfrecord")}

    def dataset(self, rank: int):
        counts = np.diff(self.reader_shards)
        mine = range(rank, len(self.names), self.world)  # ranks take every world-th shard
        splits = {self.names[k]: float(counts[k]) for k in mine}
        return EpochMultiTFRecordDataset(
            f"{self.top}/{{}}.tfrecord", f"{self.top}/{{}}.tfindex", splits, DESCRIPTION,
            shuffle_queue_size=QUEUE if self.shuffled else None, transform=ExampleDecoder(self.decoder(self.top)),
            infinite=False, seed=self.seed)

    def loader(self, workers: int, rank: int = 0) -> EcosystemLoader:
        from torch.utils.data import DataLoader

        ds = self.dataset(rank)
        dl = DataLoader(ds, batch_size=self.batch_size, collate_fn=self.collate(), **self.loader_kw(workers))
        order = (f"the tfrecord package's: shards interleaved at random, shuffle_queue_size={QUEUE} (numpy seeded "
                 f"from the worker's seed and the epoch)" if self.shuffled else "the tfrecord package's, unshuffled")
        return EcosystemLoader(dl, self.sizes, ds.set_epoch, None, None, self.settings(workers, order))

    def extra_settings(self) -> dict:
        return {"dataset": f"tfrecord.torch.MultiTFRecordDataset({len(self.names)} shards with .tfindex, "
                           f"infinite=False, shuffle_queue_size={QUEUE if self.shuffled else None}, "
                           f"transform=our codec)"}


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"

"""tar: webdataset's WebDataset pipeline, as its README builds one for training:

    wds.WebDataset(shards, shardshuffle=N, detshuffle=True, seed=S, nodesplitter=..., workersplitter=split_by_worker)
       .shuffle(1000).decode(our codec).to_tuple("<ext>", "cls", "__key__").batched(B)
    wds.WebLoader(dataset, batch_size=None, num_workers=W, persistent_workers=True, prefetch_factor=P)

Each DataLoader worker streams whole shards (split_by_worker), shuffles its shards (detshuffle:
seeded, a new order each epoch) and its samples through webdataset's 1,000-sample buffer, decodes
the payload member with our codec (`.decode(handler)`: webdataset's handler protocol, (extension,
bytes) -> pixels; the `.cls` member by webdataset's own basic handler), and batches in the dataset
(what the README advises over batching in the DataLoader). The order is webdataset's, not ours; each
sample's index is its key (the tar members are named by the index, generator/layouts/tar.py).
Ranks take every world-th shard (webdataset's split_by_node, given our rank). Samples of their own
shapes (or an ingested corpus's) are decoded after to_tuple, by key, with their manifest shape."""

from __future__ import annotations

import functools
from itertools import islice

import numpy as np
import webdataset as wds

from generator.errors import UsageError
from generator.layouts.tar import member_ext

from .common import EcosystemLoader, Source

SHUFFLE_BUFFER = 1000  # webdataset's README's .shuffle(1000)


def split_by_rank(rank: int, world: int, src):
    """webdataset's nodesplitter for rank `rank` of `world` (its split_by_node, given our rank)."""
    yield from islice(src, rank, None, world)


class PayloadHandler:
    """A webdataset decode handler: our codec for the payload member, None (the next handler's
    turn: webdataset's basic handlers decode .cls) for any other."""

    def __init__(self, decode, exts):
        self.decode, self.exts = decode, frozenset(exts)

    def __call__(self, key: str, data):
        if key.rpartition(".")[2].lower() in self.exts:
            return self.decode(data, -1)
        return None


class DecodeByKey:
    """(payload, cls, key) -> (pixels, label, key), the payload decoded with its sample's own shape."""

    def __init__(self, decode):
        self.decode = decode

    def __call__(self, item):
        payload, cls, key = item
        return self.decode(payload, int(key)), int(cls), key


def collate_list(samples):
    """webdataset's batched() collation for images of their own shapes: a list of them."""
    images, labels, keys = zip(*samples)
    return list(images), np.asarray(labels, np.int64), list(keys)


def batch_of(item):
    images, labels, keys = item
    idx = np.fromiter((int(k) for k in keys), np.int64, len(keys))
    return images, np.asarray(labels, np.int64), idx


class WebDatasetSource(Source):
    library = "webdataset"
    modules = ("webdataset",)

    def __init__(self, reader, batch_size: int = 32, **kw):
        super().__init__(reader, batch_size, **kw)
        m = self.manifest
        self.urls = [str(reader.shard_path(k)) for k in range(reader.nshards)]
        formats = sorted(set(m.formats)) if m.formats is not None else [None]
        self.exts = sorted({member_ext(m.spec, m.version, f) for f in formats})
        self.by_key = m.shapes is not None  # samples of their own shapes: decoded with each one's
        self.shuffled = self.shuffle != "sequential"

    def dataset(self, rank: int):
        decode = self.decoder(str(self.root / "tar"))
        ds = wds.WebDataset(self.urls, shardshuffle=len(self.urls) if self.shuffled else False,
                            detshuffle=self.shuffled, seed=self.seed,
                            nodesplitter=functools.partial(split_by_rank, rank, self.world),
                            workersplitter=wds.split_by_worker)
        if self.shuffled:
            ds = ds.shuffle(SHUFFLE_BUFFER)
        fields = (";".join(self.exts), "cls", "__key__")
        if self.by_key:
            ds = ds.to_tuple(*fields).map(DecodeByKey(decode))
        else:
            ds = ds.decode(PayloadHandler(decode, self.exts)).to_tuple(*fields)
        return ds.batched(self.batch_size, partial=True,
                          **({"collation_fn": collate_list} if self.by_key else {}))

    def loader(self, workers: int, rank: int = 0) -> EcosystemLoader:
        mine = len(self.urls[rank::self.world])
        if mine < max(1, workers):
            raise UsageError(f"webdataset gives each DataLoader worker whole shards, and rank {rank} has {mine} of the "
                             f"tar layout's {len(self.urls)} shards for {workers} workers; give fewer --workers or "
                             f"regenerate the corpus with more shards (--shard-samples)")
        ds = self.dataset(rank)
        dl = wds.WebLoader(ds, batch_size=None, **self.loader_kw(workers))
        order = (f"webdataset's: shardshuffle={len(self.urls)} (detshuffle, seed {self.seed}), "
                 f".shuffle({SHUFFLE_BUFFER}) per worker" if self.shuffled else "webdataset's, unshuffled")
        return EcosystemLoader(dl, self.sizes, None, None, None, self.settings(workers, order), indices=batch_of,
                               torch_loader=dl.pipeline[0])

    def extra_settings(self) -> dict:
        how = ".to_tuple(...).map(decode by key)" if self.by_key else ".decode(our codec).to_tuple(...)"
        return {"dataset": f"wds.WebDataset({len(self.urls)} shards){'.shuffle(1000)' if self.shuffled else ''}"
                           f"{how}.batched({self.batch_size}); wds.WebLoader(batch_size=None)",
                "members": list(self.exts)}

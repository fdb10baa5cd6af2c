"""litdata: LitData's own loader, as its README builds one for training:

    ds = StreamingDataset(input_dir, shuffle=True, seed=S)    # a local directory: read in place
    StreamingDataLoader(ds, batch_size=B, num_workers=W)

LitData orders the samples itself (its chunks shuffled per epoch and shared out between the
DataLoader workers, the items of each chunk shuffled), reading each item with its own chunk
reader; the dataset is subclassed as LitData's README does for a transform, so `__getitem__`
returns (our codec's pixels, label, the sample's global index: LitData's ChunkedIndex.index).
StreamingDataLoader starts a new epoch (a new order) at each iteration; its workers persist
across epochs as every contender's do (each worker's dataset counts its own epochs and reshuffles).
"""

from __future__ import annotations

import numpy as np
from litdata import StreamingDataLoader, StreamingDataset

from .common import EcosystemLoader, Source


class DecodedStreamingDataset(StreamingDataset):
    """StreamingDataset whose items are (pixels, label, index): its item (payload, label) decoded
    by our codec."""

    def __init__(self, input_dir: str, decode, **kw):
        super().__init__(input_dir, **kw)
        self.decode = decode

    def __getitem__(self, index):
        payload, label = super().__getitem__(index)
        i = int(getattr(index, "index", index))
        return self.decode(payload, i), label, i


def batch_of(item):
    images, labels, idx = item
    return images, np.asarray(labels, np.int64), np.asarray(idx, np.int64)


class LitDataSource(Source):
    library = "litdata"
    modules = ("litdata",)

    def dataset(self, rank: int):
        where = str(self.root / "litdata")
        return DecodedStreamingDataset(where, self.decoder(where), shuffle=self.shuffle != "sequential",
                                       seed=self.seed)

    def loader(self, workers: int, rank: int = 0) -> EcosystemLoader:
        from generator.errors import UsageError

        if self.world != 1:
            raise UsageError("the litdata ecosystem loader runs one rank here (LitData takes its ranks from "
                             "torch.distributed); give --world 1")
        ds = self.dataset(rank)
        dl = StreamingDataLoader(ds, batch_size=self.batch_size, collate_fn=self.collate(), **self.loader_kw(workers))
        order = (f"litdata's: StreamingDataset(shuffle=True, seed={self.seed}), a new order each epoch"
                 if self.shuffle != "sequential" else "litdata's, unshuffled")
        return EcosystemLoader(dl, self.sizes, None, None, ds, self.settings(workers, order), indices=batch_of)

    def extra_settings(self) -> dict:
        return {"dataset": "litdata.StreamingDataset(litdata/, shuffle, seed), __getitem__ decoding with our codec; "
                           "litdata.StreamingDataLoader(batch_size, num_workers, persistent_workers)"}

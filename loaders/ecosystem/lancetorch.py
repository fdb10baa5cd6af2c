"""lance: pylance's own torch integration, as its docs give random access with DataLoader workers.

    ds = lance.torch.data.SafeLanceDataset(uri)            # count_rows in the main process only
    DataLoader(ds, batch_sampler=..., num_workers=W,       # lance.torch.data.get_safe_loader's settings:
               multiprocessing_context="spawn",           #   spawn (lance is not fork-safe),
               persistent_workers=True)                    #   persistent workers

SafeLanceDataset opens the dataset lazily in each worker and serves a whole batch with one
`take(indices)` (its `__getitems__`, which the DataLoader calls with the batch sampler's indices),
rows as Python dicts; each payload is decoded by our codec. Batches come from this project's
epoch orders (loaders.torch.EpochBatchSampler), as the other map-style contenders' do. The
workers are always spawned, whatever --worker-kind, as get_safe_loader spawns them: the settings
record it.
"""

from __future__ import annotations

from lance.torch.data import SafeLanceDataset

from loaders.lance import check_not_forked, ran_pylance

from .common import Source


class DecodedLanceDataset(SafeLanceDataset):
    """SafeLanceDataset whose rows come out as (pixels, label, index): its own batched take, then
    our codec on each payload."""

    def __init__(self, uri: str, decode):
        check_not_forked("the lance layout")
        ran_pylance()  # SafeLanceDataset counts the rows here, in the main process
        super().__init__(uri)
        self.decode = decode

    def __getitems__(self, indices):
        if self._ds is None:
            check_not_forked("the lance layout")  # a forked worker (spawn is the default here)
            ran_pylance()
        rows = super().__getitems__(list(indices))
        return [(self.decode(row["payload"], i), row["label"], i) for i, row in zip(indices, rows)]

    def close(self) -> None:
        self._ds = None


class LanceSource(Source):
    library = "pylance (lance.torch SafeLanceDataset)"
    modules = ("lance",)

    def __init__(self, reader, batch_size: int = 32, **kw):
        super().__init__(reader, batch_size, **kw)
        self.context = "spawn"  # get_safe_loader's: lance is not fork-safe

    def dataset(self, rank: int):
        uri = str(self.root / "corpus.lance")
        return DecodedLanceDataset(uri, self.decoder(uri))

    def extra_settings(self) -> dict:
        return {"dataset": "map-style: lance.torch.data.SafeLanceDataset(corpus.lance), one take(indices) per batch "
                           "(__getitems__); DataLoader with get_safe_loader's spawn context and persistent workers"}

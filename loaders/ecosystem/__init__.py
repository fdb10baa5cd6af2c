"""The ecosystem's loaders: each layout read by the library its users read it with, run as that
library's documentation recommends, through torch.utils.data.DataLoader with workers, behind
loaders.pipeline.Loader's interface (epoch(e) yields loaders.stages.Batch, worker_pids, close,
settings), so `bench run --loader ecosystem` times them with the same loop and checks the same
every-index-once as ours.

    layout    contender (module)                 how it reads one of our samples
    files     torchvision ImageFolder (folder)   the class tree listed once; loader= our codec on the file's bytes
    tar       webdataset (webds)                 WebDataset(shards).shuffle(1000).decode(our codec).batched(B)
    tfrecord  tfrecord (tfrecords)               MultiTFRecordDataset over the shards and their .tfindex, shuffle queue
    hdf5      h5py (h5)                          the file opened per worker; a dataset slice per sample
    lmdb      py-lmdb (lmdbtxn)                  the env opened per worker (readonly, lock=False); txn.get per sample
    npy       numpy (memmap)                     np.load(mmap_mode="r") (np.memmap for data.bin); a slice per sample
    arrow     pyarrow (arrowpq)                  the IPC file memory-mapped per worker; a row's buffer per sample
    parquet   pyarrow.parquet (arrowpq)          ParquetFile per worker; the sample's row group read (the last kept)
    sqlite    sqlite3 (sqlrows)                  a read-only connection per worker; SELECT per sample
    zarr      zarr-python (zarrarray)            the group opened per worker; array[i] per sample
    lance     pylance (lancetorch)               lance.torch's SafeLanceDataset, spawned workers; one take per batch
    litdata   litdata (litstream)                StreamingDataset(shuffle) + StreamingDataLoader; LitData's own order

This module only names them (no library is imported here): `contender(layout)`, and each entry's
`missing()`, one line naming what installs the library, or None. The modules import torch and
their library; `open_contender(reader, ...)` opens one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from generator import libraries


@dataclass(frozen=True)
class Contender:
    """One layout's ecosystem loader: its library (as results name it), the modules it imports,
    where its Source class lives ("module:Class", imported lazily), and how it is run."""

    layout: str
    library: str  # as the results and the docs name it
    modules: tuple[str, ...]  # what it imports beside torch (versions recorded)
    source: str  # "loaders.ecosystem.<module>:<Class>"
    how: str  # one line: how it is run (docs/layouts.md's table)

    def missing(self) -> str | None:
        """None when torch and the library import here; else one line naming what installs them."""
        return libraries.missing(f"the {self.layout} ecosystem loader ({self.library})", ("torch", *self.modules))

    def source_class(self):
        module, _, name = self.source.partition(":")
        return getattr(importlib.import_module(module), name)

    def preload(self) -> None:
        """Import its module and libraries now (a cold epoch must not read their code as sample bytes)."""
        for name in self.modules:
            importlib.import_module(name)
        importlib.import_module(self.source.partition(":")[0])


_E = "loaders.ecosystem"
CONTENDERS = {c.layout: c for c in (
    Contender("files", "torchvision ImageFolder", ("torchvision",), f"{_E}.folder:FolderSource",
              "ImageFolder over files/ (its tree listed once per run), loader= our codec; DataLoader batch_sampler"),
    Contender("tar", "webdataset", ("webdataset",), f"{_E}.webds:WebDatasetSource",
              "WebDataset(shards, shardshuffle, detshuffle).shuffle(1000).decode(our codec).to_tuple.batched; "
              "WebLoader(batch_size=None)"),
    Contender("tfrecord", "tfrecord", ("tfrecord", "tfrecord.torch"), f"{_E}.tfrecords:TFRecordSource",
              "tfrecord.torch.MultiTFRecordDataset over the shards with their .tfindex, shuffle_queue_size=1024, "
              "transform= our codec"),
    Contender("hdf5", "h5py", ("h5py",), f"{_E}.h5:H5Source",
              "h5py.File opened lazily per worker; payload[offsets[i]:offsets[i+1]] (or images[i]) per sample"),
    Contender("lmdb", "py-lmdb", ("lmdb",), f"{_E}.lmdbtxn:LMDBSource",
              "lmdb.open(readonly, lock=False, readahead=False, meminit=False) per worker; txn.get per sample"),
    Contender("npy", "numpy memmap", ("numpy",), f"{_E}.memmap:MemmapSource",
              "np.load(mmap_mode='r') (np.memmap for data.bin) per worker; a slice per sample"),
    Contender("arrow", "pyarrow", ("pyarrow",), f"{_E}.arrowpq:ArrowSource",
              "pa.ipc.open_file(pa.memory_map(path)).read_all() per worker; the row's payload buffer per sample"),
    Contender("parquet", "pyarrow.parquet", ("pyarrow", "pyarrow.parquet"), f"{_E}.arrowpq:ParquetSource",
              "pq.ParquetFile per worker; the sample's row group read (the last one kept), its row per sample"),
    Contender("sqlite", "sqlite3", ("sqlite3",), f"{_E}.sqlrows:SQLiteSource",
              "sqlite3.connect('file:...?mode=ro') per worker; SELECT label, payload WHERE idx = ? per sample"),
    Contender("zarr", "zarr-python", ("zarr",), f"{_E}.zarrarray:ZarrSource",
              "zarr.open_group(mode='r') per worker; images[i] (or payload[i]) per sample"),
    Contender("lance", "pylance (lance.torch SafeLanceDataset)", ("lance", "lance.torch.data"),
              f"{_E}.lancetorch:LanceSource",
              "lance.torch.data.SafeLanceDataset, one take(indices) per batch (__getitems__); DataLoader with "
              "get_safe_loader's settings: spawn context, persistent workers"),
    Contender("litdata", "litdata", ("litdata",), f"{_E}.litstream:LitDataSource",
              "litdata.StreamingDataset(litdata/, shuffle=True, seed) + StreamingDataLoader(batch_size, num_workers, "
              "persistent_workers); "
              "items decoded by our codec in __getitem__"),
)}


def contender(layout: str) -> Contender | None:
    """The ecosystem loader of `layout`, or None when it has none (a layout added at run time)."""
    return CONTENDERS.get(layout)


def why_not(layout: str, manifest=None) -> str | None:
    """None when `layout`'s ecosystem loader can run here (and read the corpus of `manifest`, when
    given); else one line saying why not."""
    c = contender(layout)
    if c is None:
        return f"the {layout} layout has no ecosystem loader (loaders/ecosystem lists them)"
    why = c.missing()
    if why is None and manifest is not None:
        why = c.source_class().refusal(manifest)
    return why


def open_contender(reader, batch_size: int = 32, **kw):
    """`reader`'s layout's contender as a Source over the same corpus (made once per run: what its
    users' code makes once per training, such as ImageFolder's listing); `source.loader(workers,
    rank)` gives the loader of one or more epochs. `kw`: shuffle, seed, prefetch, drop_last,
    world, worker_kind, pin_memory (loaders.ecosystem.common.Source)."""
    from generator.errors import UsageError

    if (why := why_not(reader.layout)) is not None:
        raise UsageError(why)
    return contender(reader.layout).source_class()(reader, batch_size=batch_size, **kw)

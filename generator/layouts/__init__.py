"""The layout registry and the writer interface every layout implements.

One `Layout` entry per layout: its id, a one-line description, where its writer and reader
classes live (named lazily as "module:Class", so `generator` never imports `loaders` and nothing
imports h5py or lmdb until a layout is used), and the libraries it reads with (pre-imported
before a cold epoch, their versions recorded in results). Capabilities are flags on the writer
and reader classes (`supports_*`, as zarr's Store ABC has them); generic code checks flags and
never a layout's name. Everything that needs "all layouts" asks `layouts()`.

Adding a layout = a writer module (a LayoutWriter subclass), a reader module (a
loaders.base.Reader subclass), one `register(Layout(...))` call, and one test module that
subclasses tests/conformance.py's ReaderSuite and WriterSuite. Nothing else changes.

The writer contract. The driver (generator.build) calls `begin()`, which returns the first index
still to write (the resume point); then either
- `put_many(indices, payloads, labels)` with contiguous ranges in increasing index order, in the
  driver's process (single-writer layouts), or, when the class sets `supports_parallel_write`,
- `write_part(indices, payloads, labels)` for each range of `parts(workers)`, in any order, from
  worker processes or MPI ranks (the writer is pickled to them: it holds no open handle between
  calls);
then `end(labels)`, which makes the layout durable and publishes it under `target`. A kill at any
point leaves nothing incomplete under a final name; `abort()` releases handles after a failure
and keeps what a rerun can resume from.
"""

from __future__ import annotations

import abc
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .. import libraries
from ..codec import Codec
from ..errors import UsageError
from ..spec import Spec


class LayoutWriter(abc.ABC):
    name: ClassVar[str]  # the layout id
    target: ClassVar[str]  # the path inside the corpus root once published
    supports_parallel_write: ClassVar[bool] = False  # parts() and write_part() instead of put_many()
    settings: ClassVar[tuple[str, ...]] = ()  # generator options this writer takes (e.g. shard_mb)
    # Samples of varying shape (a size distribution, an ingested folder): encoded payloads (TIFF,
    # PNG, JPEG, WebP) are bytes per sample, which a layout storing bytes per sample holds at any
    # shape; `supports_variable_raw` False: raw pixels go into one dense (N, H, W, C) array, which
    # cannot hold them. A layout that holds neither sets supports_variable_shapes False.
    supports_variable_shapes: ClassVar[bool] = True
    supports_variable_raw: ClassVar[bool] = True

    def __init__(self, root: Path, spec: Spec, codec: Codec, **options):
        """`options`: values of the generator settings this class names in `settings` (None: default)."""
        unknown = set(options) - set(self.settings)
        if unknown:
            raise UsageError(f"the {self.name} layout takes no setting {', '.join(sorted(unknown))}")
        self.root, self.spec, self.codec, self.options = Path(root), spec, codec, dict(options)

    @classmethod
    def refusal(cls, spec: Spec) -> str | None:
        """None when this layout holds `spec`'s samples; else one line naming the layout, why, and
        what to use instead (the supports_variable_* flags; generic code never checks names)."""
        if not spec.variable:
            return None
        holders = [k for k, w in writer_classes().items()
                   if w.supports_variable_shapes and (w.supports_variable_raw or spec.payload != "raw")]
        if not cls.supports_variable_shapes:
            return (f"the {cls.name} layout stores samples of one shape and cannot hold samples of varying shape "
                    f"(--size-dist {spec.sizes.split(':')[0]}); use --size-dist fixed, or one of: {', '.join(holders)}")
        if spec.payload == "raw" and not cls.supports_variable_raw:
            return (f"the {cls.name} layout stores raw pixels as one (N, H, W, C) array and cannot hold raw samples of "
                    f"varying shape; use an encoded payload (--payload tiff, png) for {cls.name}, or one of: "
                    f"{', '.join(holders)}")
        return None

    @abc.abstractmethod
    def begin(self) -> int:
        """Prepare to write; return the first index still to write (resume point)."""

    def put_many(self, indices: range, payloads: list, labels: list) -> None:
        """Write samples `indices` (contiguous, increasing; single-writer layouts)."""
        raise NotImplementedError(f"{self.name} writes in parts (supports_parallel_write)")

    def parts(self, workers: int) -> list[range]:
        """Contiguous index ranges covering every sample once, each written by one write_part call
        (parallel writers). At least `workers` of them when there are that many samples."""
        from ..pool import chunks

        return chunks(0, self.spec.count, self.spec, 4 * workers)

    def write_part(self, indices: range, payloads: list, labels: list) -> None:
        """Write one part, in a worker process or MPI rank; a complete part left by an earlier run
        may be kept. Nothing incomplete ever appears under a final name."""
        raise NotImplementedError(f"{self.name} has one writer (put_many)")

    @abc.abstractmethod
    def end(self, labels) -> None:
        """Store the labels (uint16 array, every sample), flush, fsync, publish under `target`."""

    def abort(self) -> None:
        """Release handles after a failure; keep what is resumable."""

    @classmethod
    @abc.abstractmethod
    def estimate_bytes(cls, spec: Spec, codec: Codec) -> int:
        """Upper estimate of the bytes this layout takes on disk."""

    def facts(self) -> dict:
        """Layout facts for the manifest beyond the generic ones (e.g. how it is sharded)."""
        return {}

    def paths(self) -> list[Path]:
        """Every path this layout owns in the corpus (published and partial): --force removes them."""
        return [self.root / self.target]

    @classmethod
    def snapshot(cls, root: Path) -> dict[str, bytes]:
        """What the published layout holds, for comparing two writes of it: by default every regular
        file under `target`, relative path -> bytes. A layout whose library may write other bytes
        for the same records (another version, page reuse) returns its records instead."""
        top = Path(root) / cls.target
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else []
        return {str(p.relative_to(root)): p.read_bytes() for p in files}


@dataclass(frozen=True)
class Layout:
    """One registry entry (see the module docstring)."""

    id: str
    description: str
    writer: str  # "module:Class" of its LayoutWriter
    reader: str  # "module:Class" of its loaders.base.Reader
    libraries: tuple[str, ...] = ()  # modules its reader and writer import
    extra_versions: str | None = None  # "module:function" -> {name: version} beyond __version__
    extra: str | None = None  # the pip extra of layoutbench that installs its libraries, if optional

    def missing(self) -> str | None:
        """None when every library imports here (generator.libraries); else one line saying what to install."""
        return libraries.missing(f"the {self.id} layout", self.libraries, self.extra)

    def writer_class(self) -> type[LayoutWriter]:
        return _resolve(self.writer)

    def reader_class(self) -> type:
        return _resolve(self.reader)

    def preload(self) -> None:
        """Import the libraries now (a cold epoch must not count their code pages as sample bytes)."""
        for name in self.libraries:
            importlib.import_module(name)

    def versions(self) -> dict[str, str]:
        out = {}
        for name in self.libraries:
            out[name] = str(getattr(importlib.import_module(name), "__version__", "?"))
        if self.extra_versions:
            out.update(_resolve(self.extra_versions)())
        return out

    def capabilities(self) -> dict[str, bool]:
        """Every supports_* flag of its writer and reader classes."""
        flags = {}
        for cls in (self.writer_class(), self.reader_class()):
            flags.update({k: bool(getattr(cls, k)) for k in dir(cls) if k.startswith("supports_")})
        return flags


def _resolve(where: str):
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


_REGISTRY: dict[str, Layout] = {}


def register(layout: Layout, replace: bool = False) -> Layout:
    """Add a layout to the registry (at import time for the built-in ones, or at run time)."""
    if layout.id in _REGISTRY and not replace:
        raise ValueError(f"layout {layout.id!r} is already registered")
    if not layout.id.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"a layout id is letters, digits, - and _, got {layout.id!r}")
    _REGISTRY[layout.id] = layout
    return layout


def unregister(layout_id: str) -> None:
    _REGISTRY.pop(layout_id, None)


def layouts() -> dict[str, Layout]:
    """Every registered layout, in registration order."""
    return dict(_REGISTRY)


def layout_ids(available: bool = False) -> tuple[str, ...]:
    """Registered layout ids; with available=True only those whose libraries are installed."""
    return tuple(k for k, v in _REGISTRY.items() if not available or v.missing() is None)


def installed(names, explicit: bool, prog: str) -> list[str]:
    """The layouts of `names` whose libraries import here. One the user named (`explicit`) that
    cannot is a UsageError with Layout.missing's line; of a default set, each that cannot is left
    out with that line on stderr, after `prog` (the command saying it)."""
    kept = []
    for name in names:
        why = get_layout(name).missing()
        if why is None:
            kept.append(name)
        elif explicit:
            raise UsageError(why)
        else:
            print(f"{prog}: left out {name}: {why}", file=sys.stderr, flush=True)
    return kept


def get_layout(layout_id: str) -> Layout:
    try:
        return _REGISTRY[layout_id]
    except KeyError:
        raise UsageError(f"unknown layout {layout_id!r}; choose from: {', '.join(_REGISTRY)}") from None


def writer_classes() -> dict[str, type[LayoutWriter]]:
    return {k: v.writer_class() for k, v in _REGISTRY.items()}


def payload_estimate(spec: Spec, codec: Codec) -> int:
    """Bytes of one payload: exact when uncompressed, an upper bound when deflated; an ingested
    corpus's: its files' mean size (what a layout of all of them holds on average)."""
    if spec.source is not None:
        from ..pool import SOURCES

        entries = SOURCES.get(spec) or ()
        return sum(e.size for e in entries) // max(1, len(entries)) + 1024
    return codec.fixed_size or (spec.pixel_bytes + spec.pixel_bytes // 100 + 1024)


def disk_usage(path: Path) -> tuple[int, int]:
    """(bytes allocated on disk, number of regular files) under path. One directory open at a time
    (a tree of 65,535 class directories must not need as many descriptors)."""
    if path.is_file():
        return path.stat().st_blocks * 512, 1
    # A directory handle, so each stat looks up one name rather than walking the whole path.
    if not path.is_dir():
        return 0, 0
    total = files = 0
    todo = [os.fspath(path)]
    while todo:
        top = todo.pop()
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(os.path.join(top, entry.name))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                        files += 1
        finally:
            os.close(fd)
    return total, files


register(Layout("files", "one image file per sample in an ImageFolder tree: files/<label>/<index>.<tif|png|jpg|webp|raw>",
                "generator.layouts.files:FilesWriter", "loaders.files:FilesReader"))
register(Layout("hdf5", "one HDF5 file, corpus.h5: payloads back to back, offsets and labels",
                "generator.layouts.hdf5:HDF5Writer", "loaders.hdf5:HDF5Reader", libraries=("h5py",),
                extra_versions="loaders.hdf5:library_versions"))
register(Layout("lmdb", "one LMDB environment, lmdb/: key = index (8 bytes, big-endian), value = payload",
                "generator.layouts.lmdb:LMDBWriter", "loaders.lmdb:LMDBReader", libraries=("lmdb",),
                extra_versions="loaders.lmdb:library_versions"))
register(Layout("npy", "numpy files, npy/: raw images.npy (N x H x W x C), else data.bin + offsets.npy (indexed binary)",
                "generator.layouts.npy:NpyWriter", "loaders.npy:NpyReader"))
register(Layout("arrow", "one Arrow IPC file, corpus.arrow: payload (large_binary) and label columns in ~64 MiB record batches",
                "generator.layouts.arrow:ArrowWriter", "loaders.arrow:ArrowReader", libraries=("pyarrow",),
                extra="arrow"))
register(Layout("parquet", "one Parquet file, corpus.parquet: payload and label columns in row groups of ~8 MiB or 1,024 rows, uncompressed",
                "generator.layouts.parquet:ParquetWriter", "loaders.parquet:ParquetReader", libraries=("pyarrow",),
                extra="arrow"))
register(Layout("sqlite", "one SQLite database, corpus.sqlite: table samples(idx INTEGER PRIMARY KEY, label, payload BLOB)",
                "generator.layouts.sqlite:SQLiteWriter", "loaders.sqlite:SQLiteReader", libraries=("sqlite3",),
                extra_versions="loaders.sqlite:library_versions"))
register(Layout("zarr", "one zarr v3 group, corpus.zarr/: images (N, H, W, C) sharded, one inner chunk per image; labels",
                "generator.layouts.zarr:ZarrWriter", "loaders.zarr:ZarrReader", libraries=("zarr",),
                extra_versions="loaders.zarr:library_versions", extra="zarr"))
register(Layout("tar", "WebDataset tar shards, tar/shard-NNNNNN.tar: members <key>.cls and <key>.<tif|png|jpg|webp|raw>, an offset index per shard",
                "generator.layouts.tar:TarWriter", "loaders.tar:TarReader"))
register(Layout("tfrecord", "TFRecord shards of tf.train.Example, tfrecord/shard-NNNNNN.tfrecord, a .tfindex per shard",
                "generator.layouts.tfrecord:TFRecordWriter", "loaders.tfrecord:TFRecordReader",
                libraries=("crc32c",), extra="records", extra_versions="loaders.tfrecord:library_versions"))
register(Layout("lance", "one Lance dataset, corpus.lance/, written by pylance: payload and label columns, fragments of ~256 MiB",
                "generator.layouts.lance:LanceWriter", "loaders.lance:LanceReader", libraries=("lance", "pyarrow"),
                extra="lance"))
register(Layout("litdata", "LitData optimized chunks, litdata/chunk-0-K.bin + index.json, written by litdata's BinaryWriter: items (payload, label) in ~64 MiB chunks",
                "generator.layouts.litdata:LitDataWriter", "loaders.litdata:LitDataReader", libraries=("litdata",),
                extra="litdata"))

"""Readers of a corpus stored under an S3 prefix (uploaded with `python -m generator.objectstore
upload DIR s3://BUCKET/PREFIX`), every request through one generator.objectstore Store (counted,
retried, one-line errors).

    reader = open_s3_corpus("s3://bucket/corpora/mnist", "tar")   # or loaders.open_corpus(url, ...)

Which layouts read over S3 and how (one reader class each, loaders/s3/<id>.py; docs/usage.md
has the table): files one GET per sample; tar, tfrecord, npy, arrow, hdf5 their index or
metadata once per process, then one ranged GET per sample (tar in the `shards` order: one
streaming GET per shard instead, tarstream.py); parquet one ranged GET per row group; lmdb and
sqlite staged (downloaded to a temporary directory, then read locally: staged.py). A batch's
samples that lie back to back in an object come in one GET, and a batch's requests are in
flight together (loaders.s3.base.INFLIGHT threads per process). zarr is refused in one line.
"""

from __future__ import annotations

import json

from generator.errors import CorpusError, UsageError
from generator.manifest import MANIFEST, MANIFEST_MAX_BYTES, Manifest

SUPPORTED = {"files": "loaders.s3.files:S3FilesReader", "tar": "loaders.s3.tar:S3TarReader",
             "npy": "loaders.s3.npy:S3NpyReader", "tfrecord": "loaders.s3.tfrecord:S3TFRecordReader",
             "parquet": "loaders.s3.parquet:S3ParquetReader", "arrow": "loaders.s3.arrow:S3ArrowReader",
             "hdf5": "loaders.s3.hdf5:S3HDF5Reader",
             "lmdb": "loaders.s3.staged:S3StagedLMDB", "sqlite": "loaders.s3.staged:S3StagedSQLite"}


def supported_layouts() -> tuple[str, ...]:
    return tuple(SUPPORTED)


def refusal(layout: str, url) -> str | None:
    """One line saying why `layout` cannot be read at `url` over S3 (None: it can)."""
    if layout in SUPPORTED:
        return None
    why = (f"the {layout} layout is not read over S3 yet: copy the corpus here with "
           f"`python -m generator.objectstore download {url} DIR` and read DIR")
    return f"{url}: {why}; over S3 layoutbench reads {', '.join(SUPPORTED)}"


def reader_class(layout: str):
    import importlib

    module, name = SUPPORTED[layout].split(":")
    return getattr(importlib.import_module(module), name)


def store_of(url):
    from generator.objectstore.store import Store

    return Store(url)


def read_s3_manifest(url, store=None) -> Manifest:
    """The manifest of the corpus at `url`, checked as a local one is (CorpusError in one line)."""
    from generator.objectstore.store import BucketMissing, ObjectMissing

    store = store or store_of(url)
    where = store.url.of(MANIFEST)
    try:
        size = store.head(MANIFEST)
    except BucketMissing:
        raise
    except ObjectMissing:
        raise CorpusError(f"{where} is missing at {store.config.where}: {store.url} is not a corpus (or its upload "
                          f"did not finish): `python -m generator.objectstore upload DIR {store.url}`") from None
    if size > MANIFEST_MAX_BYTES:
        raise CorpusError(f"{where} is {size:,} bytes, more than a manifest can be: not a corpus of ours")
    raw = store.get(MANIFEST, expected_size=size)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorpusError(f"{where} cannot be read ({' '.join(str(exc).split())[:200]}); upload the corpus "
                          f"again") from None
    return Manifest.from_dict(data, where)


def open_s3_corpus(url, layout: str, *, verify: bool = False, store=None, manifest=None):
    """A reader of `layout` of the corpus at the S3 URL `url` (UsageError for a layout not read over S3)."""
    from generator.layouts import layouts

    from generator.objectstore.store import parse_url

    parse_url(str(url))
    if layout not in layouts():
        raise UsageError(f"unknown layout {layout!r}; choose from: {', '.join(layouts())}")
    why = refusal(layout, url)
    if why is not None:
        raise UsageError(why)
    store = store or store_of(url)
    manifest = manifest or read_s3_manifest(url, store)
    if layout not in manifest.layouts:
        have = ", ".join(manifest.layouts) or "none"
        raise CorpusError(f"{url}: the {layout} layout is not complete in this corpus (complete: {have}); "
                          f"generate it locally with --layouts {layout} and upload again")
    return reader_class(layout)(store, manifest, verify=verify)

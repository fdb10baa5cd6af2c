"""The storages a run can read from, by name (RunSpec.storage): the registry of Storage classes
(bench.run.storage's LocalStorage, bench.run.s3storage's S3Storage), and what a --corpus names."""

from __future__ import annotations

from generator.manifest import read_manifest
from generator.objectstore.store import is_s3_url
from loaders.s3 import read_s3_manifest

from .s3storage import S3Storage
from .storage import LocalStorage, Storage

STORAGE_CLASSES = {cls.name: cls for cls in (LocalStorage, S3Storage)}


def storage_for(name: str, corpus, evict: str, **options) -> Storage:
    """The Storage `name` (a RunSpec.storage) over `corpus` (`options`: the storage's own, e.g.
    S3Storage's data_dir)."""
    return STORAGE_CLASSES[name](corpus, evict, **options)


def storage_name(corpus) -> str:
    """Which storage a --corpus names: an s3:// URL is "s3", a directory "local"."""
    return "s3" if is_s3_url(corpus) else "local"


def corpus_manifest(corpus):
    """The manifest of a corpus directory or of a corpus under an S3 prefix."""
    if storage_name(corpus) == "s3":
        return read_s3_manifest(corpus)
    return read_manifest(corpus)

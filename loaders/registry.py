"""Layout id -> reader class (from the layout registry), and open_corpus: the one way to get a reader."""

from __future__ import annotations

import os

from generator.errors import CorpusError, UsageError
from generator.objectstore.store import is_s3_url
from generator.layouts import get_layout, layouts
from generator.manifest import read_manifest

from .base import Reader


def readers() -> dict[str, type[Reader]]:
    """Every registered layout's reader class (their modules import h5py, lmdb... only when used)."""
    return {k: v.reader_class() for k, v in layouts().items()}


def open_corpus(root: str | os.PathLike, layout: str, *, verify: bool = False) -> Reader:
    """A reader of `layout` in the corpus at `root` (a directory, or an s3:// URL: loaders.s3). Cheap:
    handles open on first read.

    Refuses (UsageError) a layout whose libraries do not import here, naming what installs them;
    refuses (CorpusError) a directory without a complete manifest, a manifest of another
    version, or a layout the manifest does not list as complete.
    """
    if is_s3_url(root):  # a corpus under an S3 prefix: loaders.s3
        from .s3 import open_s3_corpus

        return open_s3_corpus(root, layout, verify=verify)
    known = readers()
    if layout not in known:
        raise UsageError(f"unknown layout {layout!r}; choose from: {', '.join(known)}")
    if (why := get_layout(layout).missing()) is not None:
        raise UsageError(why)
    manifest = read_manifest(root)
    if layout not in manifest.layouts:
        have = ", ".join(manifest.layouts) or "none"
        raise CorpusError(f"{root}: the {layout} layout is not complete in this corpus (complete: {have}); "
                          f"generate it with python -m generator ... --layouts {layout}")
    return known[layout](root, manifest, verify=verify)

"""The capped regime's floor (bench/probe/cappedfloor.py) on its own, with no cgroup: each pass
reads every sample's stored bytes once, at the threads and batch asked for, and a layout that
cannot say where its samples lie has none."""

from __future__ import annotations

import h5py
import pytest

from bench.probe.cappedfloor import capped_floor
from loaders import open_corpus


@pytest.mark.parametrize("layout", ["files", "npy", "hdf5", "lmdb", "tar"])
@pytest.mark.parametrize("streams, batch", [(1, 8), (2, 5)])
def test_every_sample_once_a_pass(corpus, layout, streams, batch):
    root = corpus("varjpeg")
    r = open_corpus(root, layout)
    if layout not in r.manifest.layouts:
        pytest.skip(f"{layout} not installed")
    paths = [p for spans in r.extents(list(range(len(r)))) for p, _, _ in spans]
    f = capped_floor(r, sorted(set(paths)), layout, streams, batch)
    assert (f.layout, f.cache, f.way, f.streams, f.depth) == (layout, "capped", "extents-advise", streams, batch)
    assert f.bytes == sum(r.manifest.sizes) and f.reads == len(r) and f.seconds > 0
    r.close()


def test_a_layout_that_cannot_say_where_its_samples_lie_has_none(corpus_copy):
    root = corpus_copy("deflate")
    with h5py.File(root / "corpus.h5", "r+") as f:  # filtered by HDF5: read through h5py, no extents
        data = f["payload"][()]
        del f["payload"]
        f.create_dataset("payload", data=data, chunks=(4096,), compression="gzip")
    r = open_corpus(root, "hdf5")
    assert capped_floor(r, [root / "corpus.h5"], "hdf5", 1, 8) is None
    r.close()

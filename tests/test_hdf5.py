"""The hdf5 layout: the conformance suite plus its two read paths (mapped and h5py)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from conformance import ReaderSuite, WriterSuite

from generator.errors import SampleError
from loaders import open_corpus


def _offsets(root, fn):
    with h5py.File(root / "corpus.h5", "r+") as f:
        offsets = f["offsets"][()]
        fn(offsets, f["payload"].size)
        f["offsets"][...] = offsets


class TestHDF5(ReaderSuite):
    layout = "hdf5"

    def make_missing(self, root, index):
        def past_the_end(offsets, size):  # the sample's bytes lie outside the payload dataset
            offsets[index + 1] = size + 100
        _offsets(root, past_the_end)

    def make_truncated(self, root, index):
        def shorter(offsets, size):
            offsets[index + 1] -= 10
        _offsets(root, shorter)

    def overwrite(self, root, index, offset, data):
        with h5py.File(root / "corpus.h5", "r") as f:
            at = f["payload"].id.get_offset() + int(f["offsets"][index]) + offset
        fd = os.open(root / "corpus.h5", os.O_WRONLY)
        try:
            os.pwrite(fd, data, at)
        finally:
            os.close(fd)


@pytest.mark.parametrize("kind, mapped", [("gray8", True), ("big", True), ("raw16", True), ("deflate", False)])
def test_read_path(corpus, kind, mapped):
    """Contiguous payload and unfiltered raw chunks are read from the map; chunked payload via h5py."""
    r = open_corpus(corpus(kind), "hdf5")
    r.read(0)
    assert (r._map is not None) == mapped and (r._dset is None) == mapped


def test_chunk_cache_holds_a_chunk(corpus):
    r = open_corpus(corpus("deflate"), "hdf5")
    r.read(0)
    nslots, nbytes, w0 = r._dset.id.get_access_plist().get_chunk_cache()
    assert nbytes >= np.prod(r._dset.chunks) * r._dset.dtype.itemsize


def test_truncated_file_is_named(corpus_copy):
    root = corpus_copy("gray8")
    os.truncate(root / "corpus.h5", os.path.getsize(root / "corpus.h5") // 2)
    with pytest.raises(SampleError) as e:
        open_corpus(root, "hdf5").read_batch([5])
    assert e.value.index == 5 and "corpus.h5" in e.value.where and "cannot open" in e.value.problem


def test_deleted_file_is_named(corpus_copy):
    root = corpus_copy("gray8")
    r = open_corpus(root, "hdf5")
    os.remove(root / "corpus.h5")
    with pytest.raises(SampleError, match="missing") as e:
        r.read(7)
    assert e.value.index == 7


def test_missing_raw_chunk_is_named(corpus_copy):
    root = corpus_copy("raw16")
    with h5py.File(root / "corpus.h5", "r+") as f:  # a fresh dataset with chunk 3 never written
        images = f["images"][()]
        del f["images"]
        d = f.create_dataset("images", images.shape, images.dtype, chunks=(1, *images.shape[1:]))
        for i in range(len(images)):
            if i != 3:
                d[i] = images[i]
    with pytest.raises(SampleError, match="missing") as e:
        open_corpus(root, "hdf5").read_batch([2, 3])
    assert e.value.index == 3


def test_deflate_payload_damage_via_h5py(corpus_copy):
    root = corpus_copy("deflate")
    TestHDF5().make_truncated(root, 6)
    r = open_corpus(root, "hdf5")
    with pytest.raises(SampleError, match="truncated") as e:
        r.read_many([5, 6])
    assert e.value.index == 6
    r.close()  # HDF5 refuses to open a file for writing that this process holds open
    TestHDF5().make_missing(root, 36)
    with pytest.raises(SampleError, match="missing") as e:
        open_corpus(root, "hdf5").read(36)
    assert e.value.index == 36


class TestHDF5Writer(WriterSuite):
    layout = "hdf5"

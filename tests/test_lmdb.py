"""The lmdb layout: the conformance suite plus how the environment is opened."""

from __future__ import annotations

import lmdb
import numpy as np
import pytest
from conformance import ReaderSuite, WriterSuite, reference

from generator.errors import SampleError
from generator.layouts.lmdb import key_of
from loaders import open_corpus


def _edit(root, fn):
    env = lmdb.open(str(root / "lmdb"), max_dbs=2, subdir=True)
    try:
        db = env.open_db(b"payload")
        with env.begin(write=True, db=db) as txn:
            fn(txn)
    finally:
        env.close()


class TestLMDB(ReaderSuite):
    layout = "lmdb"

    def make_missing(self, root, index):
        _edit(root, lambda txn: txn.delete(key_of(index)))

    def make_truncated(self, root, index):
        _edit(root, lambda txn: txn.put(key_of(index), txn.get(key_of(index))[:-10]))

    def overwrite(self, root, index, offset, data):
        def put(txn):
            v = txn.get(key_of(index))
            txn.put(key_of(index), v[:offset] + data + v[offset + len(data):])
        _edit(root, put)


def test_opened_readonly_without_locks(corpus):
    r = open_corpus(corpus("gray8"), "lmdb")
    r.read(0)
    flags = r._env.flags()
    assert flags["readonly"] and not flags["lock"]
    assert flags["readahead"]  # small values in a file that fits in memory: read around (module docstring)
    assert r._env.max_readers() >= 126 and r._loc is None


def test_large_values_are_located_in_the_file_and_read_bit_exact(corpus):
    import os

    root = corpus("big")
    _, _, payloads = reference(root)
    r = open_corpus(root, "lmdb")
    images, _ = r.read_batch(list(range(6)))
    assert not r._env.flags()["readahead"] and r._loc is not None
    fd = os.open(root / "lmdb" / "data.mdb", os.O_RDONLY)
    try:
        for i, [(path, off, n)] in enumerate(r.extents(list(range(6)))):
            assert os.pread(fd, n, off) == payloads[i]  # where the locator says the value is, it is
    finally:
        os.close(fd)
    assert all(np.array_equal(images[i], r.decode(payloads[i])) for i in range(6))


def test_payloads_outlive_their_transaction(corpus):
    root = corpus("rgb8")
    _, _, payloads = reference(root)
    r = open_corpus(root, "lmdb")
    first = r.read_many([0, 1, 2])
    r.read_batch(list(range(37)))
    r.close()  # the map is gone; the payloads must not point into it
    assert [bytes(p) for p in first] == payloads[:3]


def test_missing_environment_is_named(corpus_copy):
    root = corpus_copy("gray8")
    (root / "lmdb" / "data.mdb").unlink()
    with pytest.raises(SampleError, match="missing") as e:
        open_corpus(root, "lmdb").read(2)
    assert e.value.index == 2 and "lmdb" in e.value.where


class TestLMDBWriter(WriterSuite):
    layout = "lmdb"


def test_small_values_are_placed_inside_their_leaf_page(corpus):
    """Small values: where the tree walk places each, its bytes are, within one page."""
    root = corpus("gray8")
    _, _, payloads = reference(root)
    r = open_corpus(root, "lmdb")
    assert r._loc is None  # not the large-value path
    got = r.extents(list(range(len(r))))
    psize = 4096
    for i, [(path, off, n)] in enumerate(got):
        assert off // psize == (off + n - 1) // psize  # a value inside its leaf never crosses a page
        with open(path, "rb") as f:
            f.seek(off)
            assert f.read(n) == payloads[i]

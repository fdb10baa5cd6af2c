"""Readers of data larger than the memory they may use (a capped run): each payload is read with
one pread of its size, a batch's spans advised WILLNEED first, never faulted in one page at a
time out of a map advised random access (Reader._pread_advised)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conformance import reference

from generator.errors import SampleError
from loaders import open_corpus

LAYOUTS = ["npy", "tar", "hdf5", "lmdb", "litdata"]
MODULES = ["loaders.mapped", "loaders.records", "loaders.hdf5", "loaders.lmdb", "loaders.sqlite", "loaders.litdata"]


def _open(root, layout: str):
    """The corpus's reader of `layout`, or the test skipped in one line where its library is missing."""
    from generator.layouts import get_layout

    if (why := get_layout(layout).missing()) is not None:
        pytest.skip(why)
    return open_corpus(root, layout)


@pytest.fixture
def small_memory(monkeypatch):
    """Every reader believes its files are larger than the memory it may use."""
    import importlib

    for name in MODULES:
        monkeypatch.setattr(importlib.import_module(name), "memory_available", lambda: 1)


@pytest.fixture
def syscalls(monkeypatch):
    """Every pread (fd, size, offset) and WILLNEED advice (fd, offset, size), in the order made."""
    calls = []
    pread, fadvise = os.pread, os.posix_fadvise

    def counted_pread(fd, n, at):
        calls.append(("pread", fd, n, at))
        return pread(fd, n, at)

    def counted_fadvise(fd, at, n, advice):
        if advice == os.POSIX_FADV_WILLNEED:
            calls.append(("willneed", fd, n, at))
        return fadvise(fd, at, n, advice)

    monkeypatch.setattr(os, "pread", counted_pread)
    monkeypatch.setattr(os, "posix_fadvise", counted_fadvise)
    return calls


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["varjpeg", "jpeg", "deflate"])
def test_a_batch_is_advised_then_read_one_pread_a_sample(corpus, small_memory, syscalls, layout, kind):
    root = corpus(kind)
    _, _, payloads = reference(root)
    r = _open(root, layout)
    r.read_many(list(range(len(r))))  # opened: indexes and tables are read once, outside the batch counted
    idx = np.random.default_rng(1).permutation(len(r))[:16].tolist()
    del syscalls[:]
    got = r.read_many(idx)
    assert [bytes(p) for p in got] == [payloads[i] for i in idx]
    if layout == "litdata":  # each item's 8-byte header is checked first, by pread too
        syscalls[:] = [c for c in syscalls if not (c[0] == "pread" and c[2] == 8)]
    reads = [c for c in syscalls if c[0] == "pread"]
    advised = [c for c in syscalls if c[0] == "willneed"]
    assert sorted(n for _, _, n, _ in reads) == sorted(len(payloads[i]) for i in idx), "one pread of its size a sample"
    assert sorted(c[1:] for c in advised) == sorted(c[1:] for c in reads), "each span advised"
    first_read = next(k for k, c in enumerate(syscalls) if c[0] == "pread")
    assert all(c[0] == "willneed" for c in syscalls[:first_read]) and first_read == len(idx), \
        "the whole batch is advised before its first read"
    r.close()


@pytest.mark.parametrize("layout", ["npy", "hdf5", "lmdb"])
def test_decoded_batches_are_bit_exact(corpus, small_memory, layout):
    root = corpus("varjpeg")
    pixels, _, _ = reference(root)
    r = _open(root, layout)
    images, _ = r.read_batch(list(range(len(r))))
    assert all(np.array_equal(images[i], pixels[i]) for i in range(len(r)))
    r.close()


@pytest.mark.parametrize("layout, data", [("npy", None), ("hdf5", "corpus.h5")])
def test_a_file_truncated_while_open_is_the_samples_error(corpus_copy, small_memory, layout, data):
    """Read by pread, a sample past a file cut short under the reader is its named error, not the
    SIGBUS a copy out of the map would raise."""
    root = corpus_copy("varjpeg")
    r = _open(root, layout)
    r.read_many([0])
    path = root / data if data else next(p for p in (root / "npy").iterdir() if p.stat().st_size > 1000)
    os.truncate(path, 64)
    with pytest.raises(SampleError, match="truncated|unreadable") as e:
        r.read_many([len(r) - 1])
    assert e.value.index == len(r) - 1
    r.close()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_large_fixed_size_samples_of_a_batch_are_advised_together(corpus, small_memory, syscalls, layout):
    """Payloads over 64 KiB are read into the batch one by one (preadv, or a copy when resident):
    the batch's spans are all advised first, so its misses are in flight at once."""
    root = corpus("big")
    pixels, _, payloads = reference(root)
    r = _open(root, layout)
    r.read_many([0])
    idx = [4, 1, 5, 0]
    del syscalls[:]
    images, _ = r.read_batch(idx)
    assert all(np.array_equal(images[k], pixels[i]) for k, i in enumerate(idx))
    advised = [c for c in syscalls if c[0] == "willneed"]
    assert sorted(n for _, _, n, _ in advised) == sorted(len(payloads[i]) for i in idx)
    r.close()


def test_advice_runs_a_bounded_distance_ahead_of_the_reads(monkeypatch):
    """advised_ahead keeps at most `limit` bytes advised and not yet read (at least the read in
    progress): under a cap, pages advised further ahead would be evicted before they are read."""
    from loaders.pagecache import advised_ahead

    calls = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, at, n, advice: calls.append(f"a{at // 100}"))
    for _, at, _ in advised_ahead([(0, k * 100, 100) for k in range(6)], limit=250):
        calls.append(f"r{at // 100}")
    assert calls == ["a0", "a1", "r0", "a2", "r1", "a3", "r2", "a4", "r3", "a5", "r4", "r5"]
    calls.clear()
    for _ in advised_ahead([(0, 0, 1000), (0, 1000, 1000)], limit=250):  # larger than the limit: one at a time
        calls.append("r")
    assert calls == ["a0", "r", "a10", "r"]


@pytest.mark.parametrize("kind", ["varjpeg", "big"])
def test_sqlite_advises_each_part_of_a_batch_before_querying_it(corpus, small_memory, syscalls, monkeypatch, kind):
    """SQLite's pager reads a blob's pages one at a time: the reader advises the database pages of
    each part of a batch (at most advice_window() bytes of them, here made small) before its query."""
    import loaders.pagecache as pc

    monkeypatch.setattr(pc, "_window", 3 * 65536)
    root = corpus(kind)
    _, _, payloads = reference(root)
    r = open_corpus(root, "sqlite")
    r.read_many([0])
    idx = list(range(len(r)))[::-1]
    spans = r.extents(idx)
    page = r._page
    del syscalls[:]
    assert [bytes(p) for p in r.read_many(idx)] == [payloads[i] for i in idx]
    advised = [(at, at + n) for _, _, n, at in syscalls]
    for sample in spans:  # every page of every sample's bytes was advised
        for _, at, n in sample:
            assert any(a <= at - at % page and at + n <= b for a, b in advised), (at, n)
    assert all((b - a) % page == 0 and a % page == 0 for a, b in advised), "whole database pages"
    r.close()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_small_fixed_size_samples_are_read_not_faulted_in(corpus, small_memory, syscalls, layout):
    """MNIST-sized payloads (assembled a batch at a time) are read with one pread each too."""
    root = corpus("gray8")
    pixels, _, payloads = reference(root)
    r = _open(root, layout)
    r.read_many(list(range(len(r))))
    idx = [9, 3, 30, 12, 0]
    del syscalls[:]
    images, _ = r.read_batch(idx)
    assert all(np.array_equal(images[k], pixels[i]) for k, i in enumerate(idx))
    reads = [c for c in syscalls if c[0] == "pread" and not (layout == "litdata" and c[2] == 8)]  # its headers
    assert sorted(n for _, _, n, _ in reads) == sorted(len(payloads[i]) for i in idx)
    r.close()

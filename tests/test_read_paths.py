"""Large HDF5 samples have two read paths, chosen by page-cache residency: a copy out of the map
(all pages resident) and preadv straight into the batch (any page missing). Both must give the
same bytes and the same errors; the test corpora are always resident, so the choice is forced."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import test_hdf5
from conformance import reference
from conftest import kind_spec

from generator.build import generate
from generator.errors import SampleError
import loaders.files
from loaders import open_corpus
from loaders.hdf5 import HDF5Reader


@pytest.fixture(scope="module")
def big_raw(tmp_path_factory):
    """Large raw samples (no TIFF header): the `images` dataset, one chunk per image."""
    root = tmp_path_factory.mktemp("big-raw")
    generate(root, dataclasses.replace(kind_spec("big"), payload="raw"), ["hdf5"],
             workers=1, progress=False)
    return root


@pytest.fixture(params=[True, False], ids=["mapped", "preadv"])
def resident(request, monkeypatch):
    monkeypatch.setattr(HDF5Reader, "_resident", lambda self, a, size: request.param)
    return request.param


def test_the_resident_check_sees_the_page_cache(corpus):
    r = open_corpus(corpus("big"), "hdf5")
    r.read(0)  # opens, and the freshly generated file is in the page cache
    assert r._resident(r._starts[0], r.codec.fixed_size)


@pytest.mark.parametrize("kind", ["big", "big-raw"])
def test_both_paths_are_bit_exact(corpus, big_raw, resident, kind):
    root = big_raw if kind == "big-raw" else corpus(kind)
    pixels = reference(root)[0]
    r = open_corpus(root, "hdf5")
    idx = np.random.default_rng(0).permutation(len(r))
    images, nbytes = r.read_batch(idx)
    assert np.array_equal(images, np.stack([pixels[i] for i in idx]))
    assert nbytes == len(r) * r.codec.fixed_size


def test_both_paths_catch_a_corrupt_sample(corpus_copy, resident):
    root = corpus_copy("big")
    test_hdf5.TestHDF5().overwrite(root, 3, 500, b"\xff\x00\xff")
    with pytest.raises(SampleError, match=r"corrupt: crc32") as e:
        open_corpus(root, "hdf5", verify=True).read_batch([1, 3])
    assert e.value.index == 3


def test_both_paths_send_a_foreign_header_to_tifffile(corpus_copy, resident):
    root = corpus_copy("big")
    test_hdf5.TestHDF5().overwrite(root, 2, 2, b"\x00")  # the TIFF magic: not our header any more
    with pytest.raises(SampleError, match="undecodable") as e:
        open_corpus(root, "hdf5").read_batch([0, 2])
    assert e.value.index == 2


# -- loose files: a batch is read in two passes (RWF_NOWAIT first, waiting reads after) ----------

def _later(fd, buf):
    return None  # as if nothing were in the page cache: every file waits for pass 2


def _partial(fd, buf):
    return os.preadv(fd, [memoryview(buf)[:5]], 0)  # as if only the file's first bytes were cached


@pytest.fixture(params=[_later, _partial, None], ids=["pass2", "partial", "cached"])
def nowait(request, monkeypatch):
    if request.param is not None:
        monkeypatch.setattr(loaders.files, "_read_nowait", request.param)


def open_fds(under=None) -> int:
    """This process's open descriptors; with `under`, only those on files inside that directory (other
    tests' threads may open and close descriptors of their own meanwhile)."""
    names = os.listdir("/proc/self/fd")
    if under is None:
        return len(names)
    inside = 0
    for name in names:
        try:
            inside += os.readlink(f"/proc/self/fd/{name}").startswith(f"{os.path.realpath(under)}/")
        except OSError:
            pass  # closed meanwhile
    return inside


def test_files_batches_are_bit_exact_in_either_pass(corpus, nowait):
    pixels, _, payloads = reference(corpus("gray8"))
    r = open_corpus(corpus("gray8"), "files")
    idx = np.random.default_rng(1).permutation(len(r))
    assert [bytes(p) for p in r.read_many(idx)] == [payloads[i] for i in idx]
    images, _ = r.read_batch(idx)
    assert np.array_equal(images, np.stack([pixels[i] for i in idx]))


@pytest.mark.parametrize("damage, problem", [("truncate", "truncated"), ("append", "too long"),
                                             ("remove", "missing")])
def test_files_errors_name_the_sample_in_either_pass_and_leak_no_fd(corpus_copy, nowait, damage, problem):
    root = corpus_copy("gray8")
    r = open_corpus(root, "files")
    path = r.path(5)
    if damage == "truncate":
        os.truncate(path, os.path.getsize(path) - 10)
    elif damage == "append":
        with open(path, "ab") as f:
            f.write(b"extra")
    else:
        os.remove(path)
    r.read_many([0])  # opens the reader's directory handles before counting
    before = open_fds(root)
    with pytest.raises(SampleError, match=problem) as e:
        r.read_many([1, 2, 5, 7, 9])
    assert e.value.index == 5 and open_fds(root) == before

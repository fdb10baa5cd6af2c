"""The npy layout: the conformance suite, numpy reading our files on its own, the parallel writer,
and damage to the layout's own files (truncation, hostile headers and offsets)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conformance import ReaderSuite, WriterSuite, reference
from records_helpers import pwrite

from generator.build import generate
from generator.errors import CorpusError, SampleError
from generator.layouts.npy import npy_header
from generator.manifest import read_manifest
from loaders import open_corpus


def data_file(root):
    return root / "npy" / ("images.npy" if read_manifest(root).spec.payload == "raw" else "data.bin")


def offsets(root) -> np.ndarray:
    return np.load(root / "npy" / "offsets.npy").astype(np.int64)


def save_offsets(root, offs) -> None:
    np.save(root / "npy" / "offsets.npy", np.asarray(offs, "<u8"))


def sample_at(root, index: int) -> int:
    if read_manifest(root).spec.payload == "raw":
        spec = read_manifest(root).spec
        return len(npy_header((spec.count, *spec.shape), spec.np_dtype)) + index * spec.pixel_bytes
    return int(offsets(root)[index])


class TestNpy(ReaderSuite):
    layout = "npy"

    def make_missing(self, root, index):  # its bytes lie past the end of data.bin
        offs = offsets(root)
        offs[index + 1] = os.path.getsize(data_file(root)) + 100
        save_offsets(root, offs)

    def make_truncated(self, root, index):
        offs = offsets(root)
        offs[index + 1] -= 10
        save_offsets(root, offs)

    def overwrite(self, root, index, offset, data):
        pwrite(data_file(root), sample_at(root, index) + offset, data)


class TestNpyWriter(WriterSuite):
    layout = "npy"



def test_np_load_reads_the_raw_images_on_its_own(corpus):
    root = corpus("raw16")
    pixels, labels, _ = reference(root)
    images = np.load(root / "npy" / "images.npy", mmap_mode="r")
    assert isinstance(images, np.memmap) and images.dtype == np.uint16 and images.shape == (37, 5, 4, 4)
    assert np.array_equal(images, np.stack(pixels))
    assert np.array_equal(np.load(root / "npy" / "labels.npy"), labels)
    assert not (root / "npy" / "data.bin").exists()


@pytest.mark.parametrize("kind", ["gray8", "deflate", "big"])
def test_numpy_reads_the_indexed_binary_on_its_own(corpus, kind):
    root = corpus(kind)
    _, labels, payloads = reference(root)
    offs = np.load(root / "npy" / "offsets.npy", mmap_mode="r")
    data = np.memmap(root / "npy" / "data.bin", np.uint8, "r")
    n = len(payloads)
    assert offs.dtype == np.dtype("<u8") and offs.shape == (n + 1,) and offs[0] == 0 and offs[-1] == data.size
    assert [data[offs[i]:offs[i + 1]].tobytes() for i in range(n)] == payloads
    assert np.array_equal(np.load(root / "npy" / "labels.npy"), labels)
    spec = json.loads((root / "npy" / "spec.json").read_text())
    assert spec == read_manifest(root).spec.to_dict()


@pytest.mark.parametrize("kind", ["gray8", "deflate", "raw16"])
def test_the_parallel_writer_gives_the_same_bytes_whatever_the_workers(corpus, tmp_path, kind):
    from conftest import kind_spec

    one = tmp_path / "one"
    generate(one, kind_spec(kind), layouts=["npy"], workers=2, progress=False)
    for name in sorted(os.listdir(one / "npy")):
        assert (one / "npy" / name).read_bytes() == (corpus(kind) / "npy" / name).read_bytes(), name
    assert not (one / "npy.partial").exists()


def test_a_killed_run_restarts_from_a_clean_partial(corpus, tmp_path):
    """What a kill leaves (npy.partial/ with a half-written data file and a stray part) is removed
    by the rerun, which writes the same corpus."""
    from conftest import kind_spec

    from generator.build import IN_PROGRESS

    out = tmp_path / "c"
    out.mkdir()
    (out / IN_PROGRESS).write_text(json.dumps({"spec": kind_spec("deflate").to_dict(), "layouts": ["npy"]}))
    (out / "npy.partial").mkdir()
    (out / "npy.partial" / "data.bin").write_bytes(b"junk" * 100)
    (out / "npy.partial" / "part-000000000000-000000000005").write_bytes(b"junk")
    generate(out, kind_spec("deflate"), layouts=["npy"], workers=1, progress=False)
    for name in sorted(os.listdir(out / "npy")):
        assert (out / "npy" / name).read_bytes() == (corpus("deflate") / "npy" / name).read_bytes(), name
    assert not (out / "npy.partial").exists()


def test_reads_through_the_map(corpus):
    r = open_corpus(corpus("big"), "npy")
    r.read(0)
    assert r.reads_through_map and r._view is not None and len(r._view) == os.path.getsize(r.paths()[0])


def test_a_truncated_data_file_is_named_not_sigbus(corpus_copy):
    for kind in ("gray8", "raw16", "big"):
        root = corpus_copy(kind)
        path = data_file(root)
        os.truncate(path, os.path.getsize(path) - 3)  # the last sample loses its end
        r = open_corpus(root, "npy")
        with pytest.raises(SampleError, match="truncated") as e:
            r.read_batch([0, r.spec.count - 1])
        assert e.value.index == r.spec.count - 1 and path.name in str(e.value)
        assert bytes(r.read(0)) == reference(root)[2][0]


@pytest.mark.parametrize("edit, problem", [
    (lambda o: o.__setitem__(9, 2**63 + 5), "missing"),  # far past the end (as uint64)
    (lambda o: o.__setitem__(10, int(o[9]) - 1), "ends before it starts"),  # backwards
    (lambda o: o.__setitem__(37, int(o[9])), "after the data's end"),  # the data ends where sample 9 starts
])
def test_hostile_offsets_are_named_errors(corpus_copy, edit, problem):
    root = corpus_copy("gray8")
    offs = offsets(root).astype(np.uint64)
    edit(offs)
    np.save(root / "npy" / "offsets.npy", offs)
    r = open_corpus(root, "npy")
    with pytest.raises(SampleError) as e:
        r.read_many([0, 9])
    assert e.value.index == 9 and problem in e.value.problem
    assert bytes(r.read(0)) == reference(root)[2][0]


@pytest.mark.parametrize("target, header", [
    ("offsets.npy", npy_header((10**15,), "<u8")),  # a huge count: never allocated
    ("offsets.npy", npy_header((38,), "<u4")),
    ("images.npy", npy_header((37, 5, 4, 4), "<u1")),
    ("images.npy", npy_header((10**12, 5, 4, 4), "<u2")),
])
def test_a_header_of_another_array_is_refused(corpus_copy, target, header):
    root = corpus_copy("raw16" if target == "images.npy" else "gray8")
    path = root / "npy" / target
    body = path.read_bytes()[len(npy_header((1,), "<u8")):] if target == "offsets.npy" else b""
    if target == "images.npy":
        pwrite(path, 0, header[:len(npy_header((37, 5, 4, 4), "<u2"))])
    else:
        path.write_bytes(header + body)
    with pytest.raises(CorpusError, match="not this corpus"):
        open_corpus(root, "npy").read(0)


def test_short_offsets_and_junk_headers_are_named(corpus_copy):
    root = corpus_copy("gray8")
    path = root / "npy" / "offsets.npy"
    raw = path.read_bytes()
    path.write_bytes(raw[:-16])
    with pytest.raises(SampleError, match="truncated") as e:
        open_corpus(root, "npy").read(4)
    assert e.value.index == 4 and "offsets.npy" in e.value.where
    path.write_bytes(b"\x93NUMPY\x01\x00" + b"\xff" * 40)
    with pytest.raises(SampleError, match="undecodable"):
        open_corpus(root, "npy").read(4)


def test_another_spec_and_a_pickled_spec_are_refused(corpus_copy, tmp_path):
    import pickle

    root = corpus_copy("gray8")
    spec = json.loads((root / "npy" / "spec.json").read_text())
    spec["seed"] += 1
    (root / "npy" / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(CorpusError, match="another spec"):
        open_corpus(root, "npy").read(0)
    canary = tmp_path / "canary"

    class Boom:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    (root / "npy" / "spec.json").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CorpusError, match="unreadable spec"):
        open_corpus(root, "npy").read(0)
    assert not canary.exists()


def test_stored_labels(corpus):
    for kind in ("gray8", "raw16"):
        assert np.array_equal(open_corpus(corpus(kind), "npy").stored_labels(), reference(corpus(kind))[1])

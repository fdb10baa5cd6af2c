"""The hdf5 layout: the conformance suite plus its two read paths (mapped and h5py)."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conformance import ReaderSuite, WriterSuite, reference

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


def _filter_payload(root, chunk: int = 4096):
    """corpus.h5's payload dataset rewritten with HDF5's gzip filter, as another writer might store it."""
    with h5py.File(root / "corpus.h5", "r+") as f:
        data = f["payload"][()]
        del f["payload"]
        f.create_dataset("payload", data=data, chunks=(chunk,), compression="gzip")


def _scatter_chunks(root, chunk: int = 64):
    """corpus.h5's payload rewritten in small unfiltered chunks stored last to first, so that no
    chunk is followed in the file by the next one: every sample that spans two chunks lies in
    pieces."""
    with h5py.File(root / "corpus.h5", "r+") as f:
        data = f["payload"][()]
        del f["payload"]
        d = f.create_dataset("payload", (len(data),), dtype=np.uint8, chunks=(chunk,))
        for at in reversed(range(0, len(data), chunk)):
            piece = np.zeros(chunk, np.uint8)
            piece[:len(data) - at] = data[at:at + chunk]
            d.id.write_direct_chunk((at,), piece.tobytes())


@pytest.mark.parametrize("kind, mapped", [("gray8", True), ("big", True), ("raw16", True), ("deflate", True)])
def test_read_path(corpus, kind, mapped):
    """Contiguous payload, unfiltered chunked payload (encoded payloads of varying size) and
    unfiltered raw chunks are read in place from the map."""
    r = open_corpus(corpus(kind), "hdf5")
    r.read(0)
    assert (r._map is not None) == mapped and (r._dset is None) == mapped


def test_a_filtered_payload_is_read_through_h5py(corpus_copy):
    root = corpus_copy("deflate")
    _filter_payload(root)
    r = open_corpus(root, "hdf5")
    r.read(0)
    assert r._map is None and r._dset is not None and r.extents([0]) is None
    r.close()
    _reads_every_sample(root)


def test_chunks_out_of_file_order_are_read_in_pieces(corpus_copy):
    root = corpus_copy("deflate")
    _scatter_chunks(root)
    pixels, labels, payloads = reference(root)
    r = open_corpus(root, "hdf5", verify=True)
    n = len(r)
    assert [bytes(p) for p in r.read_many(list(range(n)))] == payloads
    assert r._map is not None and r._split, "some samples span two chunks"
    for i, spans in zip(range(n), r.extents(list(range(n)))):
        with open(root / "corpus.h5", "rb") as f:
            assert b"".join(os.pread(f.fileno(), size, at) for _, at, size in spans) == payloads[i]
    r.close()
    _reads_every_sample(root)


def test_chunk_cache_holds_a_chunk(corpus_copy):
    root = corpus_copy("deflate")
    _filter_payload(root)
    r = open_corpus(root, "hdf5")
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


@pytest.mark.parametrize("filtered", [False, True])  # the chunks read in place, and through h5py
def test_deflate_payload_damage(corpus_copy, filtered):
    root = corpus_copy("deflate")
    if filtered:
        _filter_payload(root)
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


# -- other handles on corpus.h5: the program's own h5py.File, writers elsewhere ------------------------


def _says_the_cause(exc, path) -> None:
    """One line naming the file, not blaming the corpus."""
    text = str(exc)
    assert not isinstance(exc, SampleError) and str(path) in text
    assert "\n" not in text and "regenerate" not in text and "--force" not in text


def _reads_every_sample(root) -> None:
    pixels, labels, payloads = reference(root)
    r = open_corpus(root, "hdf5")
    images, _ = r.read_batch(list(range(len(r))))
    assert all(np.array_equal(images[i], pixels[i]) for i in range(len(r)))
    assert [bytes(p) for p in r.read_many([0, 5])] == [payloads[0], payloads[5]]
    assert r.stored_labels().tolist() == labels.tolist()
    r.close()


def _holder(path, swmr: bool = False):
    """Another process that opens corpus.h5 for writing (as a SWMR writer), then waits for its stdin
    to close."""
    opts = ", libver='latest'" if swmr else ""  # SWMR needs it; a plain 'a' is what a user writes
    code = (f"import sys, h5py\nf = h5py.File({str(path)!r}, 'a'{opts})\n"
            + ("f.swmr_mode = True\n" if swmr else "") + "print('ready', flush=True)\nsys.stdin.read()\nf.close()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.mark.parametrize("kind", ["gray8", "deflate", "filtered"])  # contiguous, chunks in place, h5py
@pytest.mark.parametrize("mode, kw", [("r", {}), ("a", {}), ("r+", {}), ("a", dict(libver="latest")),
                                      ("r", dict(swmr=True)), ("r", dict(driver="core"))])
def test_reads_through_the_programs_own_file(corpus_copy, kind, mode, kw):
    """HDF5 shares one open file among this process's h5py.Files, whatever their modes."""
    root = corpus_copy("deflate" if kind == "filtered" else kind)
    if kind == "filtered":
        _filter_payload(root)
    f = h5py.File(root / "corpus.h5", mode, **kw)
    try:
        labels = f["labels"]  # a dataset the program holds while the reader opens and closes the file
        _reads_every_sample(root)
        assert labels[:3].tolist() == list(open_corpus(root, "hdf5").manifest.labels[:3])
    finally:
        f.close()


def test_a_writer_in_another_process_is_named(corpus_copy):
    root = corpus_copy("gray8")
    p = _holder(root / "corpus.h5")
    try:
        with pytest.raises(Exception) as e:
            open_corpus(root, "hdf5").read(3)
    finally:
        p.stdin.close()
        p.wait(30)
    assert "open for writing elsewhere" in str(e.value) and "mode 'r'" in str(e.value)
    _says_the_cause(e.value, root / "corpus.h5")
    _reads_every_sample(root)  # and once it is closed, read as ever


def test_a_swmr_writer_in_another_process_is_read_through(corpus_copy):
    root = corpus_copy("big")
    p = _holder(root / "corpus.h5", swmr=True)
    try:
        _reads_every_sample(root)
    finally:
        p.stdin.close()
        p.wait(30)


@pytest.mark.parametrize("swmr", [False, True])
def test_the_mark_of_a_writer_that_died(corpus_copy, swmr):
    """A program killed with corpus.h5 open for writing leaves it marked so: a SWMR writer's mark
    is read through; a plain writer's refuses every open until h5clear, which the error says."""
    root = corpus_copy("gray8")
    opts = ", libver='latest'" if swmr else ""
    code = (f"import os, h5py\nf = h5py.File({str(root / 'corpus.h5')!r}, 'a'{opts})\n"
            + ("f.swmr_mode = True\n" if swmr else "") + "f.flush()\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    if swmr:
        _reads_every_sample(root)
        return
    with pytest.raises(Exception) as e:
        open_corpus(root, "hdf5").read(0)
    assert "marked open for writing" in str(e.value) and "h5clear -s" in str(e.value)
    _says_the_cause(e.value, root / "corpus.h5")

"""The files layout: the conformance suite plus what is particular to one file per sample."""

from __future__ import annotations

import os

import pytest
from conformance import ReaderSuite, WriterSuite

from generator.errors import SampleError
from generator.layouts.files import TMP_MARK, sample_ext, sample_relpath
from generator.spec import INGEST, Spec
from loaders import open_corpus


def sample_path(root, index: int):
    r = open_corpus(root, "files")
    return r.path(index)


class TestFiles(ReaderSuite):
    layout = "files"

    def make_missing(self, root, index):
        os.remove(sample_path(root, index))

    def make_truncated(self, root, index):
        path = sample_path(root, index)
        os.truncate(path, os.path.getsize(path) - 10)

    def overwrite(self, root, index, offset, data):
        with open(sample_path(root, index), "r+b") as f:
            f.seek(offset)
            f.write(data)


@pytest.mark.parametrize("kind", ["gray8", "raw16"])
def test_paths_are_the_generators(corpus, kind):
    r = open_corpus(corpus(kind), "files")
    assert [str(p) for p in r.paths()] == [
        str(corpus(kind) / sample_relpath(r.spec, i, r.label(i))) for i in range(len(r))]


def test_file_names_by_format_and_version():
    """A file takes its codec's extension; in an ingested corpus of mixed formats, from version 4
    its own format's (the manifest's samples.format), before it `.img` (which ImageFolder skips)."""
    def spec(payload):
        return Spec(height=4, width=4, channels=3, count=12, content=INGEST, payload=payload, num_classes=3,
                    source="sha256:0")

    mixed = spec("mixed")
    assert [sample_relpath(mixed, 7, 2, 4, fmt) for fmt in ("jpeg", "png", "tiff", "webp")] == [
        "files/2/07.jpg", "files/2/07.png", "files/2/07.tif", "files/2/07.webp"]
    assert sample_relpath(mixed, 7, 2, None, "png") == "files/2/07.png"  # the current version: 4
    assert sample_relpath(mixed, 7, 2, 3) == sample_relpath(mixed, 7, 2, 3, "png") == "files/2/07.img"
    with pytest.raises(ValueError, match="named by its own format"):
        sample_ext(mixed, 4)
    for payload, ext in (("jpeg", "jpg"), ("png", "png"), ("tiff", "tif"), ("webp", "webp")):
        assert sample_ext(spec(payload), 4, None) == sample_ext(spec(payload), 3) == ext  # one format: unchanged


@pytest.mark.parametrize("kind", ["gray8", "big"])
def test_overlong_file_raises_named_error(corpus_copy, kind):
    root = corpus_copy(kind)
    with open(sample_path(root, 1), "ab") as f:
        f.write(b"extra")
    r = open_corpus(root, "files")
    for read in (lambda: r.read(1), lambda: r.read_batch([0, 1])):
        with pytest.raises(SampleError, match="too long") as e:
            read()
        assert e.value.index == 1 and e.value.where == sample_path(root, 1)


def test_unreadable_file_is_named(corpus_copy):
    root = corpus_copy("gray8")
    path = sample_path(root, 2)
    os.remove(path)
    os.mkdir(path)  # a directory where the file should be: reading fails with EISDIR
    with pytest.raises(SampleError, match="unreadable") as e:
        open_corpus(root, "files").read(2)
    assert path in str(e.value)


def test_missing_label_directory_is_named(corpus_copy):
    root = corpus_copy("gray8")
    r = open_corpus(root, "files")
    victim = r.label(3)
    for name in os.listdir(root / "files" / str(victim)):
        os.remove(root / "files" / str(victim) / name)
    os.rmdir(root / "files" / str(victim))
    with pytest.raises(SampleError, match="missing") as e:
        r.read_batch([3])
    assert e.value.index == 3 and e.value.where == sample_path(root, 3)


class TestFilesWriter(WriterSuite):
    layout = "files"

    def is_temporary(self, relpath):
        return TMP_MARK in relpath  # the rename fallback's name for a file being written


# --- more classes than the process may keep open: a bounded cache of class directories ------------

class TestFilesFewHandles(TestFiles):
    """The whole reader suite with at most 2 class directories and 2 batch files open at once (what
    a corpus of more classes than an eighth of `ulimit -n` gets: loaders.handles.HandleLRU)."""

    @pytest.fixture(autouse=True)
    def _few_handles(self, monkeypatch):
        import loaders.files

        monkeypatch.setattr(loaders.files, "keep_open", lambda per_handle=1: 2)


def test_few_handles_name_a_missing_and_a_symlinked_class_directory(corpus_copy, monkeypatch):
    import shutil

    import numpy as np

    import loaders.files
    from conformance import reference

    monkeypatch.setattr(loaders.files, "keep_open", lambda per_handle=1: 2)
    root = corpus_copy("gray8")
    pixels, labels, _ = reference(root)
    r = open_corpus(root, "files")
    order = np.random.default_rng(3).permutation(37)
    assert np.array_equal(r.read_batch(order)[0], np.stack([pixels[i] for i in order]))
    assert r._dirs is None and len(r._dircache) <= 2
    victim = int(np.flatnonzero(labels == labels[0])[0])
    cls = os.path.dirname(sample_path(root, victim))
    shutil.move(cls, str(root / "elsewhere"))
    r = open_corpus(root, "files")
    with pytest.raises(SampleError, match="missing") as e:
        r.read_many([victim])
    assert e.value.index == victim
    os.symlink(root / "elsewhere", cls)
    r = open_corpus(root, "files")
    with pytest.raises(SampleError, match="symbolic link") as e:
        r.read_batch([victim])
    assert e.value.index == victim

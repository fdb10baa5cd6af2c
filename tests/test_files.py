"""The files layout: the conformance suite plus what is particular to one file per sample."""

from __future__ import annotations

import os

import pytest
from conformance import ReaderSuite, WriterSuite

from generator.errors import SampleError
from generator.layouts.files import TMP_MARK, sample_relpath
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

"""The lmdb layout: the conformance suite plus how the environment is opened."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import zlib

import lmdb
import numpy as np
import pytest
from conformance import ReaderSuite, WriterSuite, crcs_read_in_a_forked_child, reference

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


# -- the program's own Environment of the corpus (py-lmdb opens one environment once per process) ----


def _says_the_cause(exc) -> None:
    """One line, not blaming the corpus."""
    text = str(exc)
    assert "\n" not in text and "regenerate" not in text and "--force" not in text


@pytest.mark.parametrize("kind", ["gray8", "big"])  # small values (assembled) and large (per sample)
@pytest.mark.parametrize("flags", [dict(readonly=True), dict(readonly=True, lock=False), dict()])
def test_reads_through_the_programs_own_environment(corpus_copy, kind, flags):
    from loaders.verify import verify

    root = corpus_copy(kind)
    pixels, labels, payloads = reference(root)
    env = lmdb.open(str(root / "lmdb"), **flags)  # what a user does to look inside, before reading
    try:
        with pytest.raises(lmdb.Error, match="already open in this process"):  # py-lmdb's rule, as found
            lmdb.open(str(root / "lmdb"), readonly=True, lock=False)
        r = open_corpus(root, "lmdb")
        n = len(r)
        images, _ = r.read_batch(list(range(n)))
        assert r._pages is not None and r._env is None  # read without py-lmdb (module docstring)
        assert all(np.array_equal(images[i], pixels[i]) for i in range(n))
        assert [bytes(p) for p in r.read_many([3, 0, n - 1])] == [payloads[3], payloads[0], payloads[n - 1]]
        assert r.stored_labels().tolist() == labels.tolist()
        assert [bytes(r.read(i)) for i in range(n)] == payloads
        assert verify(root, ["lmdb"], progress=False) == (["lmdb"], [])
        # a forked child inherits the Environment: it reads through too
        assert crcs_read_in_a_forked_child(r) == [zlib.crc32(x) for x in payloads]
        r.close()
        assert env.stat()["entries"] == 2  # the program's Environment is untouched
    finally:
        env.close()
    r = open_corpus(root, "lmdb")  # and once it is closed, py-lmdb's own read path again
    r.read(0)
    assert r._env is not None and r._pages is None
    r.close()


def test_own_environment_a_reader_cannot_read_through_is_named(corpus_copy, monkeypatch):
    """Where data.mdb is not in the format parsed, the error names the Environment, not damage."""
    import loaders.lmdb as mod

    root = corpus_copy("gray8")
    monkeypatch.setattr(mod, "_value_table", lambda path, count: None)  # as for a format not parsed
    env = lmdb.open(str(root / "lmdb"), readonly=True)
    try:
        with pytest.raises(Exception) as e:
            open_corpus(root, "lmdb").read(4)
    finally:
        env.close()
    assert not isinstance(e.value, SampleError)
    assert "already has this LMDB environment open" in str(e.value) and "env.close()" in str(e.value)
    assert str(root / "lmdb") in str(e.value)
    _says_the_cause(e.value)


def test_a_reader_holds_its_environment_until_closed(corpus_copy):
    """The other order: a reader's open Environment refuses the program's until reader.close()."""
    root = corpus_copy("gray8")
    r = open_corpus(root, "lmdb")
    r.read(0)
    with pytest.raises(lmdb.Error, match="already open in this process"):
        lmdb.open(str(root / "lmdb"), readonly=True)
    r.close()
    lmdb.open(str(root / "lmdb"), readonly=True).close()


# --- LMDB's own states: stale reader slots, a writer killed mid-transaction ---------------------

_STALE_READER = """
import lmdb, os, signal, sys
env = lmdb.open(sys.argv[1], max_dbs=2, subdir=True)  # locking, as a user's own program would
txn = env.begin()
print(os.getpid(), flush=True)
if len(sys.argv) > 2:  # and a writer cut off inside its transaction
    with env.begin(write=True, db=env.open_db(b"payload")) as w:
        for k in range(5):
            w.put(k.to_bytes(8, "big"), b"junk")
        os.kill(os.getpid(), signal.SIGKILL)
os.kill(os.getpid(), signal.SIGKILL)
"""


@contextlib.contextmanager
def _held(path):
    """A live process holding the environment at `path` open (a user's long-running program): while
    one does, LMDB keeps lock.mdb's reader table as it is (the first opener resets it)."""
    script = "import lmdb, sys; env = lmdb.open(sys.argv[1], max_dbs=2, subdir=True); print(1, flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"1\n"
        yield
    finally:
        holder.kill()
        holder.wait()


def _leave_stale_reader(path, also_writer=False):
    """A process that dies inside a read transaction of the environment at `path` (and inside a write
    transaction too); returns its pid, whose slot stays in lock.mdb's reader table while another
    process holds the environment open."""
    args = [sys.executable, "-c", _STALE_READER, str(path)] + (["write"] if also_writer else [])
    done = subprocess.run(args, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    return int(done.stdout.split()[0])


def _reader_pids(path):
    env = lmdb.open(str(path), max_dbs=2, subdir=True, readonly=True)
    try:
        return [int(line.split()[0]) for line in env.readers().splitlines()[1:] if line.split()]
    finally:
        env.close()


def test_stale_readers_and_a_killed_writer_are_lmdbs_state_not_damage(corpus_copy):
    """A dead reader's slot in lock.mdb and a writer killed before its commit: LMDB reads the last
    commit, and so do the reader and verify."""
    from loaders.verify import verify

    root = corpus_copy("gray8")
    with _held(root / "lmdb"):
        pid = _leave_stale_reader(root / "lmdb", also_writer=True)
        assert pid in _reader_pids(root / "lmdb"), "no stale reader slot: this test no longer builds the state"
        assert verify(root, layouts=["lmdb"], progress=False)[1] == []
        pixels, _, payloads = reference(root)
        r = open_corpus(root, "lmdb", verify=True)
        assert [bytes(p) for p in r.read_many(range(5))] == payloads[:5]
        r.close()


def test_a_resumed_lmdb_build_clears_the_stale_readers_of_dead_processes(tmp_path):
    """LMDB's mdb_reader_check on resume: a dead process's slot would keep every page freed after
    its snapshot from being reused for the rest of the build."""
    from generator.codec import Codec
    from generator.layouts.lmdb import LMDBWriter
    from generator.pool import produce
    from generator.spec import Spec

    spec = Spec(height=4, width=4, channels=1, count=20, seed=1)
    w = LMDBWriter(tmp_path, spec, Codec(spec))
    assert w.begin() == 0
    payloads, _, _, labels = produce(spec, range(10))
    w.put_many(range(10), payloads, labels)
    w.txn.commit()
    w.env.close()
    partial = tmp_path / "lmdb.partial"
    with _held(partial):
        pid = _leave_stale_reader(partial)
        assert pid in _reader_pids(partial), "no stale reader slot: this test no longer builds the state"
        w = LMDBWriter(tmp_path, spec, Codec(spec))
        assert w.begin() == 10
        w.abort()
        assert pid not in _reader_pids(partial)

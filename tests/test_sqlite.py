"""The sqlite layout: the conformance suite, the file SQLite's own tools read, and its damage."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys

import pytest
from conformance import ReaderSuite, WriterSuite, reference

import generator.layouts.sqlite as layout
from generator.codec import Codec
from generator.errors import CorpusError, SampleError
from generator.pool import produce
from generator.spec import Spec
from loaders import open_corpus


def _edit(root, *statements):
    conn = sqlite3.connect(root / "corpus.sqlite")
    try:
        with conn:
            for sql, params in statements:
                conn.execute(sql, params)
    finally:
        conn.close()


class TestSQLite(ReaderSuite):
    layout = "sqlite"

    def make_missing(self, root, index):
        _edit(root, ("DELETE FROM samples WHERE idx = ?", (index,)))

    def make_truncated(self, root, index):
        _edit(root, ("UPDATE samples SET payload = substr(payload, 1, length(payload) - 10) WHERE idx = ?", (index,)))

    def overwrite(self, root, index, offset, data):
        conn = sqlite3.connect(root / "corpus.sqlite")
        (v,) = conn.execute("SELECT payload FROM samples WHERE idx = ?", (index,)).fetchone()
        conn.close()
        _edit(root, ("UPDATE samples SET payload = ? WHERE idx = ?", (v[:offset] + data + v[offset + len(data):], index)))


class TestSQLiteWriter(WriterSuite):
    layout = "sqlite"

    def is_temporary(self, relpath):
        return relpath.startswith(layout.PARTIAL)  # the partial file and its journal


# --- the file --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, page", [("gray8", 4096), ("big", 65536)])
def test_page_size_journal_and_schema(corpus, kind, page):
    root = corpus(kind)
    conn = sqlite3.connect(f"file:{root / 'corpus.sqlite'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == page
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # self-contained: no -wal
        tables = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        assert set(tables) == {"meta", "samples"}
        assert "idx INTEGER PRIMARY KEY" in tables["samples"] and "payload BLOB" in tables["samples"]
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        assert Spec.from_dict(json.loads(meta["spec"])) == Spec.from_dict(
            json.loads((root / "manifest.json").read_text())["spec"]) and meta["format"] == "1"
    finally:
        conn.close()
    assert not [p.name for p in root.iterdir() if "sqlite" in p.name and p.name != "corpus.sqlite"]


@pytest.mark.skipif(not shutil.which("sqlite3"), reason="apt-get install sqlite3")
def test_the_sqlite3_command_line_tool_reads_it(corpus):
    root = corpus("rgb16")
    _, labels, payloads = reference(root)

    def sql(query):
        out = subprocess.run(["sqlite3", "-readonly", str(root / "corpus.sqlite"), query], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert sql("PRAGMA integrity_check") == "ok"
    assert sql("SELECT count(*), sum(length(payload)) FROM samples") == f"37|{sum(map(len, payloads))}"
    assert sql("SELECT hex(payload) FROM samples WHERE idx = 5") == payloads[5].hex().upper()
    assert sql("SELECT group_concat(label) FROM (SELECT label FROM samples ORDER BY idx)") == ",".join(map(str, labels))


def test_opened_read_only_and_immutable(corpus):
    r = open_corpus(corpus("gray8"), "sqlite")
    r.read(0)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        r._conn.execute("CREATE TABLE x(a)")
    assert pickle.loads(pickle.dumps(r))._conn is None  # the connection never travels


def test_a_batch_is_one_query_in_the_batch_order(corpus, monkeypatch):
    root = corpus("gray8")
    _, _, payloads = reference(root)
    r = open_corpus(root, "sqlite")
    r.read(0)
    queries = []
    real = r._query
    monkeypatch.setattr(r, "_query", lambda sql, params: queries.append(sql) or real(sql, params))
    order = [30, 2, 17, 2, 0]
    assert r.read_many(order) == [payloads[i] for i in order]
    assert len(queries) == 1 and "IN (" in queries[0]
    monkeypatch.setattr("loaders.sqlite.MAX_PARAMS", 7)  # more indices than one statement takes
    assert r.read_many(list(range(36, -1, -1))) == payloads[::-1]


# --- damage ----------------------------------------------------------------------------------

def test_a_truncated_file_is_named_before_any_read(corpus_copy):
    root = corpus_copy("big")
    path = root / "corpus.sqlite"
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(SampleError) as e:
        open_corpus(root, "sqlite").read_batch([4])
    assert e.value.index == 4 and "corpus.sqlite" in e.value.where and "truncated" in e.value.problem


@pytest.mark.parametrize("junk", [b"", b"not a database at all" * 10, b"SQLite format 3\0" + b"\xff" * 4000])
def test_a_file_that_is_not_a_database_is_named(corpus_copy, junk):
    root = corpus_copy("gray8")
    (root / "corpus.sqlite").write_bytes(junk)
    with pytest.raises(SampleError) as e:
        open_corpus(root, "sqlite").read_many([1, 2])
    assert e.value.index == 1 and ("not an SQLite file" in e.value.problem or "database" in e.value.problem)


def test_a_deleted_file_is_named(corpus_copy):
    root = corpus_copy("gray8")
    r = open_corpus(root, "sqlite")
    os.remove(root / "corpus.sqlite")
    with pytest.raises(SampleError, match="missing") as e:
        r.read(7)
    assert e.value.index == 7


def test_scribbled_pages_are_named_errors_not_a_crash(corpus_copy):
    root = corpus_copy("big")
    path = root / "corpus.sqlite"
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # every page but the first (the header and schema) overwritten in part
        for at in range(65536, size, 65536):
            f.seek(at)
            f.write(b"\xa5" * 64)
    r = open_corpus(root, "sqlite")
    for call in (lambda: r.read(3), lambda: r.read_many(range(6)), lambda: r.read_batch(range(6))):
        try:
            call()
        except SampleError as e:
            assert e.layout == "sqlite" and "corpus.sqlite" in e.where
        else:
            raise AssertionError("a damaged database read without an error")


def test_a_blob_longer_than_any_payload_is_refused_not_allocated(corpus_copy):
    root = corpus_copy("gray8")
    _edit(root, ("UPDATE samples SET payload = zeroblob(5000000) WHERE idx = 3", ()))
    r = open_corpus(root, "sqlite")
    for call in (lambda: r.read(3), lambda: r.read_many([0, 3])):
        with pytest.raises(SampleError) as e:
            call()
        assert e.value.index == 3 and "too big" in e.value.problem


def test_another_corpus_or_a_foreign_database_is_refused(corpus_copy):
    root = corpus_copy("gray8")
    spec = json.loads((root / "manifest.json").read_text())["spec"]
    _edit(root, ("UPDATE meta SET value = ? WHERE key = 'spec'", (json.dumps({**spec, "seed": 8}),)))
    with pytest.raises(CorpusError, match="another spec"):
        open_corpus(root, "sqlite").read(0)
    _edit(root, ("UPDATE meta SET value = ? WHERE key = 'spec'", (pickle.dumps(spec),)))
    with pytest.raises(CorpusError, match="unreadable spec"):
        open_corpus(root, "sqlite").read(0)
    (root / "corpus.sqlite").unlink()
    sqlite3.connect(root / "corpus.sqlite").execute("CREATE TABLE other(a)").connection.close()
    with pytest.raises(CorpusError, match="not a layoutbench corpus database"):
        open_corpus(root, "sqlite").read(0)


def test_verify_reads_stored_labels_and_rows_beyond_the_count(corpus_copy):
    root = corpus_copy("gray8")
    _, labels, _ = reference(root)
    r = open_corpus(root, "sqlite")
    assert r.stored_labels().tolist() == labels.tolist() and r.unexpected_entries() == []
    r.close()
    _edit(root, ("INSERT INTO samples VALUES (37, 0, x'00')", ()))
    r = open_corpus(root, "sqlite")
    assert r.unexpected_entries() == [r.where(37)]
    with pytest.raises(CorpusError, match="38 rows"):
        r.stored_labels()


# --- writing: resumable after the last commit ------------------------------------------------

SPEC = Spec(height=6, width=5, channels=3, count=40, seed=3, num_classes=4)


def _killed_writer(root, spec):
    """In a forked child: commit 10 samples, write 5 more uncommitted, then die by SIGKILL."""
    layout.TXN_SAMPLES = 10
    w = layout.SQLiteWriter(root, spec, Codec(spec))
    w.begin()
    for r in (range(0, 10), range(10, 15)):
        payloads, _, _, labels = produce(spec, r)
        w.put_many(r, payloads, labels)
    os.kill(os.getpid(), signal.SIGKILL)


def _write(root, spec, start=None):
    w = layout.SQLiteWriter(root, spec, Codec(spec))
    got = w.begin()
    if start is not None:
        assert got == start
    payloads, _, _, labels = produce(spec, range(got, spec.count))
    w.put_many(range(got, spec.count), payloads, labels)
    w.end(None)
    return got


def _rows(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT idx, label, payload FROM samples ORDER BY idx").fetchall()
    finally:
        conn.close()


def test_a_killed_write_resumes_after_its_last_commit(tmp_path):
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_killed_writer, args=(tmp_path, SPEC))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    assert (tmp_path / layout.JOURNAL).exists()  # the uncommitted transaction's hot journal
    assert not (tmp_path / layout.FILENAME).exists()
    assert _write(tmp_path, SPEC) == 10  # rolled back to the commit, resumed there
    assert not (tmp_path / layout.JOURNAL).exists() and not (tmp_path / layout.PARTIAL).exists()
    payloads, _, _, labels = produce(SPEC, range(SPEC.count))
    assert _rows(tmp_path / layout.FILENAME) == [(i, labels[i], bytes(payloads[i])) for i in range(SPEC.count)]


@pytest.mark.parametrize("damage", ["other spec", "junk", "a gap"])
def test_a_partial_file_it_cannot_trust_is_started_over(tmp_path, damage):
    partial = tmp_path / layout.PARTIAL
    if damage == "other spec":
        other = Spec(height=6, width=5, channels=3, count=40, seed=4, num_classes=4)
        w = layout.SQLiteWriter(tmp_path, other, Codec(other))
        w.begin()
        w.put_many(range(0, 5), *produce(other, range(0, 5))[::3])
        w.conn.execute("COMMIT")
        w.conn.close()
    else:
        w = layout.SQLiteWriter(tmp_path, SPEC, Codec(SPEC))
        w.begin()
        w.put_many(range(0, 5), *produce(SPEC, range(0, 5))[::3])
        if damage == "a gap":
            w.conn.execute("DELETE FROM samples WHERE idx = 2")
        w.conn.execute("COMMIT")
        w.conn.close()
        if damage == "junk":
            with open(partial, "r+b") as f:
                f.seek(4096)
                f.write(os.urandom(4096))
    assert _write(tmp_path, SPEC) == 0
    payloads, _, _, labels = produce(SPEC, range(SPEC.count))
    assert _rows(tmp_path / layout.FILENAME) == [(i, labels[i], bytes(payloads[i])) for i in range(SPEC.count)]


# -- the program's own connection to corpus.sqlite, and its locks ----------------------------------


def _reads_every_sample(root) -> None:
    _, labels, payloads = reference(root)
    r = open_corpus(root, "sqlite")
    assert [bytes(p) for p in r.read_many(list(range(len(r))))] == payloads
    r.read_batch(list(range(len(r))))
    assert r.stored_labels().tolist() == labels.tolist()
    r.close()


@pytest.mark.parametrize("statements", [
    ["BEGIN EXCLUSIVE"],  # a plain read-only connection would get "database is locked" here
    ["BEGIN IMMEDIATE", "UPDATE samples SET label = label"],  # a write transaction, uncommitted
    ["PRAGMA locking_mode = EXCLUSIVE", "SELECT count(*) FROM samples"],  # holds its lock until closed
    ["PRAGMA journal_mode = WAL", "BEGIN", "UPDATE meta SET value = value"],  # the file now in WAL mode
])
def test_reads_through_the_programs_own_connection_and_its_locks(corpus_copy, statements):
    """The reader opens corpus.sqlite immutable=1: it takes no lock, so none held elsewhere in this
    process stops it (no "database is locked" blamed on the corpus)."""
    root = corpus_copy("gray8")
    conn = sqlite3.connect(root / "corpus.sqlite", isolation_level=None)
    try:
        for sql in statements:
            conn.execute(sql).fetchall()
        _reads_every_sample(root)
    finally:
        conn.close()


def test_reads_while_another_process_holds_an_exclusive_lock(corpus_copy):
    root = corpus_copy("gray8")
    code = (f"import sqlite3, sys\nc = sqlite3.connect({str(root / 'corpus.sqlite')!r}, isolation_level=None)\n"
            f"c.execute('BEGIN EXCLUSIVE')\nprint('ready', flush=True)\nsys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        _reads_every_sample(root)
    finally:
        p.stdin.close()
        p.wait(30)


# --- what someone else's sqlite3 left beside the file: read as sqlite3 reads it --------------------

_KILLED_MID_TRANSACTION = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")  # dirty pages spill into the file before the commit
conn.execute("BEGIN")
conn.execute("UPDATE samples SET payload = zeroblob(length(payload)) WHERE idx < 30")
os.kill(os.getpid(), signal.SIGKILL)
"""

_WAL_WRITER_KILLED = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
conn.execute("UPDATE samples SET label = label + 1 WHERE idx < 5")  # committed, in the WAL only
os.kill(os.getpid(), signal.SIGKILL)  # no close: nothing checkpoints it
"""


def _immutable_rows(path, sql):
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _run_killed(script, path):
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def test_a_hot_journal_is_rolled_back_as_sqlite3_does_not_read_as_damage(corpus_copy):
    """A writer killed mid-transaction leaves corpus.sqlite-journal and pages it changed: sqlite3
    rolls them back on open, so the reader and verify see the corpus whole."""
    from loaders.verify import verify

    root = corpus_copy("gray8")
    db = root / "corpus.sqlite"
    _run_killed(_KILLED_MID_TRANSACTION, db)
    journal = root / "corpus.sqlite-journal"
    assert journal.stat().st_size > 0
    zeroed = _immutable_rows(db, "SELECT count(*) FROM samples WHERE payload = zeroblob(length(payload))")[0][0]
    assert zeroed > 0, "the killed writer changed no page in the file: this test no longer builds the state"
    assert verify(root, layouts=["sqlite"], progress=False)[1] == []
    assert not journal.exists() or journal.stat().st_size == 0
    pixels, _, _ = reference(root)
    assert (open_corpus(root, "sqlite", verify=True).read_batch(list(range(37)))[0] == pixels).all()


def test_a_wal_holding_committed_changes_is_read_as_sqlite3_reads_it(corpus_copy):
    """The issue's case: a WAL with 5 changed labels; sqlite3 reads them, so verify must too."""
    from loaders.verify import verify

    root = corpus_copy("gray8")
    db = root / "corpus.sqlite"
    before = _immutable_rows(db, "SELECT label FROM samples WHERE idx < 5 ORDER BY idx")
    _run_killed(_WAL_WRITER_KILLED, db)
    assert (root / "corpus.sqlite-wal").stat().st_size > 0
    assert _immutable_rows(db, "SELECT label FROM samples WHERE idx < 5 ORDER BY idx") == before  # the file alone
    _, found = verify(root, layouts=["sqlite"], progress=False)
    assert sorted(m.index for m in found) == [0, 1, 2, 3, 4]
    assert all("stored label" in m.problem for m in found)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT label FROM samples WHERE idx < 5 ORDER BY idx").fetchall() == [
            (label + 1,) for (label,) in before]
    finally:
        conn.close()


def test_a_journal_another_process_holds_is_refused_in_one_line(corpus_copy, monkeypatch):
    """A writer still inside its transaction: sqlite3 would wait for it; the reader says so in one
    line naming the journal, never reads the half-written pages as samples."""
    import loaders.sqlite as reader

    monkeypatch.setattr(reader, "BUSY_TIMEOUT", 0.2)
    root = corpus_copy("gray8")
    script = _KILLED_MID_TRANSACTION.replace("os.kill(os.getpid(), signal.SIGKILL)",
                                             "print('ready', flush=True); sys.stdin.read()")
    writer = subprocess.Popen([sys.executable, "-c", script, str(root / "corpus.sqlite")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline() == b"ready\n"
        with pytest.raises(CorpusError) as e:
            open_corpus(root, "sqlite").read(0)
    finally:
        writer.kill()
        writer.wait()
    text = str(e.value)
    assert "corpus.sqlite-journal" in text and "another process" in text and "\n" not in text


def test_each_thread_reads_through_its_own_connection(corpus):
    """Thread workers' queries run in parallel: one connection shared would run them one at a time."""
    import threading

    from conformance import reference

    root = corpus("gray8")
    _, _, payloads = reference(root)
    r = open_corpus(root, "sqlite")
    got, conns = {}, set()

    def read(k):
        got[k] = [bytes(p) for p in r.read_many(list(range(k, len(r), 3)))]
        conns.add(id(r._local.conn))

    threads = [threading.Thread(target=read, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(conns) == 3 and len(r._conns) >= 3
    assert all(got[k] == payloads[k::3] for k in range(3))
    opened = list(r._conns)
    r.close()
    for conn in opened:  # every thread's connection closed with the reader
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")

"""A worker that makes no progress is a named error after the stated time, not a silent hang."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.build import generate
from generator.errors import UsageError
from generator.spec import Spec
from loaders import open_corpus, stuck
from loaders.pipeline import Loader, WorkerError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("stall")
    generate(root, Spec(height=16, width=16, channels=1, count=64), ["npy"], workers=1, progress=False)
    return root


def test_a_stopped_process_worker_is_named_after_the_stall_limit(corpus):
    loader = Loader(open_corpus(corpus, "npy"), batch_size=4, workers=2, worker_kind="fork", prefetch=1, stall_s=2)
    try:
        batches = loader.epoch(0)
        next(batches)
        pid = loader.worker_pids[1]
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(WorkerError) as err:
            for _ in batches:
                pass
        waited = time.monotonic() - t0
        message = str(err.value)
        assert f"pid {pid}" in message and "delivered no batch for" in message and "stall limit is 2 s" in message
        assert "stopped" in message and "kill -CONT" in message and message.count("\n") == 0
        assert 2 <= waited < 15
    finally:
        loader.close()
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # no worker left behind, stopped or not
        os.kill(pid, 0)


def test_the_stall_limit_is_checked(corpus):
    for bad in (0, -1, float("inf"), "10"):
        with pytest.raises(UsageError, match="stall_s"):
            Loader(open_corpus(corpus, "npy"), stall_s=bad)


# -- thread workers: a thread stuck in I/O cannot be stopped; it is named and abandoned ----------

@pytest.fixture
def files_corpus(tmp_path_factory):  # each test its own: one turns a sample into a FIFO
    root = tmp_path_factory.mktemp("stall-files")
    generate(root, Spec(height=8, width=8, channels=1, count=32, num_classes=2), ["files"], workers=1, progress=False)
    return root


def blocking_open(monkeypatch, fifo_of):
    """FilesReader opening the samples fifo_of(i) names as that FIFO, in blocking mode (the open
    waits for a writer, as an open on a hung mount waits for the server)."""
    from loaders.files import FilesReader

    plain = FilesReader._open_sample

    def open_sample(self, i):
        fifo = fifo_of(i)
        return plain(self, i) if fifo is None else os.open(fifo, os.O_RDONLY)

    monkeypatch.setattr(FilesReader, "_open_sample", open_sample)


def unblock(fifo) -> None:
    """Release a thread blocked opening `fifo` for reading (its read then sees EOF: we close)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: no reader waits (it was never opened, or already released)
        pass


def loader_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("loader_")]


def test_a_thread_worker_stuck_opening_a_sample_names_the_thread_the_file_and_the_sample(files_corpus, monkeypatch):
    """A sample whose open never returns (a FIFO in its place, opened in blocking mode: the open
    waits as one on a hung NFS mount waits for the server): after the stall limit, one line naming
    the thread, its batch, how long, the system call and file the kernel says it is blocked in,
    the sample that file is, and what to do. The stuck thread is a daemon (it never keeps the
    process from exiting) and ends once released."""
    reader = open_corpus(files_corpus, "files")
    stuck = 29
    path = reader.where(stuck)
    os.unlink(path)
    os.mkfifo(path)
    blocking_open(monkeypatch, lambda i: path if i == stuck else None)
    loader = Loader(reader, batch_size=4, workers=2, worker_kind="thread", shuffle="sequential", stall_s=2)
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkerError) as err:
            for _ in loader.epoch(0):
                pass
        waited = time.monotonic() - t0
        message = str(err.value)
        assert 2 <= waited < 15
        assert re.match(r"thread worker loader_[01] \(thread id \d+\) delivered no batch for \d+ s \(batch 7 of "
                        r"this epoch, files samples 28, 29, 30, 31; the stall limit is 2 s\): it is ", message), message
        assert f"in openat of {path} (sample {stuck})" in message
        assert message.endswith("a thread cannot be stopped, so the run ends here: check that the storage answers "
                                "(on a hung network mount, ls of the corpus hangs too), then rerun")
        assert message.count("\n") == 0
        stuck_threads = [t for t in loader_threads() if t.is_alive()]
        assert stuck_threads and all(t.daemon for t in stuck_threads)
        t0 = time.monotonic()
        loader.close()  # does not wait for the stuck thread
        assert time.monotonic() - t0 < 1
    finally:
        unblock(path)
        loader.close()
    for t in loader_threads():
        t.join(10)
    assert not [t for t in loader_threads() if t.is_alive()], "the released thread did not end"


def test_a_thread_worker_blocked_in_python_is_named_at_its_frame(corpus, monkeypatch):
    """A read that waits on something that is not a file (a lock, an event: the kernel names no
    file): the line names the thread's Python frame instead, and closing the loader does not wait
    for the stuck thread."""
    import threading

    from loaders.npy import NpyReader

    release = threading.Event()
    plain = NpyReader.read_batch

    def waiting_read_batch(self, indices, out=None):
        if 40 in indices.tolist():
            release.wait()
        return plain(self, indices, out)

    monkeypatch.setattr(NpyReader, "read_batch", waiting_read_batch)
    loader = Loader(open_corpus(corpus, "npy"), batch_size=8, workers=3, worker_kind="thread", shuffle="sequential",
                    stall_s=1.5)
    try:
        with pytest.raises(WorkerError) as err:
            for _ in loader.epoch(0):
                pass
        message = str(err.value)
        assert re.search(r"delivered no batch for \d+ s \(batch 5 of this epoch, npy samples 40, 41, 42, 43, 44, "
                         r"45, 46, 47; ", message), message
        assert "the stall limit is 1.5 s" in message
        assert "test_stalls.py:" in message and "(waiting_read_batch)" in message
        t0 = time.monotonic()
        loader.close()
        assert time.monotonic() - t0 < 1
        loader = Loader(open_corpus(corpus, "npy"), batch_size=8, workers=2, worker_kind="thread", stall_s=1.5)
        release.set()
        assert sum(len(b.indices) for b in loader.epoch(1)) == 64  # a fresh pool reads on
    finally:
        release.set()
        loader.close()


def test_a_fetch_that_raises_timeout_error_is_its_error_not_a_stall(corpus, monkeypatch):
    """The watchdog's own wait must not take a reader's TimeoutError (an S3 read timing out) for
    its batch still running: it comes out as raised, at once."""
    from loaders.npy import NpyReader

    def timing_out(self, indices, out=None):
        raise TimeoutError("the store did not answer")

    monkeypatch.setattr(NpyReader, "read_batch", timing_out)
    loader = Loader(open_corpus(corpus, "npy"), batch_size=8, workers=2, worker_kind="thread", stall_s=30)
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="the store did not answer"):
            next(loader.epoch(0))
        assert time.monotonic() - t0 < 5
    finally:
        loader.close()


@pytest.mark.skipif(stuck.ARCH is None, reason="system call numbers are known here for x86-64 and arm64 only")
def test_what_a_stuck_thread_is_doing_is_read_from_the_kernel(tmp_path):
    """The call and file a blocked thread is in, from /proc: a read names its descriptor's file, an
    open its path (read from the process's memory); a file holding many samples names the sample
    at the offset through the reader's extents."""
    import threading

    r, w = os.pipe()
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    reading = threading.Thread(target=os.read, args=(r, 10), daemon=True)
    opening = threading.Thread(target=os.open, args=(fifo, os.O_RDONLY), daemon=True)
    try:
        for t in (reading, opening):
            t.start()
        time.sleep(0.3)
        assert re.fullmatch(r"waiting in the kernel, in read of pipe:\[\d+\]", stuck.doing(reading))
        assert stuck.doing(opening) == f"waiting in the kernel, in openat of {fifo}"
    finally:
        os.write(w, b"x")
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        for t in (reading, opening):
            t.join(5)
        os.close(r)
        os.close(w)

    class OneFile:  # samples back to back in one file, 10 bytes each
        def where(self, i):
            return fifo

        def extents(self, idx):
            return [[(fifo, 10 * i, 10)] for i in idx]

    assert stuck._sample(OneFile(), [3, 4, 5], fifo, 45) == 4
    assert stuck._sample(OneFile(), [3, 4, 5], fifo, 95) is None
    assert stuck._sample(None, [3], fifo, 45) is None


BENCH_WITH_A_HUNG_SAMPLE = """
import os, sys
from loaders import pipeline
from loaders.files import FilesReader
fifo, hung = sys.argv[1], int(sys.argv[2])
plain, init = FilesReader._open_sample, pipeline.Loader.__init__
FilesReader._open_sample = lambda self, i: os.open(fifo, os.O_RDONLY) if i == hung else plain(self, i)
pipeline.Loader.__init__ = lambda self, *a, **kw: init(self, *a, **{**kw, "stall_s": 2})
from generator.cli import run_main
from bench.cli.commands import PROG, interrupted, main
sys.exit(run_main(PROG, main, sys.argv[3:], interrupted=interrupted))
"""


def test_a_bench_run_whose_thread_worker_hangs_ends_in_one_line_and_exits(files_corpus, tmp_path):
    """bench run --workers 2 (threads, the default kind) with one sample's open hung for good (never
    released): after the stall limit, one line naming the thread, the batch and the file, exit 1,
    no results and nothing left beside them; and the process exits although the thread is still
    blocked (daemon threads: the interpreter does not wait for them)."""
    fifo = tmp_path / "hung"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    argv = [sys.executable, "-c", BENCH_WITH_A_HUNG_SAMPLE, str(fifo), "29", "run", "--corpus", str(files_corpus),
            "--output", str(out / "r.json"), "--layouts", "files", "--cache", "warm", "--workers", "2",
            "--worker-kind", "thread", "--batch-size", "4", "--epochs", "1", "--no-naive", "--no-sample-latency",
            "--evict", "fadvise", "--quiet"]
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m bench: error: thread worker loader_"), p.stderr
    assert f"in openat of {fifo}" in lines[0] and "the stall limit is 2 s" in lines[0]
    assert re.search(r"\(batch \d+ of this epoch, files samples [\d, ]*\b29\b", lines[0]), lines[0]
    assert not out.exists() or os.listdir(out) == [], os.listdir(out)

"""Interrupted generation: after kill -9, Ctrl-C or a full disk, rerunning the same command
ends with a corpus identical to an uninterrupted run, and no reader ever sees a partial file.

The generator runs as a real process (`python -m generator`) and is stopped once it is writing,
after a short random delay (printed on failure). Corpora are small but take a few tenths of a
second to write, so the signal lands mid-write; a run that finished first is retried sooner.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lmdb
import pytest
from conftest import mounted_tmpfs

import generator.build
from generator.__main__ import main
from generator.build import IN_PROGRESS, generate
from generator.cli import run_main
from generator.layouts import get_layout
from generator.layouts.files import TMP_MARK
from generator.layouts.lmdb import TXN_BYTES
from generator.manifest import MANIFEST, read_manifest
from generator.spec import preset_spec

# layout -> the corpus it is interrupted on: long enough to write that a kill lands mid-way.
CORPUS = {
    "files": ("cifar", 3000),  # 3,000 small files
    "hdf5": ("hd", 16),  # 100 MB in one file
    "lmdb": ("hd", 16),  # 100 MB, committed every ~11 samples (64 MiB)
}
# What appears once a layout's writing has begun: the moment to start the random delay.
STARTED = {"files": "files", "hdf5": ".corpus.h5.partial", "lmdb": "lmdb.partial/data.mdb"}
FINAL = {"files": "files", "hdf5": "corpus.h5", "lmdb": "lmdb"}
PARTIAL = {"hdf5": ".corpus.h5.partial", "lmdb": "lmdb.partial"}


def command(layout: str, out: Path) -> list[str]:
    preset, count = CORPUS[layout]
    return [sys.executable, "-m", "generator", "--preset", preset, "--count", str(count), "--out", str(out),
            "--layouts", layout, "--workers", "2", "--quiet"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Where these corpora go: /dev/shm when it has room, else the test temp directory.

    Interruption is about what the generator leaves behind, which is the same on tmpfs; tmpfs
    spares the suite the disk's noise and ext4's slow unlinking of thousands of files."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > (2 << 30):
        root = Path(tempfile.mkdtemp(prefix="layoutbench-interrupt-", dir=shm))
    else:
        root = tmp_path_factory.mktemp("interrupt")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(workdir):
    """layout -> directory of the same corpus, written without interruption (in this process)."""

    def get(layout: str) -> Path:
        preset, count = CORPUS[layout]
        root = workdir / f"reference-{preset}"
        generate(root, preset_spec(preset, count=count), [layout], workers=2, progress=False)  # once
        return root

    return get


@pytest.fixture
def scratch(workdir, request):
    path = workdir / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)  # up to 100 MB each: do not keep them around


def lmdb_items(path: Path) -> dict:
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=2, subdir=True)
    try:
        out = {}
        with env.begin() as txn:
            for name in (b"payload", b"meta"):
                db = env.open_db(name, txn=txn, create=False)
                out.update({(name, bytes(k)): bytes(v) for k, v in txn.cursor(db)})
        return out
    finally:
        env.close()


def same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 24), fb.read(1 << 24)
            if x != y:
                return False
            if not x:
                return True


def assert_layout_identical(root: Path, ref: Path, layout: str) -> None:
    """Every stored byte of `layout` in root is the reference's (LMDB: every key and value)."""
    if layout == "files":
        mine = sorted(p.relative_to(root) for p in (root / "files").rglob("*") if p.is_file())
        theirs = sorted(p.relative_to(ref) for p in (ref / "files").rglob("*") if p.is_file())
        assert mine == theirs
        for rel in mine:
            assert same_bytes(root / rel, ref / rel), rel
    else:  # the writer's snapshot: file bytes, or records where the library may lay them out otherwise
        cls = get_layout(layout).writer_class()
        assert cls.snapshot(root) == cls.snapshot(ref)


def assert_nothing_partial_visible(root: Path, ref: Path, layout: str) -> None:
    """What a reader could pick up is complete: the manifest lists only finished layouts, and a
    file under its final name holds exactly the reference's bytes."""
    if (root / MANIFEST).exists():
        assert layout not in read_manifest(root).layouts
    final = root / FINAL[layout]
    if layout == "files":
        for p in final.rglob("*"):
            if p.is_file() and TMP_MARK not in p.name:
                assert p.stat().st_size == (ref / p.relative_to(root)).stat().st_size, p
                assert same_bytes(p, ref / p.relative_to(root)), p
    elif final.exists():  # published only once complete (e.g. killed before the manifest was written)
        assert_layout_identical(root, ref, layout)


def finished(root: Path, layout: str) -> bool:
    return (root / MANIFEST).exists() and layout in read_manifest(root).layouts


def start_and_stop(layout: str, out: Path, sig: int, delay: float, whole_group: bool = True):
    """Start the generator, wait until it writes `layout`, sleep `delay`, send `sig`.
    Returns (returncode, stderr)."""
    proc = subprocess.Popen(command(layout, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / STARTED[layout]).exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "the generator never started writing"
            time.sleep(0.002)
        time.sleep(delay)
        if proc.poll() is None:
            if whole_group:
                os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C, or `kill -9 -PGID`
            else:
                os.kill(proc.pid, sig)  # the generator only: its worker processes must not outlive it
        _, err = proc.communicate(timeout=60)
        return proc.returncode, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rerun_and_compare(out: Path, ref: Path, layout: str) -> None:
    p = subprocess.run(command(layout, out), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    got, want = read_manifest(out), read_manifest(ref)
    assert (got.spec, got.crc32, got.sizes, got.labels) == (want.spec, want.crc32, want.sizes, want.labels)
    assert layout in got.layouts
    assert_layout_identical(out, ref, layout)
    leftovers = [p.name for p in out.iterdir() if p.name in (IN_PROGRESS, *PARTIAL.values())]
    leftovers += [str(p) for p in out.rglob(f"*{TMP_MARK}*")]
    assert not leftovers


def interrupt(layout: str, out: Path, ref: Path, sig: int, whole_group: bool = True):
    """Stop a run mid-write (retrying sooner if it finished first); returns (returncode, stderr, delay)."""
    rng = random.Random()
    limit = 0.2
    for _ in range(5):
        delay = rng.uniform(0, limit)
        shutil.rmtree(out, ignore_errors=True)
        code, err = start_and_stop(layout, out, sig, delay, whole_group)
        if not finished(out, layout):
            return code, err, delay
        limit /= 3
    pytest.fail(f"the {layout} corpus was always finished before the signal; make it bigger")


@pytest.mark.parametrize("attempt", range(2))
@pytest.mark.parametrize("layout", ["files", "hdf5", "lmdb"])
def test_kill_9_mid_write_then_rerun_gives_the_same_corpus(reference, scratch, layout, attempt):
    ref = reference(layout)
    out = scratch / "corpus"
    code, err, delay = interrupt(layout, out, ref, signal.SIGKILL)
    assert code == -signal.SIGKILL, (delay, err)
    assert_nothing_partial_visible(out, ref, layout)
    rerun_and_compare(out, ref, layout)


def test_kill_9_of_the_generator_alone_leaves_no_worker_writing(reference, scratch):
    """`kill -9 PID` of the generator (not its group): its worker processes die with it, so the
    rerun right after is neither refused by the lock nor raced by an orphan."""
    ref = reference("files")
    out = scratch / "corpus"
    code, err, delay = interrupt("files", out, ref, signal.SIGKILL, whole_group=False)
    assert code == -signal.SIGKILL, (delay, err)
    assert_nothing_partial_visible(out, ref, "files")
    rerun_and_compare(out, ref, "files")


def committed(out: Path) -> int:
    """Samples committed in the partial LMDB environment (read as another process would)."""
    env = lmdb.open(str(out / "lmdb.partial"), readonly=True, lock=False, max_dbs=2, subdir=True)
    try:
        with env.begin() as txn:
            return txn.stat(env.open_db(b"payload", txn=txn, create=False))["entries"]
    except lmdb.Error:  # the sub-database is not committed yet
        return 0
    finally:
        env.close()


def test_lmdb_resumes_after_its_last_commit(reference, scratch):
    """Killed after LMDB committed its first batch, the rerun goes on in the same environment."""
    ref = reference("lmdb")
    out = scratch / "corpus"
    data = out / "lmdb.partial" / "data.mdb"
    proc = subprocess.Popen(command("lmdb", out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (data.exists() and data.stat().st_size >= TXN_BYTES and committed(out)) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.kill()
    finally:
        proc.wait()
    assert not finished(out, "lmdb"), "the generator finished before its first commit was seen"
    assert 0 < committed(out) < CORPUS["lmdb"][1]
    inode = data.stat().st_ino
    rerun_and_compare(out, ref, "lmdb")
    assert (out / "lmdb" / "data.mdb").stat().st_ino == inode  # resumed, not rewritten from scratch


@pytest.mark.parametrize("layout", ["files", "hdf5", "lmdb"])
def test_ctrl_c_prints_one_line_exits_130_and_resumes(reference, scratch, layout):
    ref = reference(layout)
    out = scratch / "corpus"
    code, err, delay = interrupt(layout, out, ref, signal.SIGINT)
    assert code == 130, (delay, err)
    assert err == "python -m generator: interrupted; rerun the same command to resume\n", (delay, err)
    assert (out / IN_PROGRESS).exists()  # marked incomplete
    assert_nothing_partial_visible(out, ref, layout)
    rerun_and_compare(out, ref, layout)


# --- a disk that fills up mid-write -----------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only): grow(mib) frees space, as a user would after the error."""
    with mounted_tmpfs(tmp_path / "small", "4m") as mnt:
        def grow(mib: int) -> None:
            subprocess.run(["mount", "-o", f"remount,size={mib}m", str(mnt)], check=True)

        yield mnt, grow


@pytest.mark.parametrize("layout", ["files", "hdf5", "lmdb"])
def test_disk_full_mid_write_is_one_clear_error_and_a_rerun_finishes(
        small_disk, tmp_path, monkeypatch, capsys, layout):
    mnt, grow = small_disk
    out = mnt / "corpus"
    args = ["--preset", "imagenet", "--count", "60", "--out", str(out), "--layouts", layout,
            "--workers", "2", "--quiet"]  # 9 MB of payload for 4 MiB of disk
    # Skip the up-front estimate so that the disk really fills up mid-write.
    monkeypatch.setattr(generator.build, "_check_space", lambda *a: None)
    code = run_main("python -m generator", main, args)
    out_text, err = capsys.readouterr()
    assert code == 1 and out_text == ""
    assert err == (f"python -m generator: error: disk full while writing the {layout} layout in {out}; "
                   f"free space and rerun the same command to resume (the corpus is marked incomplete "
                   f"until then; finished layouts stay usable)\n")
    assert not (out / MANIFEST).exists() and (out / IN_PROGRESS).exists()

    grow(64)
    monkeypatch.undo()
    assert run_main("python -m generator", main, args) == 0
    ref = tmp_path / "ref"
    generate(ref, preset_spec("imagenet", count=60), [layout], workers=1, progress=False)
    got, want = read_manifest(out), read_manifest(ref)
    assert (got.crc32, got.sizes, got.labels) == (want.crc32, want.sizes, want.labels)
    assert_layout_identical(out, ref, layout)


def test_a_full_disk_after_a_finished_layout_keeps_that_layout(small_disk, monkeypatch, capsys):
    mnt, grow = small_disk
    out = mnt / "corpus"
    args = ["--preset", "imagenet", "--count", "20", "--out", str(out), "--layouts", "hdf5,lmdb",
            "--workers", "1", "--quiet"]  # 3 MB per layout: hdf5 fits, lmdb does not
    monkeypatch.setattr(generator.build, "_check_space", lambda *a: None)
    assert run_main("python -m generator", main, args) == 1
    assert "disk full while writing the lmdb layout" in capsys.readouterr().err
    assert list(read_manifest(out).layouts) == ["hdf5"]  # readable meanwhile
    grow(16)
    assert run_main("python -m generator", main, args) == 0
    assert list(read_manifest(out).layouts) == ["hdf5", "lmdb"]

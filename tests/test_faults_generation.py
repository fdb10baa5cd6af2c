"""Faults during generation (issue 5): kill -9 at random points of all three layouts, a disk that
fills up after the space check (a real small filesystem as root, an injected ENOSPC without), and
two generators started on one directory.

Each fault ends in a dead process or one clear line; no reader accepts a layout before it is
complete; a rerun of the same command finishes the corpus identical to an uninterrupted run.
tests/test_interrupt.py holds the single-layout kill, Ctrl-C and tmpfs tests these build on.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import mounted_tmpfs
from test_interrupt import assert_layout_identical, same_bytes

import generator.build
import generator.layouts.files
from generator.__main__ import main
from generator.build import IN_PROGRESS, LOCK
from generator.cli import run_main
from generator.errors import CorpusError
from generator.layouts.files import TMP_MARK
from generator.layouts.hdf5 import HDF5Writer
from generator.layouts.lmdb import LMDBWriter
from generator.manifest import MANIFEST, read_manifest, tmp_prefix
from loaders import open_corpus
from loaders.verify import verify

PROG = "python -m generator"
from generator.layouts import get_layout, layout_ids

LAYOUTS = layout_ids(available=True)  # registered and installed: what the generator writes by default
WRITERS = {name: get_layout(name).writer_class() for name in LAYOUTS}
# what a layout's writer leaves besides its published target (partial files and directories)
PARTIALS = tuple(p.name for cls in WRITERS.values() for p in cls(Path("."), None, None).paths() if p.name != cls.target)
# The kills alternate between two corpora: fixed-size TIFFs (contiguous HDF5, mapped reads) and
# deflated ones (variable sizes: a chunked, growing HDF5 dataset). Each writes all three layouts
# in about 0.15 s on tmpfs, so one process start plus a kill costs ~0.4 s.
KINDS = {
    "tiff": ["--shape", "32x32x3", "--count", "1000"],
    "deflate": ["--shape", "24x24x3", "--count", "700", "--compression", "deflate"],
}
COMMON = ["--workers", "2", "--quiet"]
# `python -m generator`, with LMDB committing every 100 samples instead of every 16,384, so that at
# this size a kill lands between commits and the rerun resumes inside the environment.
LAUNCH = ("import sys, generator.layouts.lmdb as m; m.TXN_SAMPLES = 100\n"
          "from generator.__main__ import main; from generator.cli import run_main\n"
          "sys.exit(run_main('python -m generator', main, sys.argv[1:]))")
def writing_began(out: Path, name: str) -> bool:
    """A layout's writing began: any path of its writer exists (its tree, or its partial)."""
    return any(p.exists() for p in WRITERS[name](out, None, None).paths())


# Each round: a kill on a fresh directory, a kill of the resumed run, then the finishing rerun. Two
# rounds per layout, so the kinds (2) and the targeted layouts both come round evenly.
ROUNDS = 2 * len(LAYOUTS)
MIN_KILLS = 20  # kills that must land mid-generation


def args_for(kind: str, out: Path) -> list[str]:
    return [*KINDS[kind], "--out", str(out), *COMMON]


@pytest.fixture(scope="module")
def workdir():
    """tmpfs when there is room (what a kill leaves behind is the same; tmpfs spares the suite the
    disk's noise), else the system temp directory."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > (1 << 30) else None
    root = Path(tempfile.mkdtemp(prefix="layoutbench-faults-", dir=base))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def references(workdir):
    """kind -> the same corpus written without interruption, by the same command, in this process."""
    refs = {}
    for kind in KINDS:
        refs[kind] = workdir / f"reference-{kind}"
        assert run_main(PROG, main, args_for(kind, refs[kind])) == 0
    return refs


def group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """Wait until no process of the group is left (the generator's workers die with it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.002)
    return False


def marker_inode(out: Path) -> int | None:
    try:
        return (out / IN_PROGRESS).stat().st_ino
    except FileNotFoundError:
        return None


def run_and_kill(kind: str, out: Path, delay: float, group: bool, layout: str | None = None):
    """Start the generator; `delay` s after it starts writing `layout` (on a fresh directory), or
    after it starts writing at all (its .generating.json marker is written anew: fresh or resumed),
    send SIGKILL to its group (as `kill -9 -PGID`) or to the generator alone (its workers must die
    with it). Returns (returncode, stderr)."""
    before = marker_inode(out)
    started = (lambda: writing_began(out, layout)) if layout else (lambda: marker_inode(out) not in (None, before))
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args_for(kind, out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while proc.poll() is None and not started():
            time.sleep(0.0005)
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < delay:
            time.sleep(0.0005)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL) if group else os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert group_gone(proc.pid), "a worker outlived the killed generator"
        return proc.returncode, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def layout_seconds(kind: str, out: Path) -> dict[str, float]:
    """How long each layout's writing takes, from its first path appearing to the next layout's (the
    last: to the marker going once the manifest lists everything): the median of three fresh runs,
    polled as run_and_kill polls."""
    runs = []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args_for(kind, out)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        seen: dict[str, float] = {}
        while proc.poll() is None and "done" not in seen:
            now = time.monotonic()
            for name in LAYOUTS:
                if name not in seen and writing_began(out, name):
                    seen[name] = now
            if LAYOUTS[-1] in seen and not (out / IN_PROGRESS).exists():
                seen["done"] = now
            time.sleep(0.0005)
        assert proc.wait() == 0
        ends = [seen.get(name) for name in (*LAYOUTS[1:], "done")]
        runs.append({name: (end or time.monotonic()) - seen.get(name, time.monotonic())
                     for name, end in zip(LAYOUTS, ends)})
        shutil.rmtree(out)
    return {name: sorted(r[name] for r in runs)[1] for name in LAYOUTS}


def phase(out: Path) -> str:
    """Where a kill landed, from what it left: the layout being written, or before/after all of them."""
    if not (out / LOCK).exists():
        return "before start"
    done = set(read_manifest(out).layouts) if (out / MANIFEST).exists() else set()
    if done >= set(LAYOUTS):
        return "finishing" if (out / IN_PROGRESS).exists() else "finished"
    if not (out / IN_PROGRESS).exists():
        return "starting"
    return next(name for name in LAYOUTS if name not in done)


def assert_no_reader_accepts_a_partial_layout(out: Path, ref: Path) -> None:
    """Every layout the manifest lists is complete and the reference's, byte for byte; every other
    layout is refused by open_corpus and verify; what sits under a final name is complete."""
    done = set(read_manifest(out).layouts) if (out / MANIFEST).exists() else set()
    for name in LAYOUTS:
        if name in done:
            assert_layout_identical(out, ref, name)
            reader = open_corpus(out, name, verify=True)  # every payload against its manifest crc32
            everything = list(range(len(reader)))
            assert [bytes(p) for p in reader.read_many(everything)] == [
                bytes(p) for p in open_corpus(ref, name).read_many(everything)]
            reader.close()
        else:
            with pytest.raises(CorpusError, match="not complete|incomplete|no such corpus directory"):
                open_corpus(out, name)
    if not done:
        with pytest.raises(CorpusError, match="incomplete|no such corpus directory"):
            verify(out, progress=False)
    # Nothing partial under a final name: loose files are linked in only when whole, HDF5 and LMDB
    # are renamed into place only when complete (possibly just before the manifest lists them).
    for path in (out / "files").rglob("*") if (out / "files").is_dir() else ():
        if path.is_file() and TMP_MARK not in path.name:
            assert same_bytes(path, ref / path.relative_to(out)), path
    for name, cls in WRITERS.items():
        if name != "files" and (out / cls.target).exists():
            assert_layout_identical(out, ref, name)


def assert_identical_to_reference(out: Path, ref: Path) -> None:
    got, want = read_manifest(out), read_manifest(ref)
    assert (got.spec, got.crc32, got.sizes, got.labels) == (want.spec, want.crc32, want.sizes, want.labels)
    assert sorted(got.layouts) == sorted(LAYOUTS)
    for name in LAYOUTS:
        assert_layout_identical(out, ref, name)  # files and corpus.h5 byte for byte; LMDB every key and value
    leftovers = [p.name for p in out.iterdir() if p.name in (IN_PROGRESS, *PARTIALS)
                 or (p.name.startswith(".") and p.name != LOCK)] + [str(p) for p in out.rglob(f"*{TMP_MARK}*")]
    assert not leftovers


def test_kill_9_at_random_points_of_every_layout_then_rerun_gives_the_same_corpus(workdir, references, capsys):
    """At least 20 SIGKILLs at random moments of generation, each layout's writing cut several times,
    on fresh and on already-resumed corpora, killing the process group or the generator alone.
    After every kill no reader accepts an incomplete layout; after every round the rerun's corpus
    equals the uninterrupted one, byte for byte."""
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    seconds = {kind: layout_seconds(kind, workdir / f"calibrate-{kind}") for kind in KINDS}
    landed: list[tuple[str, str, float]] = []  # (kind, phase, delay) of every kill
    first_phases = Counter()
    identical = 0
    rounds = 0
    def uncut():
        return [name for name in LAYOUTS if not first_phases[name]]

    while rounds < 3 * ROUNDS and (rounds < ROUNDS or uncut() or
                                   sum(p not in ("finished", "before start") for _, p, _ in landed) < MIN_KILLS):
        kind = list(KINDS)[rounds % len(KINDS)]
        out = workdir / f"round-{rounds}"
        # First kill: at a random moment of one layout's writing (the rounds take the layouts in
        # turn, then any layout no kill has cut yet: on a busy machine a fast layout may finish
        # before its kill lands). Second: a random moment of the resumed run's rewriting of the
        # layout the first cut.
        late = rounds >= ROUNDS and uncut()
        target = uncut()[0] if late else LAYOUTS[rounds % len(LAYOUTS)]
        for k in range(2):
            cut = landed[-1][1] if k else target
            # within the first 60 % (a retry: 20 %) of the layout's measured writing time, so it lands
            # there even when this run is a little faster than the calibration runs were
            share = 0.2 if late and not k else 0.6
            delay = share * rng.random() * seconds[kind].get(cut, min(seconds[kind].values()))
            code, err = run_and_kill(kind, out, delay, group=(rounds + k) % 2 == 0, layout=None if k else target)
            where = phase(out)
            landed.append((kind, where, round(delay, 4)))
            context = f"seed {seed}, round {rounds}, kill {k}, {kind}, {delay:.4f} s, {where}: {err}"
            if where == "finished":  # done before the signal, or killed on its way out
                assert code in (0, -signal.SIGKILL), context
            else:
                assert code == -signal.SIGKILL, context
            if k == 0:
                first_phases[where] += 1
            assert_no_reader_accepts_a_partial_layout(out, references[kind])
        assert run_main(PROG, main, args_for(kind, out)) == 0  # the same command, to the end
        assert capsys.readouterr().err == ""
        assert_identical_to_reference(out, references[kind])
        if kind == "tiff":  # and what `python -m loaders verify` says (deflate's tifffile decoding is slow)
            assert verify(out, progress=False)[1] == []
        identical += 1
        shutil.rmtree(out)
        rounds += 1
    mid = [p for _, p, _ in landed if p not in ("finished", "before start")]
    summary = f"seed {seed}: {len(mid)} kills mid-generation, phases {Counter(p for _, p, _ in landed)}, {landed}"
    print(summary)
    assert len(mid) >= MIN_KILLS, summary
    assert all(first_phases[name] >= 1 for name in LAYOUTS), summary  # every layout was cut while being written
    assert identical == rounds


# --- a disk that fills up after the space check -------------------------------------------------

def one_line(err: str, *fragments: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


DISK_ARGS = ["--preset", "imagenet", "--count", "40", "--workers", "2", "--quiet"]  # 6 MB of payload per layout


@pytest.fixture(scope="module")
def disk_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("disk-reference")
    assert run_main(PROG, main, [*DISK_ARGS, "--out", str(root)]) == 0
    return root


@pytest.fixture
def small_fs(tmp_path):
    """A 16 MiB tmpfs of its own (root only): what fills up is this filesystem and nothing else."""
    with mounted_tmpfs(tmp_path / "fs", "16m") as mnt:
        yield mnt


def fill(path: Path, leave: int) -> None:
    """A ballast file taking all but `leave` bytes of its filesystem's free space."""
    size = shutil.disk_usage(path.parent).free - leave
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_disk_that_fills_after_the_space_check(small_fs, disk_reference, monkeypatch, capsys, layout):
    """The estimate passes (16 MiB free for 6 MB), then another process fills the disk: one line naming
    the layout and what to do, exit 1, the corpus marked incomplete and refused by every reader, no
    other file on the filesystem touched; after freeing space the same command finishes it identically."""
    neighbour = small_fs / "neighbour.bin"
    mine = os.urandom(1 << 16)
    neighbour.write_bytes(mine)
    out, ballast = small_fs / "corpus", small_fs / "ballast"
    args = [*DISK_ARGS, "--out", str(out), "--layouts", layout]
    real_check = generator.build._check_space

    def check_then_fill(root, spec, layouts):
        real_check(root, spec, layouts)  # passes: the real estimate against the real free space
        # less than the layout will write (lance compresses this smooth content to under 1 MB)
        fill(ballast, leave=(64 << 10) if layout == "lance" else 2 << 20)

    monkeypatch.setattr(generator.build, "_check_space", check_then_fill)
    assert run_main(PROG, main, args) == 1
    one_line(capsys.readouterr().err, f"disk full while writing the {layout} layout in {out}; free space and rerun "
                                      f"the same command to resume (the corpus is marked incomplete")
    assert (out / IN_PROGRESS).exists() and not (out / MANIFEST).exists()
    with pytest.raises(CorpusError, match="incomplete"):
        open_corpus(out, layout)
    with pytest.raises(CorpusError, match="incomplete"):
        verify(out, progress=False)
    assert sorted(p.name for p in small_fs.iterdir()) == ["ballast", "corpus", "neighbour.bin"]
    assert neighbour.read_bytes() == mine
    assert not list(out.glob(f"{tmp_prefix(MANIFEST)}*")) and not list(out.glob(f"{tmp_prefix(IN_PROGRESS)}*"))
    for path in (out / "files").rglob("*.tif") if (out / "files").is_dir() else ():
        assert same_bytes(path, disk_reference / path.relative_to(out)), path  # whole files only

    ballast.unlink()
    monkeypatch.undo()
    assert run_main(PROG, main, args) == 0
    got, want = read_manifest(out), read_manifest(disk_reference)
    assert (got.crc32, got.sizes, got.labels, list(got.layouts)) == (want.crc32, want.sizes, want.labels, [layout])
    assert_layout_identical(out, disk_reference, layout)
    assert neighbour.read_bytes() == mine
    assert sorted(p.name for p in small_fs.iterdir()) == ["corpus", "neighbour.bin"]


def enospc(*_, **__):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_on_call(n: int, real):
    """`real`, except that call number n raises ENOSPC (as a write to a full disk does)."""
    calls = [0]

    def wrapped(*args, **kw):
        calls[0] += 1
        if calls[0] == n:
            enospc()
        return real(*args, **kw)

    return wrapped


# Where the disk fills up: (what to patch, the wrapper, what the message names, the layouts complete after it).
INJECTIONS = {
    "files": (generator.layouts.files, "_write_all", lambda real: fail_on_call(7, real), "the files layout", []),
    "hdf5": (HDF5Writer, "put_many", lambda real: fail_on_call(2, real), "the hdf5 layout", ["files"]),
    "lmdb": (LMDBWriter, "put_many", lambda real: fail_on_call(2, real), "the lmdb layout", ["files", "hdf5"]),
    "manifest": (generator.build, "write_manifest", lambda real: fail_on_call(2, real), MANIFEST, ["files"]),
    "marker": (generator.build, "write_json_atomic", lambda real: fail_on_call(1, real), IN_PROGRESS, []),
}


@pytest.mark.parametrize("where", INJECTIONS)
def test_an_injected_enospc_is_one_line_and_a_rerun_finishes(tmp_path, monkeypatch, capsys, where):
    """Without root: ENOSPC raised where each layout (or the manifest) writes. One line naming what
    was being written, exit 1, layouts before it complete and readable, the rest refused, a file
    beside the corpus untouched; the rerun finishes identical to an uninterrupted run."""
    neighbour = tmp_path / "neighbour.bin"
    mine = os.urandom(4096)
    neighbour.write_bytes(mine)
    out, ref = tmp_path / "corpus", tmp_path / "reference"
    args = ["--shape", "16x16x3", "--count", "300", "--workers", "1", "--quiet"]  # 1: files written in this process
    owner, name, wrap, what, complete = INJECTIONS[where]
    monkeypatch.setattr(owner, name, wrap(getattr(owner, name)))
    assert run_main(PROG, main, [*args, "--out", str(out)]) == 1
    one_line(capsys.readouterr().err, f"disk full while writing {what} in {out}; free space and rerun")
    listed = list(read_manifest(out).layouts) if (out / MANIFEST).exists() else []
    assert listed == complete
    for layout in LAYOUTS:
        if layout in complete:
            assert verify(out, [layout], progress=False)[1] == []
        else:
            with pytest.raises(CorpusError, match="not complete|incomplete"):
                open_corpus(out, layout)
    assert neighbour.read_bytes() == mine and sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "neighbour.bin"]

    monkeypatch.undo()
    assert run_main(PROG, main, [*args, "--out", str(out)]) == 0
    assert run_main(PROG, main, [*args, "--out", str(ref)]) == 0
    assert_identical_to_reference(out, ref)
    assert neighbour.read_bytes() == mine


# --- two generators at once ---------------------------------------------------------------------------

def test_a_second_generator_on_the_same_directory_is_refused_not_interleaved(workdir, references):
    """The first generator is frozen (SIGSTOP) while it writes, holding the lock; a second one, plain
    or with --force and another seed, is refused with one line naming the first's pid and changes
    nothing; the first then finishes a corpus identical to an uninterrupted one."""
    out = workdir / "two-generators"
    first = subprocess.Popen([sys.executable, "-c", LAUNCH, *args_for("tiff", out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / IN_PROGRESS).exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first generator never started writing"
            time.sleep(0.0005)
        os.killpg(first.pid, signal.SIGSTOP)
        before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        for extra in ([], ["--force", "--seed", "5"]):
            p = subprocess.run([sys.executable, "-m", "generator", *args_for("tiff", out), *extra],
                               capture_output=True, text=True, timeout=60)
            assert p.returncode == 2 and p.stdout == "", p
            one_line(p.stderr, f"another generator (pid {first.pid}) is writing {out}", "wait for it")
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # not a file added or removed
        os.killpg(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 0 and err == ""
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert read_manifest(out).spec.seed == 0
    assert_identical_to_reference(out, references["tiff"])
    shutil.rmtree(out)

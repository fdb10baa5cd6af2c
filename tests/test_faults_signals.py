"""Whatever ends a command, nothing of it is left (issue 12): no worker process, no resource
tracker, no shared memory, no map of the corpus, no stray file; and it says so in one line.

Real processes throughout: `python -m bench run` with process workers (fork and spawn) is sent
SIGTERM, SIGINT or SIGKILL to its pid only (as the OOM killer does: the workers get nothing),
and then every process it started must be gone within a second, none may map the corpus or the
batch slots, and /dev/shm holds nothing of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc/*/stat)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d.name))
    return out


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for c in children(todo.pop()):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


def alive(pid: int) -> bool:
    """Running or sleeping (a zombie holds no memory, map or file: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def mapping(fragment: str) -> list[int]:
    """Every process on the machine with a map whose path contains `fragment`."""
    return [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and fragment in maps(int(d.name))]


def in_shm(pid: int) -> bool:
    """Whether the process maps or holds open a file in /dev/shm (what a kill would leave there).
    Checked before the kill, on the processes themselves: other processes on the machine make and
    remove /dev/shm segments of their own at any time, so a listing after would prove nothing."""
    try:
        fds = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        fds = []
    return "/dev/shm/" in maps(pid) or any(f.startswith("/dev/shm/") for f in fds)


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def bench_run(corpus: Path, out: Path, kind: str) -> subprocess.Popen:
    """A bench run that reads LMDB (a map in every worker) for far longer than the test waits."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--corpus", str(corpus), "--output", str(out / "r.json"),
         "--layouts", "lmdb", "--cache", "warm", "--epochs", "100000", "--batch-size", "4", "--workers", "2",
         "--worker-kind", kind, "--no-naive", "--no-sample-latency", "--quiet"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
@pytest.mark.parametrize("kind", ["fork", "spawn"])
def test_a_killed_bench_run_leaves_no_worker_segment_or_map(corpus, tmp_path, kind, sig):
    """After the signal to the bench's pid alone (within 1 s for SIGKILL, 3 s for the signals it
    unwinds from): every process it started (workers, spawn's resource tracker) is gone, no process
    maps the corpus or the batch slots, and none of them held anything in /dev/shm to leave there;
    SIGTERM and SIGINT end in one line (exit 143 / 130), no traceback, no results."""
    root = corpus("gray8")
    data = str(root / "lmdb" / "data.mdb")
    p = bench_run(root, tmp_path, kind)
    try:
        slots = f"memfd:layoutbench-slots-{p.pid}-"

        def workers_reading():  # positive control: both workers have their slots and the corpus mapped
            kids = [c for c in children(p.pid) if slots in maps(c) and data in maps(c)]
            return kids if len(kids) == 2 else None

        workers = wait_for(workers_reading, 60, f"2 {kind} workers reading (stderr: see below)")
        tree = descendants(p.pid)
        assert set(workers) <= tree
        assert not any(in_shm(pid) for pid in [p.pid, *tree])  # nothing that could be left in /dev/shm
        os.kill(p.pid, sig)
        # SIGKILL: the kernel ends the workers as the parent dies (1 s). SIGTERM/SIGINT: the parent
        # unwinds first and stops them, a few scheduling rounds on a loaded machine (3 s).
        limit = 1.0 if sig == signal.SIGKILL else 3.0
        wait_for(lambda: not any(alive(pid) for pid in tree) or None, limit,
                 f"{[pid for pid in tree if alive(pid)]} of {sorted(tree)} to end after {sig.name}")
        assert mapping(data) == [] and mapping(slots) == [], "the corpus or the slots are still mapped"
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert not (tmp_path / "r.json").exists()
    if sig == signal.SIGKILL:
        assert p.returncode == -signal.SIGKILL
        return
    code, word = (143, "terminated (SIGTERM)") if sig == signal.SIGTERM else (130, "interrupted")
    assert p.returncode == code, (p.returncode, err)
    assert err == f"python -m bench: {word}; no results were written (bench run does not resume): rerun the " \
                  f"command to measure from the start\n", err


def signal_when(p: subprocess.Popen, ready, sig, timeout: float = 60) -> tuple[int, str]:
    """Send `sig` to p once ready() holds, then (exit code, stderr)."""
    try:
        wait_for(lambda: ready() or p.poll() is not None, timeout, "the command to get going")
        assert p.poll() is None, ("it ended before the signal", p.communicate())
        tree = descendants(p.pid)
        os.kill(p.pid, sig)
        _, err = p.communicate(timeout=60)
        wait_for(lambda: not any(alive(pid) for pid in tree) or None, 1.0, "its workers to end")
        return p.returncode, err
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_sigterm_of_the_generator_is_one_line_and_the_rerun_resumes(tmp_path):
    """SIGTERM (before: silent, exit 143) now ends like Ctrl-C: one line, exit 143, its worker
    processes gone; the same command then finishes the corpus, which verifies."""
    out = tmp_path / "c"
    argv = [sys.executable, "-m", "generator", "--preset", "cifar", "--count", "20000", "--layouts", "files",
            "--workers", "2", "--quiet", "--out", str(out)]
    p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, err = signal_when(p, lambda: (out / "files").is_dir() and len(children(p.pid)) >= 2, signal.SIGTERM)
    assert code == 143 and err == "python -m generator: terminated (SIGTERM); rerun the same command to resume\n", err
    assert subprocess.run(argv, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    v = subprocess.run([sys.executable, "-m", "loaders", "verify", str(out), "--quiet"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert v.returncode == 0 and "files: all 20,000 samples match" in v.stdout, v


@pytest.fixture(scope="module")
def lmdb_corpus(tmp_path_factory):
    """An LMDB-only corpus whose verify takes 1.6 s here, start-up included (40,000 samples; 4,000
    took 0.7 s, and a CI machine once finished them between the poll that saw the map and the
    signal)."""
    from generator.build import generate
    from generator.spec import Spec

    root = tmp_path_factory.mktemp("verify-me")
    generate(root, Spec(height=64, width=64, channels=3, count=40000), ["lmdb"], workers=2, progress=False)
    return root


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_an_interrupted_verify_says_it_does_not_resume(lmdb_corpus, sig):
    """verify never resumed: its line says so (before: "rerun the same command to resume")."""
    root = lmdb_corpus
    for _ in range(3):  # a verify that ended cleanly before the signal landed proves nothing: again
        p = subprocess.Popen([sys.executable, "-m", "loaders", "verify", str(root), "--quiet"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        code, err = signal_when(p, lambda: str(root / "lmdb" / "data.mdb") in maps(p.pid), sig)
        if (code, err) != (0, ""):
            break
    word = "terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted"
    assert (code, err) == (143 if sig == signal.SIGTERM else 130, f"python -m loaders: {word}; verify does not "
                           f"resume: rerun it to check the corpus from the start\n")

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
    """Within a second of the signal to the bench's pid alone: every process it started (workers,
    spawn's resource tracker) is gone, no process maps the corpus or the batch slots, no /dev/shm
    segment is left; SIGTERM and SIGINT end in one line (exit 143 / 130), no traceback."""
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
        t0 = time.monotonic()
        wait_for(lambda: not any(alive(pid) for pid in tree) or None, 1.0,
                 f"{[pid for pid in tree if alive(pid)]} of {sorted(tree)} to end after {sig.name}")
        assert mapping(data) == [] and mapping(slots) == [], "the corpus or the slots are still mapped"
        assert time.monotonic() - t0 < 1.5
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

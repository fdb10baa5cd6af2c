"""What the tools read must be a regular file of a bounded size (issue 12): a FIFO, a link to a
device, a directory or an oversized file where a manifest, an in-progress marker, a lock or a
results file belongs is refused in one line, at once: never a hang, never read until memory runs
out. And what a command leaves behind when it is interrupted is removed by the next run.

Every command runs as a real process (a hang is a timeout, not a stuck test run), all of them at
once to keep this quick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import resource

import pytest

from generator.build import generate
from generator.spec import Spec

REPO = Path(__file__).resolve().parents[1]
SPEC = Spec(height=4, width=4, channels=1, count=5)
GEN = ["generator", "--shape", "4x4x1", "--count", "5", "--classes", "10", "--workers", "1", "--quiet"]


def make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def make_zero_link(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


def make_huge(path: Path) -> None:  # sparse: 2 GiB of size, no blocks
    with open(path, "w") as f:
        f.truncate(2 << 30)


def make_dir(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


SPECIAL = {"a FIFO": (make_fifo, "is a FIFO, not a regular file"),
           "a link to /dev/zero": (make_zero_link, "is a character device, not a regular file"),
           "a 2 GiB file": (make_huge, "is 2,147,483,648 bytes, more than the"),
           "a directory": (make_dir, "is a directory, not a regular file")}


COMMANDS = {"generator": ("python -m generator", "generator.__main__"), "loaders": ("python -m loaders", "loaders.__main__"),
            "bench": ("python -m bench", "bench.__main__")}


def run_all(cases: dict, timeout: float = 20) -> dict:
    """{name: (exit code, stderr)} of every case {name: [module, *argv]} (`python -m module argv`),
    each run in-process by generator.cli.run_main as its entry point does, in a thread that must
    end within `timeout` seconds (else: -1, "hung"). All in one child process, so that a hang or a
    read of /dev/zero cannot take this test run with it (its memory is capped at 4 GiB)."""
    spec = json.dumps({name: [str(a) for a in argv] for name, argv in cases.items()})
    p = subprocess.run([sys.executable, __file__, spec, str(timeout)], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout * len(cases) + 60, preexec_fn=lambda: resource.setrlimit(
                           resource.RLIMIT_AS, (4 << 30, 4 << 30)))
    assert p.returncode == 0, p.stderr
    return {k: tuple(v) for k, v in json.loads(p.stdout.splitlines()[-1]).items()}


def _child(spec: str, timeout: float) -> None:
    import contextlib
    import importlib
    import io
    import threading

    sys.path.insert(0, str(REPO))
    from generator.cli import run_main

    out = {}
    for name, (module, *argv) in json.loads(spec).items():
        prog, modname = COMMANDS[module]
        main = importlib.import_module(modname)
        err, got = io.StringIO(), []

        def call():
            try:
                got.append(run_main(prog, main.main, argv, interrupted=getattr(main, "interrupted", "")))
            except SystemExit as exc:
                got.append(exc.code)

        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            t = threading.Thread(target=call, daemon=True)
            t.start()
            t.join(timeout)
        out[name] = (got[0], err.getvalue()) if got else (-1, "hung")
    print(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)  # a hung thread must not keep this process


def assert_one_line(got, code: int, prog: str, *fragments: str) -> None:
    rc, err = got
    assert rc == code, got
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)


def test_special_files_where_a_manifest_marker_or_lock_belongs_are_refused_at_once(tmp_path):
    """manifest.json as each special file: verify (exit 3), bench run (exit 1) and the generator
    (exit 1, "damaged corpus ... --force") refuse it; the in-progress marker and the lock as a FIFO
    refuse the generator; corpus.h5 or lmdb/data.mdb as a FIFO refuse bench run (its floors read
    them first); nothing hangs and nothing reads /dev/zero."""
    sound = tmp_path / "sound"
    generate(sound, SPEC, workers=1, progress=False)
    procs, expect = {}, {}
    for case, (make, says) in SPECIAL.items():
        root = tmp_path / case.replace(" ", "-").replace("/", "")
        shutil.copytree(sound, root)
        make(root / "manifest.json")
        procs[f"verify {case}"] = ["loaders", "verify", root, "--quiet"]
        expect[f"verify {case}"] = (3, "python -m loaders", f"{root}/manifest.json {says}")
        procs[f"run {case}"] = ["bench", "run", "--corpus", root, "--output", tmp_path / f"{root.name}.json",
                                "--cache", "warm", "--quiet"]
        expect[f"run {case}"] = (1, "python -m bench", f"{root}/manifest.json {says}")
        procs[f"generator {case}"] = [*GEN, "--out", root]
        expect[f"generator {case}"] = (1, "python -m generator", "holds a damaged corpus", says, "--force")
    for marker, says in ((".generating.json", "is a FIFO, not a regular file"), (".lock", "is not a regular file")):
        root = tmp_path / f"marker{marker}"
        root.mkdir()
        (root / "manifest.json").unlink(missing_ok=True)
        make_fifo(root / marker)
        procs[marker] = [*GEN, "--out", root]
        expect[marker] = (1 if marker == ".generating.json" else 2, "python -m generator", says)
    for inner in ("corpus.h5", "lmdb/data.mdb"):  # a layout's own file: the floors read it before any reader
        root = tmp_path / f"fifo-{inner.replace('/', '-')}"
        shutil.copytree(sound, root)
        make_fifo(root / inner)
        procs[f"run {inner}"] = ["bench", "run", "--corpus", root, "--output", tmp_path / f"{root.name}.json",
                                 "--cache", "warm", "--quiet"]
        expect[f"run {inner}"] = (1, "python -m bench", f"{root / inner} is ", "not a regular file")
    got = run_all(procs)
    for name, (code, prog, *fragments) in expect.items():
        assert_one_line(got[name], code, prog, *fragments)


def test_special_files_where_results_belong_are_refused_at_once(tmp_path):
    """A results file that is a FIFO, a link to /dev/zero, 2 GiB or a directory: report, compare
    and plan --from each say so in one line, exit 2, and write nothing."""
    procs = {}
    for case, (make, says) in SPECIAL.items():
        path = tmp_path / (case.replace(" ", "-").replace("/", "") + ".json")
        path.touch()
        make(path)
        procs[f"report {case}"] = ["bench", "report", path, "--out", tmp_path / "report"]
        procs[f"compare {case}"] = ["bench", "compare", path, path]
        procs[f"plan {case}"] = ["bench", "plan", "--images", "1000", "--preset", "mnist", "--epochs", "3", "--from", path]
    got = run_all(procs)
    for name, result in got.items():
        case = name.split(" ", 1)[1]
        assert_one_line(result, 2, "python -m bench", SPECIAL[case][1], "give a results file written by python -m bench run")
    assert not (tmp_path / "report").exists() or not any((tmp_path / "report").iterdir())


# --- what an interrupted command leaves behind -------------------------------------------------------

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_an_interrupted_checkpoint_write_leaves_no_file(corpus, tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM (both KeyboardInterrupt in the CLIs) in the middle of writing a checkpoint:
    the partial checkpoint is removed as the interrupt unwinds."""
    from bench.run import epochs
    from generator.lifetime import Terminated

    path = tmp_path / ".layoutbench-checkpoint-host-1.bin"
    real_write, calls = os.write, [0]

    def write(fd, data):
        calls[0] += 1
        if calls[0] == 2:
            raise Terminated()
        return real_write(fd, data)

    monkeypatch.setattr(epochs.os, "write", write)
    with pytest.raises(Terminated):
        epochs.write_checkpoint(path, 10.0, 0, 0)
    assert calls[0] == 2 and not path.exists()


def test_what_a_killed_bench_run_left_is_swept_by_the_next(corpus, tmp_path):
    """kill -9 runs no cleanup: a checkpoint, a write probe and a results temporary named after a
    dead process on this host are removed by the next run that writes there; those of a live
    process, or of another host (whose pids mean nothing here), are kept."""
    import socket

    from bench.run.config import BenchConfig
    from bench.results.result import RunConfig
    from bench.run.runner import run_bench

    host, dead, live = socket.gethostname(), dead_pid(), os.getppid()
    left = [f".layoutbench-checkpoint-{host}-{dead}.bin", f".layoutbench-probe-{host}-{dead}", f".r.json.tmp-{host}-{dead}",
            f".layoutbench-checkpoint-{dead}.bin"]  # the last: the name earlier versions left
    kept = [f".layoutbench-checkpoint-{host}-{live}.bin", f".layoutbench-checkpoint-elsewhere-{dead}.bin",
            f".r.json.tmp-{host}-{live}", "unrelated.bin"]
    for name in left + kept:
        (tmp_path / name).write_bytes(b"x" * 100)
    cfg = BenchConfig(corpus=corpus("gray8"), output=tmp_path / "r.json", layouts=("hdf5",), caches=("warm",),
                      naive=False, run=RunConfig(epochs=1, batch_size=8, sample_latency=False), checkpoint_mb=0.01,
                      checkpoint_every=1)
    run_bench(cfg).save(cfg.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["r.json"])


def test_partials_of_layouts_a_rerun_does_not_write_are_removed_and_said(tmp_path):
    """A run killed while writing HDF5 and LMDB, rerun with --layouts files: the partial .corpus.h5
    and lmdb.partial/ (which nothing would ever finish or point to) are removed, one line each on
    stderr; the corpus verifies; a later run with hdf5 writes it afresh."""
    from generator.build import IN_PROGRESS
    from generator.layouts.hdf5 import PARTIAL as H5_PARTIAL
    from generator.layouts.lmdb import PARTIAL as LMDB_PARTIAL

    root = tmp_path / "c"
    root.mkdir()
    (root / H5_PARTIAL).write_bytes(b"\x89HDF half a file")
    (root / LMDB_PARTIAL).mkdir()
    (root / LMDB_PARTIAL / "data.mdb").write_bytes(b"half")
    (root / IN_PROGRESS).write_text(json.dumps({"spec": SPEC.to_dict(), "layouts": ["hdf5", "lmdb"]}))
    argv = ["-m", "generator", "--shape", "4x4x1", "--count", "5", "--workers", "1", "--quiet", "--out", str(root)]
    p = subprocess.run([sys.executable, *argv, "--layouts", "files"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stderr.splitlines()) == sorted(
        f"python -m generator: removed {root / name}, left unfinished by an interrupted run of a layout this run "
        f"does not write" for name in (H5_PARTIAL, LMDB_PARTIAL)), p.stderr
    assert not (root / H5_PARTIAL).exists() and not (root / LMDB_PARTIAL).exists() and not (root / IN_PROGRESS).exists()
    assert subprocess.run([sys.executable, "-m", "loaders", "verify", str(root), "--quiet"], cwd=REPO,
                          capture_output=True, timeout=120).returncode == 0
    p = subprocess.run([sys.executable, *argv, "--layouts", "files,hdf5"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stderr == "" and (root / "corpus.h5").is_file(), p.stderr


def test_a_fifo_among_a_layouts_partial_files_is_replaced_not_waited_on(tmp_path):
    """A FIFO where an interrupted run's `.corpus.h5.partial` or `lmdb.partial/data.mdb` would be
    (LMDB's open hung on it): the generator removes it, writes the layout afresh, and it verifies."""
    from generator.build import IN_PROGRESS
    from loaders.verify import verify

    cases = {}
    for layout, partial in (("hdf5", ".corpus.h5.partial"), ("lmdb", "lmdb.partial/data.mdb")):
        root = tmp_path / layout
        (root / partial).parent.mkdir(parents=True)
        (root / IN_PROGRESS).write_text(json.dumps({"spec": SPEC.to_dict(), "layouts": [layout]}))
        make_fifo(root / partial)
        cases[layout] = [*GEN, "--layouts", layout, "--out", root]
    got = run_all(cases)
    for layout in cases:
        assert got[layout] == (0, ""), got[layout]
        assert verify(tmp_path / layout, [layout], progress=False)[1] == []

if __name__ == "__main__":  # the child of run_all
    _child(sys.argv[1], float(sys.argv[2]))

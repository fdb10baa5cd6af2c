"""`python -m generator`: every bad input is one clear line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from conftest import mounted_tmpfs

import generator.build
from generator.__main__ import main
from generator.build import IN_PROGRESS, CorpusLock, left_out_lines
from generator.cli import run_main
from generator.layouts import get_layout, layout_ids
from generator.manifest import MANIFEST, read_manifest, tmp_prefix

INSTALLED = layout_ids(available=True)  # what the generator writes by default

PROG = "python -m generator"
Result = namedtuple("Result", "code out err")


@pytest.fixture
def cli(capsys):
    """cli(*args) -> Result: the generator's main, in this process, as the console runs it."""

    def run(*args) -> Result:
        try:
            code = run_main(PROG, main, [str(a) for a in args])
        except SystemExit as exc:  # argparse's errors
            code = exc.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def one_line_error(r: Result, *fragments: str, code: int = 2) -> None:
    assert r.code == code, r
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith(f"{PROG}: error: "), lines[0]
    assert "Traceback" not in r.err and r.out == ""
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def tiny(out, *extra):
    return ["--shape", "6x5x3", "--count", 12, "--out", out, "--quiet", "--workers", 1, *extra]


# --- arguments -------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["--preset", "mnist-huge", "--count", 5], ["unknown preset 'mnist-huge'", "mnist, cifar", "--list-presets"]),
    (["--preset", "mnist", "--count", 0], ["argument --count", "must be a positive integer, got 0"]),
    (["--preset", "mnist", "--count", -5], ["argument --count", "got -5"]),
    (["--preset", "mnist", "--count", "ten"], ["argument --count", "expected a positive integer, got 'ten'"]),
    (["--preset", "mnist", "--count", "1e999"], ["argument --count", "'1e999'"]),
    (["--shape", "28x28x2"], ["bad --shape '28x28x2'", "channels 1, 3 or 4"]),
    (["--shape", "big"], ["bad --shape 'big'", "expected HxWxC"]),
    (["--shape", "0x28x1"], ["bad --shape '0x28x1'"]),
    (["--shape", "30000x30000x4"], ["at most 1,073,741,824 (1 GiB)"]),
    (["--preset", "mnist", "--shape", "28x28x1"], ["give --preset or --shape, not both"]),
    (["--preset", "mnist", "--dtype", "uint16"], ["--dtype goes with --shape"]),
    (["--count", 5], ["give --preset NAME", "or --shape HxWxC"]),
    (["--preset", "mnist", "--layouts", "files,zip"], ["unknown layout 'zip'", "files, hdf5, lmdb"]),
    (["--preset", "mnist", "--layouts", ","], ["no layouts given"]),
    (["--preset", "mnist", "--workers", 0], ["argument --workers", "got 0"]),
    (["--preset", "mnist", "--seed", -1], ["argument --seed", "must be >= 0"]),
    (["--preset", "mnist", "--payload", "gif"], ["argument --payload", "invalid choice: 'gif'"]),
    (["--preset", "4k-16bit", "--payload", "jpeg"], ["jpeg holds uint8 pixels only", "png"]),
    (["--preset", "mnist", "--payload", "png", "--quality", "50"], ["--quality applies to lossy"]),
    (["--preset", "mnist", "--payload", "raw", "--compression", "deflate"], ["--compression applies to TIFF"]),
    (["--preset", "mnist", "--classes", 70000], ["argument --classes", "must be at most 65,535"]),
    # every number has an upper bound (issue 12): what the generator accepts, its manifest holds
    (["--preset", "mnist", "--count", "1e30"], ["argument --count", "must be at most 33,554,432"]),
    (["--preset", "mnist", "--seed", 2**63], ["argument --seed", "must be at most 9,223,372,036,854,775,807"]),
    (["--preset", "mnist", "--workers", 5000], ["argument --workers", "must be at most 1,024"]),
    (["--preset", "mnist", "--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_bad_arguments(cli, tmp_path, args, fragments):
    one_line_error(cli(*args, "--out", tmp_path / "c"), *fragments)
    assert not (tmp_path / "c").exists()  # refused before touching the disk


def test_the_real_entry_point_prints_one_line_and_exits_2(tmp_path):
    for args, fragment in ((["--preset", "nope"], "unknown preset 'nope'"), (["--count", "0"], "got 0")):
        p = subprocess.run([sys.executable, "-m", "generator", *args, "--out", str(tmp_path / "c")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
        assert p.stderr.count("\n") == 1 and fragment in p.stderr, p.stderr


def test_list_presets_and_a_small_corpus_with_its_table(cli, tmp_path):
    r = cli("--list-presets")
    assert r.code == 0 and r.out.count("\n") == 7
    assert "4k-8bit    2540x4520x4 uint8" in r.out and "45,923,200 B" in r.out  # HxWxC, as --shape takes it
    r = cli("--preset", "cifar", "--count", 20, "--out", tmp_path, "--workers", 1)
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == f"corpus {tmp_path}: 20 x 3,072 B of pixels (32x32x3 uint8), seed 0"
    assert lines[1].split() == ["layout", "samples", "bytes", "on", "disk", "files", "seconds", "MB/s"]
    table = len(INSTALLED) + 2
    assert [line.split()[:2] for line in lines[2:table]] == [[name, "20"] for name in INSTALLED]
    assert lines[table:] == left_out_lines()  # one line per layout this install cannot write, naming its extra
    r = cli("--preset", "cifar", "--count", 20, "--out", tmp_path, "--workers", 1)
    assert [line.split()[:2] for line in r.out.splitlines()[2:table]] == [[name, "(existing)"] for name in INSTALLED]


def test_options_reach_the_spec(cli, tmp_path):
    r = cli("--shape", "9x7x4", "--dtype", "uint16", "--count", 3, "--seed", 5, "--payload", "raw",
            "--content", "noise", "--classes", 2, "--layouts", "hdf5", "--out", tmp_path, "--quiet")
    assert r.code == 0 and r.out == "" and r.err == ""
    spec = read_manifest(tmp_path).spec
    assert (spec.shape, spec.dtype, spec.count, spec.seed, spec.payload, spec.content, spec.num_classes) == (
        (9, 7, 4), "uint16", 3, 5, "raw", "noise", 2)
    assert spec.preset is None


def test_default_out_is_under_data(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("--preset", "mnist", "--count", 4, "--layouts", "lmdb", "--quiet").code == 0
    assert read_manifest(tmp_path / "data" / "mnist-4").spec.count == 4


# --- the output directory ---------------------------------------------------------------------------

def test_out_that_cannot_be_created(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    one_line_error(cli(*tiny(tmp_path / "afile" / "corpus")), "cannot create --out directory", "afile")
    one_line_error(cli(*tiny(tmp_path / "afile")), "cannot create --out directory", "File exists")


def test_unwritable_out(cli, tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "1m", options="ro") as ro:
        one_line_error(cli(*tiny(ro)), f"--out directory {ro} is not writable")


def test_too_small_a_disk_is_refused_before_writing(cli, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(generator.build.shutil, "disk_usage", lambda p: usage._replace(free=100_000))
    one_line_error(cli(*tiny(tmp_path / "c")), "not enough disk space in", f"{','.join(INSTALLED)} need about",
                   "and 100.00 kB is free", "--layouts", "--count")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".lock"]  # nothing written
    # The estimate counts what a layout already has, so a finished layout needs nothing more.
    monkeypatch.setattr(generator.build.shutil, "disk_usage", lambda p: usage._replace(free=10**12))
    assert cli(*tiny(tmp_path / "c", "--layouts", "files")).code == 0
    monkeypatch.setattr(generator.build.shutil, "disk_usage", lambda p: usage._replace(free=60_000))
    one_line_error(cli(*tiny(tmp_path / "c")), f"the layouts {','.join(n for n in INSTALLED if n != 'files')} need about")
    monkeypatch.setattr(generator.build.shutil, "disk_usage", lambda p: usage._replace(free=10_000_000))
    assert cli(*tiny(tmp_path / "c")).code == 0


def test_a_filesystem_that_keeps_no_count_of_space_is_not_refused(cli, tmp_path, monkeypatch):
    """ramfs reports 0 bytes in all and 0 free: it has no limit to check against (before: "need
    0.00 GB, 0.00 GB free")."""
    monkeypatch.setattr(generator.build.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(0, 0, 0))
    assert cli(*tiny(tmp_path / "c")).code == 0


def test_another_spec_is_refused_without_force_and_replaced_with_it(cli, tmp_path):
    assert cli(*tiny(tmp_path)).code == 0
    before = (tmp_path / MANIFEST).read_bytes()
    one_line_error(cli(*tiny(tmp_path, "--seed", 3)), "holds a corpus with a different spec",
                   "6x5x3 uint8, count 12, seed 0", "use --force")
    assert (tmp_path / MANIFEST).read_bytes() == before  # untouched
    r = cli(*tiny(tmp_path, "--seed", 3, "--force", "--layouts", "hdf5"))
    assert r.code == 0, r
    manifest = read_manifest(tmp_path)
    assert manifest.spec.seed == 3 and list(manifest.layouts) == ["hdf5"]
    assert not (tmp_path / "files").exists() and not (tmp_path / "lmdb").exists()


def test_an_interrupted_corpus_of_another_spec_is_refused_too(cli, tmp_path):
    (tmp_path / ".generating.json").write_text(json.dumps({"spec": {
        "height": 6, "width": 5, "channels": 3, "count": 99}, "layouts": ["files"]}))
    one_line_error(cli(*tiny(tmp_path)), "holds a corpus with a different spec", "count 99", "--force")
    assert cli(*tiny(tmp_path, "--force")).code == 0


def test_a_damaged_corpus_is_refused_without_force(cli, tmp_path):
    assert cli(*tiny(tmp_path, "--layouts", "files")).code == 0
    (tmp_path / MANIFEST).write_text("{")
    one_line_error(cli(*tiny(tmp_path)), "holds a damaged corpus", "--force", code=1)
    assert cli(*tiny(tmp_path, "--force")).code == 0
    assert len(read_manifest(tmp_path).layouts) == len(INSTALLED)


def test_a_foreign_non_empty_directory_is_refused_even_with_force(cli, tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"\xff\xd8")
    for extra in ([], ["--force"]):
        one_line_error(cli(*tiny(tmp_path, *extra)), "is not empty and holds no layoutbench corpus",
                       "holiday.jpg", "choose a new or empty --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "holiday.jpg"]


def test_a_second_generator_on_a_locked_directory_is_refused(cli, tmp_path):
    with CorpusLock(tmp_path):  # flock is per open file, so this holds it against the CLI below
        one_line_error(cli(*tiny(tmp_path)), f"another generator (pid {os.getpid()}) is writing {tmp_path}",
                       "wait for it")
        assert not (tmp_path / MANIFEST).exists()
    assert cli(*tiny(tmp_path)).code == 0  # released


def test_a_locked_directory_from_another_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from generator.build import IN_PROGRESS, CorpusLock\n"
         "with CorpusLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        p = subprocess.run([sys.executable, "-m", "generator", *map(str, tiny(tmp_path))],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
        assert f"another generator (pid {holder.pid}) is writing" in p.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_write_failure_gives_one_line_naming_the_layout(cli, tmp_path):
    assert cli(*tiny(tmp_path, "--layouts", "hdf5")).code == 0
    (tmp_path / "files").write_text("in the way")  # the files layout cannot make its directory
    one_line_error(cli(*tiny(tmp_path)), f"writing the files layout in {tmp_path} failed: File exists",
                   "fix that and rerun the same command to resume", code=1)
    assert list(read_manifest(tmp_path).layouts) == ["hdf5"]  # the finished layout stays listed
    (tmp_path / "files").unlink()
    assert cli(*tiny(tmp_path)).code == 0
    assert sorted(read_manifest(tmp_path).layouts) == sorted(INSTALLED)


def test_force_removes_only_the_layouts_own_paths(cli, tmp_path):
    """--force removes only the layouts' own paths, never anything else in --out."""
    assert cli(*tiny(tmp_path)).code == 0
    (tmp_path / "notes.txt").write_text("mine")
    assert cli(*tiny(tmp_path, "--seed", 1, "--force")).code == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert Path(tmp_path / MANIFEST).exists()


def test_temporaries_of_a_killed_run_are_not_foreign_and_are_cleaned(cli, tmp_path):
    """kill -9 while the first small JSON file was being written leaves only our temporary."""
    (tmp_path / f"{tmp_prefix(IN_PROGRESS)}4242").write_text('{"spec": {"hei')
    (tmp_path / f"{tmp_prefix(MANIFEST)}4243").write_text('{"format"')
    assert cli(*tiny(tmp_path)).code == 0
    targets = [get_layout(name).writer_class().target for name in INSTALLED]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".lock", *targets, MANIFEST])

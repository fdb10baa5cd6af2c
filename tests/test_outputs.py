"""No output replaces a file layoutbench did not write: results (--output), report.md, results.csv
and the PNGs (--out); devices, FIFOs and links never; a full disk or a deleted working directory
is one line and leaves everything as it was."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli.commands import main
from bench.results.outputs import REPORT_MARK, check_output, RESULTS
from bench.results.result import Results
from generator.build import generate
from generator.cli import run_main
from generator.spec import Spec


def bench(capsys, *args) -> tuple[int, str]:
    code = run_main("python -m bench", main, list(args))
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("out-corpus")
    generate(root, Spec(height=8, width=8, channels=1, count=16, seed=3), ["npy"], workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def results_file(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("out-results") / "r.json"
    assert run_main("python -m bench", main, ["run", "--corpus", str(corpus), "--output", str(out), "--cache", "warm",
                                              "--epochs", "1", "--no-sample-latency", "--quiet"]) == 0
    return out


def run_to(corpus, out, *extra):
    return ["run", "--corpus", str(corpus), "--output", str(out), "--cache", "warm", "--epochs", "1",
            "--no-sample-latency", "--quiet", *extra]


@pytest.mark.parametrize("content", [b"my notes\n", b'{"format": "something-else"}\n', b"\x89PNG\r\n\x1a\n"])
def test_run_never_replaces_a_file_it_did_not_write(corpus, tmp_path, capsys, content):
    target = tmp_path / "mine.json"
    target.write_bytes(content)
    code, err = bench(capsys, *run_to(corpus, target))
    assert code == 2 and err.count("\n") == 1 and "layoutbench did not write it" in err and "--overwrite" in err, err
    assert target.read_bytes() == content


def test_another_corpus_manifest_is_not_replaced(corpus, tmp_path, capsys):
    other = tmp_path / "other"
    generate(other, Spec(height=8, width=8, channels=1, count=4), ["npy"], workers=1, progress=False)
    before = (other / "manifest.json").read_bytes()
    code, err = bench(capsys, *run_to(corpus, other / "manifest.json"))
    assert code == 2 and (other / "manifest.json").read_bytes() == before, err


def test_devices_fifos_and_links_are_never_replaced_even_with_overwrite(corpus, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    for target, what in ((Path("/dev/null"), "a character device"), (fifo, "a FIFO"), (link, "a symbolic link")):
        code, err = bench(capsys, *run_to(corpus, target, "--overwrite"))
        assert code == 2 and what in err and "never replaced" in err, (target, err)
    assert Path("/dev/null").is_char_device() and fifo.is_fifo() and link.is_symlink()
    assert not (tmp_path / "elsewhere.json").exists()


def test_a_results_file_of_ours_is_replaced_and_overwrite_replaces_any_regular_file(corpus, results_file, tmp_path,
                                                                                    capsys):
    ours = tmp_path / "ours.json"
    data = json.loads(results_file.read_text())
    data["notes"] = ["left by an earlier run"]
    ours.write_text(json.dumps(data, indent=1))
    assert bench(capsys, *run_to(corpus, ours))[0] == 0
    assert "left by an earlier run" not in Results.load(ours).notes  # replaced by this run's results
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert bench(capsys, *run_to(corpus, notes, "--overwrite"))[0] == 0
    assert Results.load(notes).runs  # replaced, as asked


def test_report_never_replaces_a_users_files_and_overwrite_does(results_file, tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    for name, content in (("report.md", "# my own report\n"), ("results.csv", "a,b\n1,2\n"), ("throughput.png", "x")):
        (out / name).write_text(content)
        code, err = bench(capsys, "report", str(results_file), "--out", str(out))
        assert code == 2 and name in err and "layoutbench did not write it" in err, err
        assert (out / name).read_text() == content
        assert not [p for p in out.iterdir() if p.name not in ("report.md", "results.csv", "throughput.png")]
        (out / name).unlink()
    (out / "report.md").write_text("# my own report\n")
    assert bench(capsys, "report", str(results_file), "--out", str(out), "--overwrite")[0] == 0
    assert (out / "report.md").read_text().startswith(REPORT_MARK)
    assert bench(capsys, "report", str(results_file), "--out", str(out))[0] == 0  # its own report: rewritten
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no staging directory or temporary left


def test_a_report_onto_a_full_disk_is_one_line_and_leaves_the_old_report(results_file, tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not allowed here")
    try:
        old = f"{REPORT_MARK}\n# an older report of ours\n"
        (mnt / "report.md").write_text(old)
        code, err = bench(capsys, "report", str(results_file), "--out", str(mnt))
        assert code == 1 and err.count("\n") == 1 and "No space left on device" in err and "nothing was replaced" in err
        assert (mnt / "report.md").read_text() == old
        assert sorted(p.name for p in mnt.iterdir()) == ["report.md"]  # no PNG, no temporary, no staging left
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_relative_output_from_a_deleted_working_directory_is_one_line(corpus, tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(Exception, match="working directory no longer exists"):
        check_output(Path("r.json"), RESULTS, option="--output")
    here = tmp_path / "here"
    here.mkdir()
    code = ("import os, sys; os.rmdir(os.getcwd()); from bench.cli.commands import main; "
            "from generator.cli import run_main; "
            f"sys.exit(run_main('python -m bench', main, ['run', '--corpus', {str(corpus)!r}, '--output', 'r.json']))")
    p = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "working directory no longer exists" in p.stderr


def test_a_run_of_one_epoch_is_not_called_steady_state(corpus, tmp_path, capsys):
    one = tmp_path / "one.json"
    assert bench(capsys, "run", "--corpus", str(corpus), "--output", str(one), "--cache", "warm", "--epochs", "1",
                 "--no-sample-latency", "--quiet", "--no-naive")[0] == 0
    assert bench(capsys, "report", str(one), "--out", str(tmp_path / "rep"))[0] == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Not steady state: " in md and " npy warm w0 had no epoch after their loader's first" in md
    two = tmp_path / "two.json"
    assert bench(capsys, "run", "--corpus", str(corpus), "--output", str(two), "--cache", "warm", "--epochs", "2",
                 "--no-sample-latency", "--quiet", "--no-naive")[0] == 0
    assert bench(capsys, "report", str(two), "--out", str(tmp_path / "rep2"))[0] == 0
    assert "Not steady state" not in (tmp_path / "rep2" / "report.md").read_text()

"""python -m bench: bad values exit 2 with one line; run, report and compare from the shell."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generator.build import generate
from generator.spec import Spec

REPO = Path(__file__).resolve().parents[1]


def bench(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-corpus")
    generate(root, Spec(height=16, width=16, channels=3, count=40, seed=1), workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def ran(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-out") / "r.json"
    p = bench("run", "--corpus", corpus, "--output", out, "--layouts", "hdf5,lmdb", "--cache", "warm",
              "--epochs", "2", "--batch-size", "8", "--quiet")
    assert p.returncode == 0, p.stderr
    return p, out


def one_line_exit_2(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("args,needle", [
    (["--workers", "-1"], "--workers"),
    (["--workers", "two"], "--workers"),
    (["--cache", "lukewarm"], "lukewarm"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "x"], "--batch-size"),
    (["--layouts", "zip"], "zip"),
    (["--worker-kind", "gpu"], "--worker-kind"),
    (["--checkpoint-mb", "-5", "--checkpoint-every", "1"], "--checkpoint-mb"),
    (["--checkpoint-mb", "5"], "--checkpoint-every"),
])
def test_bad_run_values_exit_2_with_one_line(corpus, tmp_path, args, needle):
    one_line_exit_2(bench("run", "--corpus", corpus, "--output", tmp_path / "r.json", *args), needle)


def test_output_inside_the_corpus_is_refused(corpus):
    one_line_exit_2(bench("run", "--corpus", corpus, "--output", corpus / "r.json"), "inside the corpus directory")
    assert not (corpus / "r.json").exists()


def test_missing_corpus_and_missing_arguments(tmp_path):
    one_line_exit_2(bench("run", "--corpus", tmp_path / "nope", "--output", tmp_path / "r.json"), "nope")
    one_line_exit_2(bench("run", "--output", tmp_path / "r.json"), "--corpus")
    one_line_exit_2(bench("frobnicate"), "frobnicate")


def test_run_prints_the_summary_and_writes_json(ran):
    p, out = ran
    assert "samples/s" in p.stdout and "floors" in p.stdout and f"results: {out}" in p.stdout
    data = json.loads(out.read_text())
    assert {r["layout"] for r in data["runs"]} == {"hdf5", "lmdb", "naive-hdf5"}
    assert data["metadata"]["command"][:3] == ["python", "-m", "bench"]


def test_report_and_compare_from_the_shell(ran, tmp_path):
    _, out = ran
    p = bench("report", out, "--out", tmp_path / "rep")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "rep" / "report.md").exists() and "report:" in p.stdout
    p = bench("compare", out, out)
    assert p.returncode == 0 and "B/A" in p.stdout
    header, *body = [line.split() for line in p.stdout.splitlines()[1:] if line.strip()]
    assert header[6:8] == ["B", "samples/s"] and header[8] == "B/A"  # corpus layout cache workers A.. B.. B/A
    # a file against itself: B/A of samples/s (column 7 of a row) and of p99 (10) are all 1.00
    assert body and all(row[6] == "1.00" and row[9] in ("1.00", "-") for row in body), body


def test_report_and_compare_refuse_bad_files(ran, tmp_path):
    _, out = ran
    future = tmp_path / "future.json"
    future.write_text(json.dumps(json.loads(out.read_text()) | {"version": 99}))
    one_line_exit_2(bench("report", future, "--out", tmp_path / "rep"), "results version 99")
    one_line_exit_2(bench("compare", out, tmp_path / "missing.json"), "no such results file")
    other = json.loads(out.read_text())
    for run in other["runs"]:
        run["config"]["shuffle"] = "sequential"
    (tmp_path / "other.json").write_text(json.dumps(other))
    one_line_exit_2(bench("compare", out, tmp_path / "other.json"), "configs differ", "--force")
    assert bench("compare", out, tmp_path / "other.json", "--force").returncode == 0

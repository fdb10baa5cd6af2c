"""Bench arguments and states that used to end in a traceback or mislead: each one line."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generator.build import generate
from generator.libraries import problem
from generator.spec import Spec

ROOT = Path(__file__).resolve().parents[1]


def bench(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("value", ["1e13", "1e308", "nan", "inf", "-1", "60001"])
@pytest.mark.parametrize("option", ["--compute-ms", "--compute-ms-per-sample"])
def test_compute_past_a_minute_per_batch_is_refused_in_one_line(tmp_path, option, value):
    p = bench("run", "--corpus", str(tmp_path), "--output", str(tmp_path / "r.json"), option, value)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert option in p.stderr and "60,000" in p.stderr


def test_a_layout_emptied_after_generation_is_one_line_naming_it(tmp_path):
    root = tmp_path / "c"
    generate(root, Spec(height=8, width=8, channels=1, count=12), ["files"], workers=1, progress=False)
    shutil.rmtree(root / "files")
    p = bench("run", "--corpus", str(root), "--output", str(tmp_path / "o" / "r.json"), "--cache", "warm",
              "--epochs", "1", "--layouts", "files")
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "the files layout" in p.stderr and "has no files" in p.stderr and "loaders verify" in p.stderr


def test_a_leftover_mpi_variable_says_how_to_run_single(tmp_path):
    if problem("mpi4py") is None:
        pytest.skip("mpi4py is installed here: a launcher variable would start MPI itself")
    root = tmp_path / "c"
    generate(root, Spec(height=8, width=8, channels=1, count=12), ["npy"], workers=1, progress=False)
    p = bench("run", "--corpus", str(root), "--output", str(tmp_path / "r.json"), env={"PMI_SIZE": "2"})
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "PMI_SIZE" in p.stderr and "--comm single" in p.stderr and "unset PMI_SIZE" in p.stderr
    ok = bench("run", "--corpus", str(root), "--output", str(tmp_path / "r.json"), "--cache", "warm", "--epochs", "1",
               "--quiet", "--comm", "single", env={"PMI_SIZE": "2"})
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("code, words", [
    (13, ("cannot be read", "read access", "chmod")),  # EACCES: the corpus did not change
    (40, ("symbolic link loop", "replace the link")),  # ELOOP
    (2, ("vanished", "the corpus changed during the run")),  # ENOENT: it did
])
def test_a_corpus_file_that_cannot_be_read_is_named_for_what_it_is(code, words):
    from bench.probe.probes import CorpusChanged, corpus_changed

    err = corpus_changed(OSError(code, os.strerror(code), "/c/npy/data.bin"), "measuring the floors")
    text = str(err)
    assert text.startswith("/c/npy/data.bin ") and all(w in text for w in words), text
    assert isinstance(err, CorpusChanged) == (code == 2)

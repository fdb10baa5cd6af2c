"""The PyTorch path where torch is absent: nothing but loaders.torch imports it, `bench run --loader
torch` is one line naming make install-torch (exit 2), `--device` is a note and the run goes on, and
results files from before the loader fields load (tests/test_torch.py has the rest, with torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from bench.run.config import BenchConfig
from bench.results.result import Results, RunConfig
from bench.run.runner import run_bench

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = "import sys; sys.modules['torch'] = None\n"  # torch made unimportable in a child


def python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_nothing_but_loaders_torch_imports_torch():
    r = python("import sys, loaders, loaders.pipeline, loaders.dataset, loaders.verify, bench.run.runner, bench.__main__, "
               "bench.run.torchrun, bench.report.markdown, bench.report.compare, bench.cli.suite\nprint(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_loader_torch_without_torch_is_one_line_naming_make_install_torch(corpus, tmp_path):
    code = NO_TORCH + ("from bench.__main__ import main, PROG\nfrom generator.cli import run_main\n"
                       "sys.exit(run_main(PROG, main, sys.argv[1:]))")
    for loader in ("torch", "both"):
        r = python(code, "run", "--corpus", str(corpus("gray8")), "--output", str(tmp_path / "r.json"),
                   "--loader", loader, "--quiet")
        assert r.returncode == 2 and r.stdout == "", r.stdout
        assert r.stderr.count("\n") == 1 and "make install-torch" in r.stderr and f"--loader {loader}" in r.stderr
    assert not (tmp_path / "r.json").exists()


def test_device_without_torch_or_cuda_is_a_note_and_the_run_goes_on(corpus, tmp_path):
    code = NO_TORCH + ("from bench.__main__ import main, PROG\nfrom generator.cli import run_main\n"
                       "sys.exit(run_main(PROG, main, sys.argv[1:]))")
    out = tmp_path / "r.json"
    r = python(code, "run", "--corpus", str(corpus("gray8")), "--output", str(out), "--layouts", "hdf5", "--cache",
               "asis", "--epochs", "1", "--no-naive", "--no-sample-latency", "--device", "cuda", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "note: --device cuda: torch is not installed" in r.stdout and "copy stage is skipped" in r.stdout
    res = Results.load(out)
    assert all(run.device is None for run in res.runs) and res.floors.h2d_bytes == 0
    bad = python(code, "run", "--corpus", str(corpus("gray8")), "--output", str(out), "--device", "gpu0", "--quiet")
    assert bad.returncode == 2 and "--device takes cuda or cuda:N" in bad.stderr


def test_older_results_without_the_loader_fields_load_as_ours(corpus, tmp_path):
    cfg = BenchConfig(corpus=corpus("gray8"), output=tmp_path / "r.json", layouts=("lmdb",), caches=("asis",),
                      run=RunConfig(epochs=1, sample_latency=False), naive=False)
    res = run_bench(cfg)
    data = res.to_dict()
    for run in data["runs"]:
        for key in ("loader", "dataloader", "device", "storage"):
            run.pop(key)
        for e in run["epochs"]:
            e.pop("h2d")
    for key in [k for k in data["floors"] if k.startswith("h2d")]:
        data["floors"].pop(key)
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = Results.load(tmp_path / "old.json")
    assert [r.loader for r in old.runs] == ["ours"] and old.runs[0].dataloader is None
    assert old.runs[0].storage == "local" and old.runs[0].epochs[0].h2d is None
    assert old.to_dict()["runs"][0]["loader"] == "ours"



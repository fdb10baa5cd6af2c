"""A capped run stopped before its first epoch (the cgroup's OOM killer) is said in a note naming
the cap and the usage, and left out of the runs: never a results file that cannot load back (make
bench once died so, on loose MNIST files under 3M)."""

from __future__ import annotations

import pytest

from bench.probe import cgroups
from bench.run import capped
from bench.run.config import BenchConfig
from bench.results.result import Results, RunConfig
from bench.run.runner import run_bench
from generator.build import generate
from generator.spec import Spec
from bench.run.epochs import Epochs

try:
    cgroups.find_parent()
except cgroups.CgroupUnavailable as exc:
    pytest.skip(f"no memory cgroup can be made here: {exc}", allow_module_level=True)


def test_a_capped_run_killed_before_its_first_epoch_is_a_note(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    generate(root, Spec(height=64, width=64, channels=3, count=600, seed=1), workers=1, progress=False,
             layouts=("files", "hdf5"))
    failure = "the cgroup's OOM killer stopped the loader (cap 4,096 B = ...) after 0 epoch(s)"
    real = capped.run_capped

    def killed_for_files(ctx, spec, repeat):
        if spec.layout == "files":
            return Epochs(()), {"size": ctx.cfg.memory_limit, "failure": failure}
        return real(ctx, spec, repeat)

    monkeypatch.setattr(capped, "run_capped", killed_for_files)
    cfg = BenchConfig(corpus=root, output=tmp_path / "r.json", layouts=("files", "hdf5"), caches=("capped",),
                      workers=(1,), naive=False, memory_limit=3 << 20,
                      run=RunConfig(epochs=2, batch_size=8, sample_latency=False))
    res = run_bench(cfg)
    res.save(cfg.output)
    back = Results.load(cfg.output)
    assert [r.layout for r in back.runs] == ["hdf5"]
    assert any(n.startswith("files capped with 1 workers measured nothing: ") and failure in n for n in back.notes)

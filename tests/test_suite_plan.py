"""The suite's plan (what `make generate` and `make bench` read): every capped corpus is in the
plan and at least 5x its cap in pixels; `--generate-only` makes the corpora and measures nothing."""

from __future__ import annotations

import pytest

from generator.errors import UsageError

from bench.cli import suite
from bench.probe.regimes import in_flight_bytes, parse_size
from bench.results.result import RunConfig


@pytest.mark.parametrize("plan", [suite.FULL, suite.QUICK], ids=["full", "quick"])
def test_the_plan_is_consistent(plan):
    names = [c.name for c in plan.corpora]
    assert len(set(names)) == len(names)
    assert plan.sweep in names
    for name, size, batch, _ in plan.capped:
        spec = plan.corpus(name).spec  # StopIteration: a capped corpus not in the plan
        # stored bytes: the pixels (uncompressed TIFF, raw), or for JPEG q90 of photo content at
        # least 3 bits per pixel (3.6 measured at 470x390; tests/test_photo.py holds 224x224 in 4-7)
        per_pixel = 3 / 8 / spec.channels if spec.payload == "jpeg" else spec.np_dtype.itemsize
        shapes = [spec.sample_shape(i) for i in range(min(spec.count, 500))]  # a size distribution's too
        mean_pixels = sum(h * w * c for h, w, c in shapes) / len(shapes)
        stored = spec.count * mean_pixels * per_pixel
        assert stored >= 5 * parse_size(size), (name, size, stored)
        if not spec.variable and spec.payload in ("tiff", "raw"):  # the loader's own batches fit under the cap
            assert parse_size(size) >= in_flight_bytes(RunConfig(batch_size=batch), plan.workers, spec.pixel_bytes), (name, size)
    assert any(c.spec.payload == "jpeg" and c.spec.content == "photo" and c.spec.sizes  # ImageNet-like
               for c in plan.corpora)


def test_a_job_the_run_would_refuse_is_refused_before_anything_is_measured(tmp_path, monkeypatch):
    """A cap below what the loader's own batches hold: refused when the suite starts, naming the
    corpus, not after the jobs before it have run."""
    tiny = suite.SuitePlan((suite.preset("imagenet", 40),), "imagenet-40", capped=(suite.Capped("imagenet-40", "1M"),))
    monkeypatch.setattr(suite, "QUICK", tiny)
    monkeypatch.setattr(suite, "run_bench", lambda cfg: pytest.fail("measured before the check"))
    monkeypatch.setattr("bench.probe.cgroups.find_parent", lambda: None)
    with pytest.raises(UsageError, match=r"imagenet-40 \(capped\) is refused: --memory-limit 1,048,576 B is below"):
        suite.run_suite(tmp_path / "data", tmp_path / "results", quick=True)


def test_generate_only_makes_the_corpora_and_measures_nothing(tmp_path, monkeypatch, capsys):
    tiny = suite.SuitePlan((suite.preset("mnist", 20), suite.imagenet_like(3)), "mnist-20")
    monkeypatch.setattr(suite, "QUICK", tiny)
    assert suite.run_suite(tmp_path / "data", tmp_path / "results", quick=True, generate_only=True) == 0
    assert (tmp_path / "data" / "mnist-20" / "manifest.json").exists()
    assert (tmp_path / "data" / "imagenet-jpeg-3" / "manifest.json").exists()
    assert not (tmp_path / "results").exists()
    assert "imagenet-jpeg-3: ready" in capsys.readouterr().out


def test_a_corpus_of_another_plan_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    """A plan's corpus directory that holds another spec (an older version's ImageNet-like corpus
    was one size, the new one a distribution): one line naming it and what to remove, before any
    corpus is generated (before: "use --force", which the suite has not, after generating the
    others)."""
    from generator.build import generate

    tiny = suite.SuitePlan((suite.preset("mnist", 20), suite.imagenet_like(3)), "mnist-20")
    monkeypatch.setattr(suite, "QUICK", tiny)
    old = tmp_path / "data" / "imagenet-jpeg-3"
    generate(old, suite.preset("imagenet", 3).spec, progress=False)  # the name, another spec
    with pytest.raises(UsageError, match=r"imagenet-jpeg-3 holds another corpus \(imagenet 224x224x3 .*\) than this "
                       r"make bench's plan makes there \(sizes normal:.*; remove it \(rm -r .*imagenet-jpeg-3\)"):
        suite.run_suite(tmp_path / "data", tmp_path / "results", generate_only=True, quick=True)
    assert not (tmp_path / "data" / "mnist-20").exists()


def test_a_read_unit_larger_than_the_cap_is_refused_by_name(corpus, tmp_path):
    """Parquet gives a sample by reading its row group's whole column chunk: under a cap that
    cannot hold one, `bench run` refuses it in one line (the suite leaves it out, saying so)."""
    from bench.run.config import BenchConfig
    from bench.probe.regimes import check_capped, read_unit_bytes
    from generator.layouts import get_layout
    from generator.manifest import read_manifest

    if get_layout("parquet").missing():
        pytest.skip(get_layout("parquet").missing())
    root = corpus("big")  # 6 samples of 72,000 B: one row group
    unit = read_unit_bytes(root, "parquet")
    assert read_unit_bytes(root, "files") is None
    assert 6 * 72_000 <= unit < 6 * 72_000 + (1 << 20)
    cfg = BenchConfig(corpus=root, output=tmp_path / "r.json", layouts=("parquet",), caches=("capped",),
                      memory_limit=200_000, run=RunConfig(batch_size=1))
    with pytest.raises(UsageError, match=rf"the parquet layout reads {unit:,} B to give one sample"):
        check_capped(cfg, read_manifest(root))


def test_capped_only_makes_and_measures_the_capped_jobs_alone(tmp_path, monkeypatch):
    """`bench suite --capped-only`: only the capped corpora are made, only their capped jobs run."""
    tiny = suite.SuitePlan((suite.preset("mnist", 20), suite.preset("imagenet", 40)), "mnist-20",
                           capped=(suite.Capped("imagenet-40", "1M", batch=2),))
    monkeypatch.setattr(suite, "QUICK", tiny)
    monkeypatch.setattr("bench.probe.cgroups.find_parent", lambda: None)
    ran = []

    class Stop(Exception):
        pass

    def run_bench(cfg):
        ran.append(cfg)
        raise Stop

    monkeypatch.setattr(suite, "run_bench", run_bench)
    with pytest.raises(Stop):
        suite.run_suite(tmp_path / "data", tmp_path / "results", quick=True, capped_only=True)
    assert [(c.corpus.name, c.caches) for c in ran] == [("imagenet-40", ("capped",))]
    assert not (tmp_path / "data" / "mnist-20").exists() and (tmp_path / "data" / "imagenet-40").exists()


def test_the_default_worker_kind_follows_the_payload():
    """Processes for small uncompressed samples (their per-sample Python work holds the GIL), threads
    for encoded payloads (decoders let go of it) and large samples; DataLoader runs: processes."""
    from bench.run.torchrun import default_worker_kind

    kinds = {name: default_worker_kind("ours", (2,), c.spec) for c in suite.FULL.corpora for name in [c.name]}
    assert kinds == {"mnist-20000": "process", "imagenet-800": "process", "imagenet-jpeg-700": "thread",
                     "4k-8bit-3": "thread", "4k-16bit-2": "thread"}
    assert default_worker_kind("ours", (0,), suite.FULL.corpora[0].spec) == "thread"  # no workers
    assert default_worker_kind("ours", (2,), None) == "thread"  # a corpus in S3
    assert default_worker_kind("torch", (2,), None) == "process"

"""The suite's plan (what `make generate` and `make bench` read): every capped corpus is in the
plan and at least 5x its cap in pixels; `--generate-only` makes the corpora and measures nothing."""

from __future__ import annotations

import pytest

from bench import suite
from bench.regimes import parse_size


@pytest.mark.parametrize("plan", [suite.FULL, suite.QUICK], ids=["full", "quick"])
def test_the_plan_is_consistent(plan):
    names = [c.name for c in plan.corpora]
    assert len(set(names)) == len(names)
    assert plan.sweep in names
    for name, size in plan.capped:
        spec = plan.corpus(name).spec  # StopIteration: a capped corpus not in the plan
        assert spec.total_pixel_bytes >= 5 * parse_size(size), (name, size)
    assert any(c.spec.payload == "jpeg" and c.spec.content == "photo" for c in plan.corpora)  # ImageNet-like


def test_generate_only_makes_the_corpora_and_measures_nothing(tmp_path, monkeypatch, capsys):
    tiny = suite.SuitePlan((suite.preset("mnist", 20), suite.imagenet_like(3)), "mnist-20")
    monkeypatch.setattr(suite, "QUICK", tiny)
    assert suite.run_suite(tmp_path / "data", tmp_path / "results", quick=True, generate_only=True) == 0
    assert (tmp_path / "data" / "mnist-20" / "manifest.json").exists()
    assert (tmp_path / "data" / "imagenet-jpeg-3" / "manifest.json").exists()
    assert not (tmp_path / "results").exists()
    assert "imagenet-jpeg-3: ready" in capsys.readouterr().out

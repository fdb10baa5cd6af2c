"""Results format version 3: epoch records with nested parts, and version 2 files migrating to it."""

import dataclasses
import json

import pytest

from bench.results.result import (VERSION, CappedEpoch, DeviceCopy, Order, Results, ResultsError, RunConfig, Split,
                                  summarize)
from bench.run.config import BenchConfig
from bench.run.runner import run_bench
from generator.build import generate
from generator.spec import Spec


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A real run's results (timing epochs: a split; a shuffled order), with a capped and a GPU part
    put on two epochs, so that every part is present somewhere."""
    root = tmp_path_factory.mktemp("fmt-corpus")
    generate(root, Spec(height=16, width=16, channels=1, count=24, seed=4), ["files", "tar"], workers=1,
             progress=False)
    cfg = BenchConfig(corpus=root, output=tmp_path_factory.mktemp("fmt-out") / "r.json", caches=("warm",),
                      naive=False, run=RunConfig(epochs=2, batch_size=8))
    res = run_bench(cfg)
    run = res.runs[0]
    capped = CappedEpoch(resident_bytes_before=0, resident_bytes_after=4096, cgroup_cache_bytes=8192,
                         cgroup_rss_bytes=1 << 20, cgroup_peak_bytes=2 << 20, cgroup_limit_hits=3, cgroup_oom_kills=0,
                         hit_bytes=10, miss_page_bytes=4096, probe_s=0.001, hit_ratio=0.5, expected_hit_ratio=0.0,
                         read_amplification=1.0, read_amplification_pages=1.0)
    epochs = (dataclasses.replace(run.epochs[0], capped=capped),
              dataclasses.replace(run.epochs[1], h2d=DeviceCopy(bytes=100, transfers=3, seconds=0.01, stage_s=0.002)),
              *run.epochs[2:])
    return dataclasses.replace(res, runs=(dataclasses.replace(run, epochs=epochs), *res.runs[1:]))


def flatten_to_v2(data: dict) -> dict:
    """What version 2 wrote for these results: every part's fields flat on the epoch, with version
    2's defaults where a part is absent."""
    data = json.loads(json.dumps(data))
    data["version"] = 2
    defaults = {"capped": dict.fromkeys(CappedEpoch.__dataclass_fields__),
                "h2d": {"h2d_bytes": 0, "h2d_transfers": 0, "h2d_s": 0.0, "h2d_stage_s": 0.0},
                "split": {"read_ns": [], "decode_ns": [], "read_cpu_s": None, "decode_cpu_s": None},
                "order": dict.fromkeys(Order.__dataclass_fields__)}
    for run in data["runs"]:
        run.pop("storage")
        for e in run["epochs"]:
            for part, default in defaults.items():
                value = e.pop(part)
                if value is None:
                    e.update(default)
                elif part == "h2d":
                    e.update({"h2d_bytes": value["bytes"], "h2d_transfers": value["transfers"],
                              "h2d_s": value["seconds"], "h2d_stage_s": value["stage_s"]})
                else:
                    e.update(value)
    return data


def test_the_parts_are_where_each_epoch_has_them(measured):
    run = measured.runs[0]
    assert VERSION == 3
    timed = [e for e in run.epochs if e.timing]
    assert timed and all(isinstance(e.split, Split) and len(e.split.read_ns) == e.samples for e in timed)
    assert all(e.split is None for e in run.epochs if not e.timing)
    assert all(isinstance(e.order, Order) and e.order.displacement is not None for e in run.epochs if not e.timing)
    assert run.epochs[0].capped.cgroup_limit_hits == 3 and run.epochs[1].h2d.transfers == 3
    assert run.epochs[0].h2d is None and run.epochs[1].capped is None


def test_version_3_round_trips(measured, tmp_path):
    measured.save(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["version"] == 3
    e0 = data["runs"][0]["epochs"][0]
    assert e0["capped"]["cgroup_peak_bytes"] == 2 << 20 and "cgroup_peak_bytes" not in e0  # nested, not flat
    assert Results.load(tmp_path / "r.json").runs == measured.runs


def test_version_2_files_migrate_to_the_same_records(measured, tmp_path):
    v2 = flatten_to_v2(measured.to_dict())
    assert "capped" not in v2["runs"][0]["epochs"][0] and v2["runs"][0]["epochs"][0]["hit_ratio"] == 0.5
    (tmp_path / "v2.json").write_text(json.dumps(v2))
    back = Results.load(tmp_path / "v2.json")
    assert back.runs == measured.runs  # every value where version 3 keeps it; storage: local
    for old, new in zip(measured.runs, back.runs):
        assert summarize(old, measured.floors, measured.corpus) == summarize(new, back.floors, back.corpus)


def test_a_part_of_the_wrong_shape_is_refused(measured):
    data = json.loads(json.dumps(measured.to_dict()))
    data["runs"][0]["epochs"][1]["h2d"] = {"bytes": "many", "transfers": 1, "seconds": 0.1}
    with pytest.raises(ResultsError, match="h2d: bytes: expected int"):
        Results.from_dict(data)
    data["runs"][0]["epochs"][1]["h2d"] = [1, 2]
    with pytest.raises(ResultsError, match="expected an object for DeviceCopy"):
        Results.from_dict(data)

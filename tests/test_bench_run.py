"""bench run end to end on a small corpus: true bytes, checked cache states, JSON, report, compare."""

import dataclasses
import json

import numpy as np
import pytest

from generator.layouts import get_layout, layout_ids

from bench.report.compare import compare
from bench.report.markdown import summary_table, write_report
from bench.results.result import VERSION, Results, ResultsError, RunConfig, load_results, summarize
from bench.run.config import BenchConfig
from bench.run.runner import run_bench
from generator.build import generate
from generator.errors import UsageError
from generator.spec import Spec
from loaders.registry import readers

# 512x512x4 TIFFs of 1,048,784 B: page rounding adds 0.4% and a loose file's metadata (inode and
# directory blocks, read too when cold) a few KiB, so what the OS reads from the device for a cold
# epoch can be held to the payload within 5% in every layout.
SPEC = Spec(height=512, width=512, channels=4, count=32, seed=3, num_classes=3)
SAMPLE = 1_048_784


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-corpus")
    generate(root, SPEC, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def results(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    cfg = BenchConfig(corpus=corpus, output=out / "r.json", caches=("cold", "warm"), workers=(0, 1),
                      run=RunConfig(epochs=2, batch_size=5), checkpoint_mb=1.0, checkpoint_every=1)
    res = run_bench(cfg)
    res.save(cfg.output)
    return res, cfg.output


def runs_of(res, **match):
    return [r for r in res.runs if all(getattr(r, k) == v for k, v in match.items())]


def test_every_layout_cache_and_worker_setting_is_a_run(results):
    res, _ = results
    keys = {(r.layout, r.cache, r.config.workers) for r in res.runs}
    for layout in ("files", "hdf5", "lmdb"):
        for cache in ("cold", "warm"):
            assert {(layout, cache, 0), (layout, cache, 1)} <= keys
    assert {("naive-files", "cold", 0), ("naive-hdf5", "warm", 0)} <= keys
    for run in res.runs:
        throughput = [e for e in run.epochs if not e.timing]
        assert len(throughput) == (1 if run.kind == "naive" else 2) and all(e.samples == SPEC.count for e in run.epochs)
        assert all(e.indices_ok and e.batch_ns and e.ttfb_s <= e.wall_s for e in run.epochs)
        timed = [e for e in run.epochs if e.timing]
        assert len(timed) == (0 if run.kind == "naive" else 1)
        assert all(len(e.sample_ns) == SPEC.count for e in timed)


def test_cold_runs_were_cold_and_warm_runs_warm(results):
    res, _ = results
    for run in runs_of(res, cache="cold"):
        assert run.evict_method in ("drop_caches", "fadvise")
        assert all(e.residency_before <= 0.01 for e in run.epochs), run.layout
    for run in runs_of(res, cache="warm"):
        assert all(e.residency_before >= 0.99 and e.residency_after >= 0.99 for e in run.epochs), run.layout


@pytest.mark.parametrize("layout", ["files", "hdf5", "lmdb", "naive-files", "naive-hdf5"])
def test_reported_bytes_match_the_os_counters_on_a_cold_run(results, layout):
    res, _ = results
    for run in runs_of(res, layout=layout, cache="cold"):
        for e in run.epochs:
            assert e.payload_bytes == SPEC.count * SAMPLE
            # read_bytes: what this process and its worker processes read from the device
            assert abs(e.read_bytes - e.payload_bytes) <= 0.05 * e.payload_bytes, (layout, run.config.workers, e)
            if layout in ("files", "naive-files", "naive-hdf5"):  # LMDB and HDF5 read through a map: faults, not read calls
                assert e.rchar >= e.payload_bytes


def test_process_workers_counters_are_summed_in(corpus, tmp_path):
    cfg = BenchConfig(corpus=corpus, output=tmp_path / "p.json", layouts=("files",), caches=("cold",),
                      workers=(2,), naive=False, run=RunConfig(epochs=1, worker_kind="process", sample_latency=False))
    (run,) = run_bench(cfg).runs
    (e,) = run.epochs
    assert abs(e.read_bytes - e.payload_bytes) <= 0.05 * e.payload_bytes  # read by the workers, not by us
    assert e.lost_processes == 0


def test_naive_baselines_deliver_the_loaders_images(corpus):
    from loaders import Loader, open_corpus

    reader = open_corpus(corpus, "files")
    with Loader(reader, batch_size=7) as loader:
        expected = {int(i): img for b in loader.epoch(1) for i, img in zip(b.indices, b.images)}
    with_naive = [name for name, cls in readers().items() if cls.naive]
    assert {"files", "hdf5"} <= set(with_naive)
    for layout in (name for name in with_naive if get_layout(name).missing() is None):
        with Loader(open_corpus(corpus, layout), batch_size=7, naive=True) as naive:
            got = {int(i): img for b in naive.epoch(1) for i, img in zip(b.indices, b.images)}
        assert got.keys() == expected.keys()
        assert all(np.array_equal(got[i], expected[i]) for i in got)


def test_checkpoints_are_written_timed_and_removed(results):
    res, path = results
    for run in runs_of(res, kind="loader"):
        assert [c.after_epoch for c in run.checkpoints] == [0, 1]
        assert all(c.bytes == 1_000_000 and c.seconds > 0 for c in run.checkpoints)
        s = summarize(run, res.floors, res.corpus)["checkpoint"]
        assert s["read_write_ratio"] == pytest.approx(2 * SPEC.count * SAMPLE / 2_000_000)
    assert not list(path.parent.glob(".layoutbench-checkpoint-*"))


def test_floors_and_metadata_are_in_the_same_results(results):
    res, _ = results
    assert {(f.layout, f.cache) for f in res.floors.seq} == {(l, c) for l in layout_ids(available=True)
                                                               for c in ("cold", "warm")}
    assert {f.cache for f in res.floors.pread} == {"cold", "warm"}
    assert res.floors.null_us_per_sample > 0 and res.floors.memcpy_mb_per_s > 0
    meta = res.metadata
    assert meta["versions"]["h5py"] and meta["versions"]["hdf5"] and meta["versions"]["lmdb"]
    assert meta["host"]["cores"] and meta["filesystem"]["fstype"] and meta["config"]["run"]["batch_size"] == 5


def test_json_round_trip_and_headline_fields(results):
    res, path = results
    back = Results.load(path)
    assert back == res
    data = json.loads(path.read_text())
    assert data["version"] == VERSION and len(data["runs"]) == len(res.runs)
    for run in data["runs"]:
        for key in ("layout", "cache", "samples_per_s", "mb_per_s", "ttfb_s", "p99_ms", "floor_ratio"):
            assert key in run
        assert run["samples_per_s"] > 0 and run["floor_ratio"] > 0
    assert load_results(path)["runs"][0]["layout"] == res.runs[0].layout


def test_summary_is_recomputed_from_raw_records_on_load(results, tmp_path):
    _, path = results
    data = json.loads(path.read_text())
    true = data["runs"][0]["samples_per_s"]
    data["runs"][0]["samples_per_s"] = 1e12  # a figure the raw epochs do not give
    p = tmp_path / "edited.json"
    p.write_text(json.dumps(data))
    counted = [e for e in data["runs"][0]["epochs"] if not e["timing"]]
    epochs = [e for e in counted if not e["first"]] or counted  # the steady state, else every epoch
    median = float(np.median([e["samples"] / e["wall_s"] for e in epochs]))
    assert load_results(p)["runs"][0]["samples_per_s"] == pytest.approx(median) == pytest.approx(true)


@pytest.mark.parametrize("change,message", [
    ({"version": VERSION + 1}, f"results version {VERSION + 1}"),
    ({"version": None}, "results version None"),
    ({"format": "something-else"}, "not a layoutbench results file"),
])
def test_unknown_versions_and_formats_are_refused(results, tmp_path, change, message):
    _, path = results
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(json.loads(path.read_text()) | change))
    with pytest.raises(ResultsError, match=message):
        Results.load(p)


def test_damaged_results_are_refused_with_a_message(results, tmp_path):
    _, path = results
    data = json.loads(path.read_text())
    del data["runs"][0]["epochs"]
    p = tmp_path / "damaged.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match="lacks 'epochs'"):
        Results.load(p)
    p.write_text("{not json")
    with pytest.raises(ResultsError, match="cannot be read as JSON"):
        Results.load(p)


def test_report_renders(results, tmp_path):
    _, path = results
    md = write_report([path], tmp_path / "rep")
    text = md.read_text()
    assert "| files | cold |" in text.replace("  ", " ") or "files" in text
    for name in ("report.md", "results.csv", "throughput.png", "latency_cdf.png", "workers.png"):
        f = tmp_path / "rep" / name
        assert f.exists() and f.stat().st_size > 1000, name
    assert (tmp_path / "rep" / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = (tmp_path / "rep" / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(json.loads(path.read_text())["runs"])
    assert "floors" in summary_table([Results.load(path)])


def test_results_are_never_written_inside_the_corpus(corpus, results):
    res, path = results
    with pytest.raises(UsageError, match="inside the corpus directory"):
        run_bench(BenchConfig(corpus=corpus, output=corpus / "files" / "r.json"))
    with pytest.raises(UsageError, match="inside the corpus directory"):
        write_report([path], corpus / "report")


def test_compare_refuses_mismatched_configs_unless_forced(results, tmp_path):
    res, path = results
    same = compare(path, path)
    assert "B/A" in same and "1.00" in same
    other = dataclasses.replace(res, runs=tuple(dataclasses.replace(r, config=dataclasses.replace(r.config, batch_size=64))
                                                for r in res.runs))
    other.save(tmp_path / "b.json")
    with pytest.raises(UsageError, match="configs differ .*batch_size 5 vs 64"):
        compare(path, tmp_path / "b.json")
    forced = compare(path, tmp_path / "b.json", force=True)
    assert "forced:" in forced and "B/A" in forced

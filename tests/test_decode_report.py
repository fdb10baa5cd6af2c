"""The read/decode split in results and reports: the summary's per-sample figures and bound_by, the
report's Read and decode table and the Answer's line per corpus (from fixture results, no
measuring), the CSV's columns, results version 1 migrating, and `--decode both` end to end."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from bench.__main__ import main as bench_main
from bench.run.config import BenchConfig
from bench.report.analysis import rows
from bench.report.markdown import write_report
from bench.report.verdict import answer, bound_line
from bench.results.result import VERSION, EpochRecord, Floors, Results, ResultsError, Run, RunConfig, Split, summarize
from bench.run.runner import run_bench
from generator.build import generate
from generator.errors import UsageError
from generator.spec import Spec

SAMPLE = 1000
N = 64  # samples per epoch


def epoch(e, mb_per_s, timing=False, read_ms=None, decode_ms=None, read_cpu_ms=None, decode_cpu_ms=None):
    wall = N * SAMPLE / (mb_per_s * 1e6)
    split = {}
    sample_ns = ()
    if timing and read_ms is not None:
        r, d = round(read_ms * 1e6), round(decode_ms * 1e6)
        sample_ns = (r + d,) * N
        split = dict(split=Split(read_ns=(r,) * N, decode_ns=(d,) * N, read_cpu_s=read_cpu_ms / 1e3 * N,
                                 decode_cpu_s=decode_cpu_ms / 1e3 * N))
    return EpochRecord(repeat=0, epoch=e, first=e == 0, timing=timing, samples=N, payload_bytes=N * SAMPLE,
                       wall_s=wall, ttfb_s=wall / 4, batch_ns=(round(wall / 4 * 1e9),) * 4, sample_ns=sample_ns,
                       cpu_s=0.1, rchar=0, read_bytes=0, syscr=0, device_sectors_read=None, residency_before=1.0,
                       residency_after=1.0, cache_ok=True, indices_ok=True, **split)


def run(layout, cache, mb, read_ms, decode_ms, decode=True, cpu=1.0, workers=2):
    """Two throughput epochs at `mb` MB/s and a timing epoch with the given split (CPU = cpu x wall)."""
    epochs = (epoch(0, mb / 2), epoch(1, mb),
              epoch(2, mb / 3, True, read_ms, decode_ms if decode else 0.0, read_ms * cpu,
                    decode_ms * cpu if decode else 0.0))
    return Run(layout, "loader", layout, cache, None, RunConfig(batch_size=16, workers=workers, decode=decode), epochs)


def results(runs, payload, quality=None, floors=Floors()):
    spec = {"preset": "imagenet", "count": N, "payload": payload, "compression": "none"}
    if quality is not None:
        spec["quality"] = quality
    corpus = {"path": "/nowhere", "spec": spec, "payload_bytes": N * SAMPLE, "layouts": {}}
    return Results("2026-01-01T00:00:00Z", {"command": ["python", "-m", "bench", "run"]}, corpus, floors, tuple(runs))


SPLIT_FLOORS = Floors(split_samples=1000, split_timed_s=0.0030, split_plain_s=0.0005, split_read_s=0.0001,
                      split_decode_s=0.0004, split_read_cpu_s=0.0015, split_decode_cpu_s=0.0013)


@pytest.fixture
def fixture():
    jpeg = results([run("files", "warm", 10.0, 0.03, 0.42, cpu=0.9),
                    run("lmdb", "warm", 11.0, 0.02, 0.40),
                    run("lmdb", "warm", 9.0, 0.3, 0.40, workers=1),  # not lmdb's best setting: not in the Answer
                    run("files", "warm", 200.0, 0.03, 0.0, decode=False)], "jpeg", 90, SPLIT_FLOORS)
    raw = results([run("files", "cold", 20.0, 0.5, 0.05, cpu=0.2), run("files", "warm", 300.0, 0.04, 0.03),
                   run("lmdb", "warm", 250.0, 0.09, 0.03)], "raw")
    return [jpeg, raw]


def test_summary_gives_the_split_per_sample_and_bound_by(fixture):
    jpeg = fixture[0]
    s = summarize(jpeg.runs[0], jpeg.floors, jpeg.corpus)
    assert s["decoded"] is True and s["split_samples"] == N and s["bound_by"] == "decode"
    assert s["read_s_per_sample"] == pytest.approx(0.03e-3) and s["decode_s_per_sample"] == pytest.approx(0.42e-3)
    assert s["read_cpu_s_per_sample"] == pytest.approx(0.027e-3)
    assert s["decode_cpu_s_per_sample"] == pytest.approx(0.378e-3)
    assert s["read_ms"] == pytest.approx({"p50": 0.03, "p90": 0.03}) and s["decode_ms"]["p90"] == pytest.approx(0.42)
    raw = summarize(jpeg.runs[3], jpeg.floors, jpeg.corpus)  # payload bytes only: no decode, no bound
    assert raw["decoded"] is False and raw["bound_by"] is None and raw["decode_s_per_sample"] is None
    assert raw["read_s_per_sample"] == pytest.approx(0.03e-3)
    cold, warm, _ = (summarize(r, fixture[1].floors, fixture[1].corpus) for r in fixture[1].runs)
    assert (cold["bound_by"], warm["bound_by"]) == ("io", "mixed")
    assert jpeg.floors.split_us_per_sample == pytest.approx(2.5)
    assert jpeg.floors.split_bias_us() == pytest.approx({"read_s": 0.1, "decode_s": 0.4, "read_cpu_s": 1.5,
                                                         "decode_cpu_s": 1.3})


def test_answer_says_per_corpus_what_bounded_its_runs(fixture):
    lines = answer(fixture)
    jpeg = [l for l in lines if l.startswith("imagenet-64-jpeg-q90: ")]
    assert jpeg == ["imagenet-64-jpeg-q90: warm: decode-bound in every layout (files, lmdb): decode 0.4 to 0.42 "
                    "ms/sample vs read 0.02 to 0.03 ms; the layout matters little here (it changes the read, at most "
                    "7% of a sample's time); payload bytes only: 200,000 samples/s vs 10,000 to 11,000 decoded"]
    raw = [l for l in lines if l.startswith("imagenet-64-raw: ")]
    assert raw == ["imagenet-64-raw: cold: I/O-bound in files: decode 0.05 ms/sample vs read 0.5 ms; the layout is "
                   "what matters here (the read is up to 91% of a sample's time); warm: bound differently by layout: "
                   "mixed (read and decode within 2x) files (read 0.04, decode 0.03 ms/sample); I/O-bound lmdb "
                   "(read 0.09, decode 0.03 ms/sample)"]
    # the bytes-only run is ranked apart, never against the decoded ones
    warm = [l for l in lines if l.startswith("imagenet-64-jpeg-q90 warm")]
    assert warm[0].startswith("imagenet-64-jpeg-q90 warm: lmdb 1.00 > files 0.91 (")
    assert warm[1].startswith("imagenet-64-jpeg-q90 warm (payload bytes only): files 1.00 (")
    assert not any(l.startswith("imagenet-64-jpeg-q90 cold (payload bytes only)") for l in lines)
    lost = results([run("files", "warm", 10.0, 0.03, 0.42)], "jpeg", 90)
    lost = Results(lost.created, lost.metadata, lost.corpus, lost.floors,
                   (dataclasses.replace(lost.runs[0], epochs=tuple(dataclasses.replace(e, cache_ok=False)
                                                                   for e in lost.runs[0].epochs)),))
    assert "decode-bound in files (cache not held): " in answer([lost])[-1]


def test_answer_line_without_a_split():
    untimed = Run("files", "loader", "files", "warm", None, RunConfig(), (epoch(0, 5.0), epoch(1, 5.0)))
    old = Run("files", "loader", "files", "cold", None, RunConfig(), (epoch(0, 5.0), epoch(1, 5.0), epoch(2, 5.0, True)))
    assert bound_line("x", rows([results([untimed], "png")])) is None  # no timing epoch: nothing to say
    assert bound_line("x", rows([results([old], "png")])) == ("x (png): read/decode split not measured (results "
                                                                "written before version 2)")
    only_raw = results([run("files", "warm", 200.0, 0.03, 0.0, decode=False)], "tiff")
    assert bound_line("imagenet-64", rows([only_raw])) == (
        "imagenet-64 (tiff): payload bytes only, not decoded: read 0.03 ms/sample; no decode to compare it with "
        "(run with --decode both)")


def test_report_table_and_csv(fixture, tmp_path):
    paths = []
    for k, res in enumerate(fixture):
        res.save(tmp_path / f"r{k}.json")
        paths.append(tmp_path / f"r{k}.json")
    md = write_report(paths, tmp_path / "out").read_text()
    section = md[md.index("## Read and decode"):]
    section = section[:section.index("\n## ", 5)]
    assert ("- imagenet-64-jpeg-q90: the timing costs 2.50 us per timed sample; over a reader that costs nothing it "
            "measures read 0.10 us, decode 0.40 us, read CPU 1.50 us, decode CPU 1.30 us") in section
    assert "### imagenet-64-jpeg-q90 (jpeg q90)" in section and "### imagenet-64-raw (raw)" in section
    assert ("| files | jpeg q90 | warm | 2 t | 10,000 | 0.0300 (0.0300 / 0.0300) | 0.4200 (0.4200 / 0.4200) | "
            "0.0270 | 0.3780 | decode-bound |") in section
    assert ("| files | jpeg q90 (bytes only) | warm | 2 t | 200,000 | 0.0300 (0.0300 / 0.0300) | - | 0.0300 | - | "
            "- (not decoded) |") in section
    assert "| files | raw | cold | 2 t | 20,000 | 0.5000 (0.5000 / 0.5000) | 0.0500 (0.0500 / 0.0500) | 0.1000 | " \
           "0.0100 | I/O-bound |" in section
    answer_part = md[md.index("## Answer"):md.index("## Throughput")]
    assert "- imagenet-64-raw: cold: I/O-bound in files" in answer_part
    assert "files (bytes only)" in md[md.index("## Throughput"):]  # the throughput table marks it too
    with open(tmp_path / "out" / "results.csv") as f:
        got = list(csv.DictReader(f))
    first = next(r for r in got if r["layout"] == "files" and r["codec"] == "jpeg q90" and r["decode"] == "True")
    assert (first["bound_by"], float(first["read_ms_per_sample"]), float(first["decode_cpu_ms_per_sample"])) == (
        "decode", 0.03, 0.378)
    raw_row = next(r for r in got if r["decode"] == "False")
    assert raw_row["bound_by"] == "" and raw_row["decode_ms_per_sample"] == "" and raw_row["split_samples"] == str(N)


def v1_file(res: Results) -> dict:
    """`res` as version 1 wrote it: no split fields anywhere (and flat epochs: no nested parts)."""
    data = json.loads(json.dumps(res.to_dict()))
    data["version"] = 1
    for r in data["runs"]:
        for e in r["epochs"]:
            for k in ("split", "capped", "h2d", "order"):
                e.pop(k)
    for k in [k for k in data["floors"] if k.startswith("split_")]:
        data["floors"].pop(k)
    return data


def test_version_1_results_migrate(tmp_path):
    decoded = run("files", "warm", 10.0, 0.03, 0.42)
    undecoded = run("lmdb", "warm", 50.0, 0.03, 0.0, decode=False)
    naive = Run("naive-files", "naive", "files", "warm", None, RunConfig(epochs=1, sample_latency=False, decode=False),
                (epoch(0, 4.0),))
    data = v1_file(results([decoded, undecoded, naive], "jpeg", 90))
    assert VERSION == 3
    res = Results.from_dict(data, "v1.json")
    d, u, n = res.runs
    assert all(e.split is None for r in res.runs for e in r.epochs)  # not measured
    assert len([e for e in d.epochs if e.timing][0].sample_ns) == N  # a decoded run's latencies are kept
    assert [e for e in u.epochs if e.timing][0].sample_ns == ()  # v1 decoded these under --no-decode: dropped
    assert n.config.decode is True  # a naive baseline always decoded
    assert any("version 1" in note and "lmdb warm" in note for note in res.notes)
    s = summarize(d, res.floors, res.corpus)
    assert s["bound_by"] is None and s["split_samples"] == 0 and s["sample_latency_ms"]["p50"] == pytest.approx(0.45)
    assert res.floors.split_us_per_sample is None
    res.save(tmp_path / "v3.json")  # it saves as version 3 and loads back the same
    back = Results.load(tmp_path / "v3.json")
    assert json.loads((tmp_path / "v3.json").read_text())["version"] == 3 and back.runs == res.runs
    assert bound_line("imagenet-64-jpeg-q90", rows([back])).endswith("not measured (results written before version 2)")


def test_a_split_that_does_not_match_its_samples_is_refused():
    data = json.loads(json.dumps(results([run("files", "warm", 10.0, 0.03, 0.42)], "jpeg", 90).to_dict()))
    data["runs"][0]["epochs"][2]["split"]["read_ns"] = [1, 2]
    with pytest.raises(ResultsError, match="split read_ns is 2, not one per sample"):
        Results.from_dict(data)
    data["runs"][0]["epochs"][2]["split"] = None
    data["runs"][0]["epochs"][1]["split"] = {"read_ns": [1] * N, "decode_ns": [1] * N, "read_cpu_s": 0.0,
                                             "decode_cpu_s": 0.0}
    with pytest.raises(ResultsError, match="in a throughput epoch"):
        Results.from_dict(data)


def test_no_decode_and_decode_both_contradict(tmp_path):
    with pytest.raises(UsageError, match="--no-decode contradicts --decode both"):
        bench_main(["run", "--corpus", str(tmp_path), "--output", str(tmp_path / "r.json"), "--no-decode",
                    "--decode", "both"])


def test_decode_both_measures_each_run_both_ways(tmp_path):
    root = tmp_path / "c"
    generate(root, Spec(height=32, width=32, channels=3, count=24, payload="png", content="photo"), ["files", "lmdb"],
             workers=1, progress=False)
    cfg = BenchConfig(corpus=root, output=tmp_path / "out" / "r.json", layouts=("files", "lmdb"), caches=("warm",),
                      run=RunConfig(epochs=1, batch_size=8), naive=False, decodes=(True, False))
    res = run_bench(cfg)
    assert [(r.layout, r.config.decode) for r in res.runs] == [("files", True), ("lmdb", True), ("files", False),
                                                                ("lmdb", False)]
    assert res.floors.split_samples > 0 and res.floors.split_us_per_sample < 50
    for r in res.runs:
        s = summarize(r, res.floors, res.corpus)
        assert s["split_samples"] == 24 and s["read_s_per_sample"] > 0
        assert (s["bound_by"] in ("io", "decode", "mixed")) == r.config.decode
        timed = next(e for e in r.epochs if e.timing)
        assert timed.split.decode_ns == ((0,) * 24 if not r.config.decode else timed.split.decode_ns)
        assert all(x > 0 for x in timed.split.decode_ns) == r.config.decode
    res.save(cfg.output)
    assert Results.load(cfg.output).runs == res.runs
    from bench.report.compare import compare

    table = compare(cfg.output, cfg.output).splitlines()  # decoded and bytes-only runs matched apart
    assert len([l for l in table if " files (bytes only) " in l]) == 1 and len([l for l in table if " files  " in l]) == 1
    assert not any(l.startswith("only in") for l in table)


def test_dataloader_runs_are_decoded_runs(tmp_path, monkeypatch):
    """torch's DataLoader always decodes: --decode both measures it once, with the decoded runs;
    --decode no refuses it rather than label a decoded run as payload bytes only."""
    from bench.run import torchrun
    from bench.run.config import check_config
    from bench.run.runner import plan_runs
    from generator.manifest import read_manifest

    monkeypatch.setattr(torchrun, "check_torch", lambda *a: None)  # torch need not be installed
    root = tmp_path / "c"
    generate(root, Spec(height=8, width=8, channels=1, count=8, payload="raw"), ["files"], workers=1, progress=False)
    manifest = read_manifest(root)
    both = BenchConfig(corpus=root, output=tmp_path / "o" / "r.json", layouts=("files",), caches=("warm",),
                       naive=False, loader="both", decodes=(True, False))
    runs = plan_runs(both, manifest)
    assert [(spec.name, spec.kind, spec.decode) for spec in runs] == [
        ("files", "loader", True), ("torch-sample-files", "torch", True), ("torch-batch-files", "torch", True),
        ("files", "loader", False)]
    none = BenchConfig(corpus=root, output=tmp_path / "o" / "r.json", layouts=("files",), loader="torch",
                       run=RunConfig(decode=False))
    with pytest.raises(UsageError, match="always decodes"):
        check_config(none, manifest)

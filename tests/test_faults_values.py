"""Values (issue 12): a run that would read nothing is refused before measuring; every option of
bench run has bounds, and whatever it accepts stores results that load; results with the right
types but impossible values (an unknown cache, no epochs, an epoch of no samples, negative
seconds, ...) are refused on load with one line naming the field, never a crash in report,
compare or plan."""

from __future__ import annotations

import json

import pytest

from bench.cli.commands import build_parser, main as bench_main
from bench.run.config import BenchConfig, check_round_trip
from bench.results.result import Results, RunConfig
from bench.run.runner import run_bench
from bench.run.torchrun import default_worker_kind
from generator.cli import run_main


def bench(argv, capsys):
    try:
        code = run_main("python -m bench", bench_main, [str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(got, code, *fragments):
    rc, out, err = got
    assert rc == code, got
    assert err.count("\n") == 1 and err.startswith("python -m bench") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)


@pytest.fixture(scope="module")
def results_file(corpus, tmp_path_factory):
    """A real results file of a tiny run (one layout, warm, one epoch, no extras)."""
    out = tmp_path_factory.mktemp("values") / "r.json"
    cfg = BenchConfig(corpus=corpus("gray8"), output=out, layouts=("hdf5",), caches=("warm",), naive=False,
                      run=RunConfig(epochs=1, batch_size=8, sample_latency=False))
    run_bench(cfg).save(out)
    return out


@pytest.mark.parametrize("argv, says", [
    (["--batch-size", "1000", "--drop-last"], "--batch-size 1,000 with --drop-last reads no sample of the 37 in the corpus"),
    (["--batch-size", "38", "--drop-last"], "use --batch-size 37 or less, or drop --drop-last"),
    (["--prefetch", "1024", "--batch-size", "33554432", "--workers", "256", "--worker-kind", "process"],
     "batches in flight would take"),
])
def test_a_run_that_reads_nothing_or_cannot_fit_is_refused_before_measuring(corpus, tmp_path, capsys, monkeypatch,
                                                                           argv, says):
    monkeypatch.setattr("bench.run.config.available_memory", lambda: 1 << 30)  # 1 GiB free, whatever this machine has
    got = bench(["run", "--corpus", corpus("gray8"), "--output", tmp_path / "out" / "r.json", "--quiet", *argv], capsys)
    one_line(got, 2, says)
    assert not (tmp_path / "out").exists()  # refused before any output directory was made


def test_more_ranks_than_samples_is_refused(corpus, tmp_path):
    """Under MPI, a rank with no sample would read nothing: refused before measuring."""
    from bench.run.config import check_config
    from generator.errors import UsageError
    from generator.manifest import read_manifest

    root = corpus("gray8")
    cfg = BenchConfig(corpus=root, output=tmp_path / "r.json", run=RunConfig(world=38))
    with pytest.raises(UsageError, match="38 ranks for 37 samples: some ranks would read nothing"):
        check_config(cfg, read_manifest(root))
    check_config(BenchConfig(corpus=root, output=tmp_path / "r.json", run=RunConfig(world=37)), read_manifest(root))


@pytest.mark.parametrize("option, too_big", [
    ("--seed", str(2**64 + 1)), ("--prefetch", "1e30"), ("--batch-size", "1e30"), ("--epochs", "1e30"),
    ("--repeats", "1e30"), ("--workers", "1,1e30"), ("--shard-shift", "1e30"), ("--checkpoint-every", "1e30"),
    ("--checkpoint-mb", "1e30"),
])
def test_every_bench_run_number_has_a_bound_and_the_bound_round_trips(corpus, tmp_path, capsys, option, too_big):
    """Above its bound: one line naming the option, exit 2. At its bound: the settings the run would
    store load back equal (Results' own loader, values checked)."""
    base = ["run", "--corpus", corpus("gray8"), "--output", tmp_path / "r.json"]
    one_line(bench([*base, option, too_big], capsys), 2, f"argument {option}", "at most")
    parser = build_parser()
    action = next(a for sub in parser._subparsers._group_actions for a in sub.choices["run"]._actions
                  if option in a.option_strings)
    bound = {"--workers": "256"}.get(option)
    if bound is None:  # the largest value the type accepts: bisect between 1 and too_big
        lo, hi = 1, int(float(too_big))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                action.type(str(mid))
                lo = mid
            except Exception:
                hi = mid - 1
        bound = str(lo)
    args = parser.parse_args([*map(str, base), option, bound, *(
        ["--checkpoint-every", "1"] if option == "--checkpoint-mb" else ["--checkpoint-mb", "1"]
        if option == "--checkpoint-every" else [])])
    kind = args.worker_kind or default_worker_kind(args.loader, args.workers)
    rc = RunConfig(batch_size=args.batch_size, workers=max(args.workers), worker_kind=kind,
                   shuffle=args.shuffle, prefetch=args.prefetch, seed=args.seed, epochs=args.epochs,
                   repeats=args.repeats, shard_shift=args.shard_shift)
    check_round_trip(BenchConfig(corpus=args.corpus, output=args.output, run=rc))


ODD = {
    "an unknown cache": (lambda d: d["runs"][0].update(cache="lukewarm"), "cache is 'lukewarm', not one of cold"),
    "no epochs": (lambda d: d["runs"][0].update(epochs=[]), "without a throughput epoch"),
    "only timing epochs": (lambda d: [e.update(timing=True) for e in d["runs"][0]["epochs"]],
                           "without a throughput epoch"),
    "an epoch of no samples": (lambda d: d["runs"][0]["epochs"][0].update(samples=0), "samples is 0, outside [1"),
    "negative seconds": (lambda d: d["runs"][0]["epochs"][0].update(wall_s=-1.5), "wall_s: -1.5 is negative"),
    "zero seconds": (lambda d: d["runs"][0]["epochs"][0].update(wall_s=0), "wall_s is 0.0, outside"),
    "ttfb beyond the epoch": (lambda d: d["runs"][0]["epochs"][0].update(ttfb_s=1e6), "more than its wall_s"),
    "a residency of 150%": (lambda d: d["runs"][0]["epochs"][0].update(residency_before=1.5),
                            "residency_before is 1.5, outside [0.0, 1.0]"),
    "a negative batch wait": (lambda d: d["runs"][0]["epochs"][0].update(batch_ns=[5, -3]), "-3 is negative"),
    "an unknown worker kind": (lambda d: d["runs"][0]["config"].update(worker_kind="green"), "worker_kind is 'green'"),
    "a batch size of 0": (lambda d: d["runs"][0]["config"].update(batch_size=0), "batch_size is 0"),
    "an unknown kind of run": (lambda d: d["runs"][0].update(kind="magic"), "kind is 'magic'"),
    "an empty layout name": (lambda d: d["runs"][0].update(layout=""), "layout is ''"),
    "a floor of another cache": (lambda d: d["floors"]["seq"][0].update(cache="hot"), "cache is 'hot'"),
    "negative floor seconds": (lambda d: d["floors"]["seq"][0].update(seconds=-1), "-1 is negative"),
    "a pread of 0-byte samples": (lambda d: d["floors"]["pread"][0].update(sample_bytes=0), "sample_bytes is 0"),
    "negative corpus bytes": (lambda d: d["corpus"].update(payload_bytes=-5), "corpus payload_bytes is -5"),
}


@pytest.mark.parametrize("name", ODD)
def test_results_with_impossible_values_are_refused_by_report_compare_and_plan(results_file, tmp_path, capsys, name):
    edit, says = ODD[name]
    data = json.loads(results_file.read_text())
    edit(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    for argv in (["report", bad, "--out", tmp_path / "report"], ["compare", results_file, bad],
                 ["plan", "--images", "1000", "--preset", "mnist", "--epochs", "3", "--from", bad]):
        one_line(bench(argv, capsys), 2, str(bad), says, "rerun python -m bench run")
    assert not (tmp_path / "report").exists()  # refused before any PNG or CSV


def test_the_sound_results_file_reports(results_file, tmp_path, capsys):
    """The positive control of the cases above: the unedited file reports, compares and plans."""
    assert bench(["report", results_file, "--out", tmp_path / "report"], capsys)[0] == 0
    assert (tmp_path / "report" / "report.md").exists()
    assert bench(["compare", results_file, results_file], capsys)[0] == 0
    assert bench(["plan", "--images", "1000", "--preset", "mnist", "--epochs", "3", "--from", results_file], capsys)[0] == 0
    Results.load(results_file)

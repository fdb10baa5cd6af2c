"""The planning calculator: the seed article's worked example, projections, and one-line errors."""

import json
import subprocess
import sys

import pytest

from bench.cli.plan import PROG, Measured, Plan, human_bytes, main, project, sci
from generator.cli import run_main

SEED = ["--images", "1e8", "--preset", "4k-8bit", "--epochs", "5000", "--checkpoint-mb", "40",
        "--checkpoint-every", "100", "--batch-size", "32"]


def seed_plan(sample_bytes=45_923_200):
    return Plan(images=10**8, sample_bytes=sample_bytes, epochs=5000, batch_size=32,
                checkpoint_bytes=40_000_000, checkpoint_every=100)


def test_seed_article_example_figures():
    plan = seed_plan()
    assert plan.bytes_per_epoch == 4_592_320_000_000_000
    assert human_bytes(plan.bytes_per_epoch) == "4.59 PB"
    assert plan.file_opens == 5 * 10**11 and sci(plan.file_opens) == "5x10^11"
    assert plan.checkpoint_writes == 50
    assert plan.checkpoint_total_bytes == 2 * 10**9 and human_bytes(plan.checkpoint_total_bytes) == "2.00 GB"
    assert plan.batches_per_epoch == 3_125_000
    # The article multiplies its rounded 4.59 PB by 5000 (22.95 EB); the exact 45,923,200 B sample
    # gives 22.96 EB, within that rounding; with the article's 45.9 MB sample it is 22.95 exactly.
    assert human_bytes(plan.total_bytes) == "22.96 EB"
    assert abs(plan.total_bytes / 22.95e18 - 1) < 0.001
    assert human_bytes(seed_plan(45_900_000).total_bytes) == "22.95 EB"
    assert plan.read_write_ratio == plan.total_bytes / 2e9


def test_cli_prints_the_seed_example_with_units(capsys):
    assert main(SEED) == 0
    out = capsys.readouterr().out
    for text in ("4.59 PB", "22.96 EB", "5x10^11", "50 (one per 100 epochs, 40.00 MB each), 2.00 GB in all",
                 "3,125,000 host-to-device transfers", "11,480,800,000 : 1"):
        assert text in out, text
    assert main(SEED[:2] + ["--image-mb", "45.9"] + SEED[4:]) == 0
    assert "22.95 EB" in capsys.readouterr().out


def test_partial_last_batch_and_no_checkpoints(capsys):
    plan = Plan(images=33, sample_bytes=784, epochs=2, batch_size=32)
    assert plan.batches_per_epoch == 2
    assert plan.checkpoint_writes == 0 and plan.read_write_ratio is None
    assert main(["--images", "33", "--preset", "mnist", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "no writes" in out and "25.87 kB" in out  # 33 * 784 B


def test_projection_epoch_time_and_nodes_for_target():
    runs = [Measured("hdf5", "cold", 1000.0, 1000 / 45.9232),
            Measured("files", "cold", 500.0, 500 / 45.9232, nodes=2),
            Measured("lmdb", "cold", 0.0, 0.0)]  # failed: skipped
    hdf5, files = project(seed_plan(), runs, target_hours=24)
    assert hdf5.epoch_seconds == pytest.approx(4_592_320.0)  # 4.59 PB at 1 GB/s
    assert hdf5.nodes == 54  # ceil(4,592,320 s / 86,400 s)
    assert hdf5.measured_sample_bytes == pytest.approx(45_923_200)
    assert files.node_bytes_per_s == pytest.approx(250e6)  # a 2-node run counts per node
    assert files.nodes == 213
    assert project(seed_plan(), runs[:1], target_hours=None)[0].nodes is None


def test_target_prints_aggregate_bandwidth(capsys):
    assert main(SEED + ["--target-epoch-hours", "24"]) == 0
    assert "53.15 GB/s aggregate" in capsys.readouterr().out  # 4.59232e15 B / 86,400 s


@pytest.mark.parametrize("argv, words", [
    (["--images", "0", "--preset", "mnist", "--epochs", "1"], "--images: must be a positive integer"),
    (["--images", "ten", "--preset", "mnist", "--epochs", "1"], "--images: expected a positive integer"),
    (["--images", "10", "--preset", "nope", "--epochs", "1"], "invalid choice: 'nope'"),
    (["--images", "10", "--epochs", "1"], "one of the arguments --preset --image-mb is required"),
    (["--images", "10", "--preset", "mnist", "--epochs", "1", "--checkpoint-mb", "4"],
     "--checkpoint-mb and --checkpoint-every together"),
    (["--images", "10", "--preset", "mnist", "--epochs", "1", "--target-epoch-hours", "-1"],
     "--target-epoch-hours: must be a positive number"),
    (["--images", "10", "--image-mb", "nan", "--epochs", "1"], "--image-mb: must be a positive number"),
])
def test_bad_values_exit_2_with_one_line(argv, words, capsys):
    try:
        code = run_main(PROG, main, argv)
    except SystemExit as exc:  # argparse's own exit for bad arguments
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_standalone_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "bench.cli.plan", *SEED], capture_output=True, text=True)
    assert proc.returncode == 0 and "4.59 PB" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "bench.cli.plan", "--images", "-5", "--preset", "mnist",
                          "--epochs", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def small_results(path, mb_per_epoch=(90.0, 100.0, 110.0), version=None):
    """A results file as `python -m bench run` writes it: one hdf5 run, 4K samples, 3 epochs."""
    import dataclasses

    from bench.results.result import EpochRecord, Floors, Results, Run, RunConfig

    def epoch_record(**given):  # fields this test does not need (counters, ...) are None
        unset = [f.name for f in dataclasses.fields(EpochRecord)
                 if f.name not in given and f.default is dataclasses.MISSING]
        return EpochRecord(**given, **dict.fromkeys(unset))

    sample = 45_923_200
    epochs = tuple(epoch_record(repeat=0, epoch=e, first=e == 0, timing=False, samples=10, payload_bytes=10 * sample,
                                wall_s=10 * sample / (mb * 1e6), ttfb_s=0.1, batch_ns=(1000,), sample_ns=(), cpu_s=0.1,
                                rchar=0, read_bytes=0, syscr=0, residency_before=0.0, cache_ok=True, indices_ok=True)
                   for e, mb in enumerate(mb_per_epoch))
    run = Run(layout="hdf5", kind="loader", reads="hdf5", cache="cold", evict_method="drop_caches",
              config=RunConfig(workers=2, worker_kind="thread", epochs=3), epochs=epochs)
    res = Results(created="now", metadata={"host": "testhost"}, corpus={"spec": {"preset": "4k-8bit", "count": 10}},
                  floors=Floors(), runs=(run,))
    res.save(path)
    if version is not None:
        data = json.loads(path.read_text())
        data["version"] = version
        path.write_text(json.dumps(data))
    return path


def test_from_results_projects_each_layout(tmp_path, capsys):
    # Steady state = epochs after the first: median of 100 and 110 MB/s = 105 MB/s.
    path = small_results(tmp_path / "r.json")
    assert main(SEED + ["--from", str(path), "--target-epoch-hours", "24"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("hdf5"))
    assert "cold" in line and "2 thread workers, 1 rank" in line and "105.00 MB/s" in line
    assert "45.92 MB" in line  # the measured sample size, derived from MB/s over samples/s
    assert line.split()[-1] == "507"  # ceil(4.59232e15 B / 105e6 B/s / 86,400 s)
    assert "measured on testhost" in out


def test_from_refuses_unknown_results_version(tmp_path):
    path = small_results(tmp_path / "r.json", version=99)
    proc = subprocess.run([sys.executable, "-m", "bench.cli.plan", *SEED, "--from", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "results version 99" in proc.stderr and "Traceback" not in proc.stderr

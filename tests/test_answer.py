"""report.md's Answer, after the verdict: layouts ranked per corpus and regime as ratios to the best,
"within noise" where ranges overlap, the compute each needs for AU >= 90 %, missing regimes
said; the repeat rule; floors too low flagged. From fixture results (no measuring)."""

import pytest

from bench.report.analysis import FLOOR_SLACK, replication
from bench.report.markdown import summary_table, write_report
from bench.report.verdict import answer
from bench.results.result import EpochRecord, Floors, Results, Run, RunConfig, StreamFloor

SAMPLE = 1000


def epoch(repeat, e, mb_per_s, batches=20, first=False, compute_s=0.0, au=None):
    samples = 640
    wall = samples * SAMPLE / (mb_per_s * 1e6)
    return EpochRecord(repeat=repeat, epoch=e, first=first, timing=False, samples=samples,
                       payload_bytes=samples * SAMPLE, wall_s=wall, ttfb_s=wall / batches,
                       batch_ns=tuple([round(wall / batches * 1e9)] * batches), sample_ns=(), cpu_s=0.1, rchar=0,
                       read_bytes=0, syscr=0, device_sectors_read=None, residency_before=1.0, residency_after=1.0,
                       cache_ok=True, indices_ok=True, compute_s=compute_s, au=au)


def run(layout, cache, speeds, repeats=1, workers=2, **kw):
    """Steady epochs at the given MB/s (one list per repeat), each after a first epoch."""
    epochs = []
    for r in range(repeats):
        epochs.append(epoch(r, 0, speeds[r][0] / 2, first=True))
        epochs += [epoch(r, k + 1, s, **kw) for k, s in enumerate(speeds[r])]
    cfg = RunConfig(batch_size=32, workers=workers, repeats=repeats)
    return Run(layout, "loader", layout, cache, None, cfg, tuple(epochs))


def results(runs, preset="mnist", count=640, floors=Floors()):
    corpus = {"path": "/nowhere", "spec": {"preset": preset, "count": count}, "payload_bytes": count * SAMPLE,
              "layouts": {}}
    return Results("2026-01-01T00:00:00Z", {"command": ["python", "-m", "bench", "run"]}, corpus, floors, tuple(runs))


@pytest.fixture
def fixture():
    return [results([
        run("files", "cold", [[100, 110]]),
        run("hdf5", "cold", [[95, 105]]),  # overlaps files' range: within noise
        run("lmdb", "cold", [[40, 42]]),  # clearly slower
        run("hdf5", "capped", [[60, 61]]),
        run("files", "warm", [[500, 510]]),
        run("lmdb", "warm", [[900, 905]]),
    ]), results([run("files", "warm", [[50, 51]])], preset="4k-8bit", count=2)]


def test_answer_ranks_with_ratios_noise_and_regimes_in_order(fixture):
    lines = answer(fixture)
    assert [l.split(":")[0] for l in lines] == ["mnist-640 cold", "mnist-640 capped", "mnist-640 warm",
                                                 "4k-8bit-2 cold", "4k-8bit-2 warm"]
    cold = lines[0]
    assert cold.startswith("mnist-640 cold: files 1.00 > hdf5 0.95 within noise > lmdb 0.39 ")
    assert "lmdb 0.39 within noise" not in cold
    assert lines[1].startswith("mnist-640 capped: hdf5 1.00 ")
    assert lines[2].startswith("mnist-640 warm: lmdb 1.00 > files 0.56 (")  # 505 / 902.5, ranges apart
    assert lines[3] == "4k-8bit-2 cold: not measured"
    for line in (lines[0], lines[1], lines[2], lines[4]):
        assert "AU >= 90 % needs per batch of 32:" in line and " ms" in line


def test_needed_compute_follows_throughput(fixture):
    """A batch every 1/20 of a 6.4 ms epoch (files, cold, 100 MB/s) needs about that per step."""
    cold = answer(fixture)[0]
    need = {part.split()[0]: float(part.split()[1]) for part in cold.split("needs per batch of 32: ")[1].split(", ")}
    assert need["lmdb"] > need["hdf5"] > 0 and need["lmdb"] > need["files"] > 0
    assert 0.2 < need["files"] < 2.0  # ms: 0.32 ms a batch arrives; 90 % needs a few times less idle


def test_measured_au_is_shown_where_a_run_emulated_compute():
    res = results([run("files", "warm", [[100, 100]], compute_s=0.005, au=0.93),
                   run("hdf5", "warm", [[50, 50]], compute_s=0.005, au=0.6)])
    (_, warm) = answer([res])
    assert "files AU 93% measured" in warm and "hdf5 AU 60% measured" in warm and "(under 90 %)" in warm


def test_repeats_decide_noise_and_the_5_percent_rule():
    close = run("files", "cold", [[100, 100], [103, 103], [101, 101]], repeats=3)
    apart = run("hdf5", "cold", [[80, 80], [101, 101], [70, 70]], repeats=3)
    mbs, spread = replication(close)
    assert mbs == pytest.approx([100, 103, 101]) and spread == pytest.approx(0.03)
    assert replication(apart)[1] > 0.05 and replication(run("x", "cold", [[1, 2]]))[1] is None
    cold = answer([results([close, apart])])[0]
    assert "hdf5 0.79 within noise" in cold  # 101 (its best repeat) >= 100 (files' worst)
    assert "hdf5 0.79 within noise" not in answer([results([close, run("hdf5", "cold", [[80, 80], [99, 99], [70, 70]], repeats=3)])])[0]


def test_report_begins_with_the_answer_and_flags_floors_too_low(fixture, tmp_path):
    floors = Floors(at=(StreamFloor("files", "cold", "rand", 2, 32, 10_000_000, 10_000, 0.1, 0.0, SAMPLE),))
    res = results([run("files", "cold", [[150, 150]])], floors=floors)  # 150 MB/s over a 100 MB/s floor
    path = tmp_path / "r.json"
    res.save(path)
    md = write_report([path], tmp_path / "rep").read_text()
    assert md.splitlines()[3] == "## Verdict"  # after our mark and the title: the verdict first (test_verdict.py)
    assert md.index("## Verdict") < md.index("## Answer") < md.index("## Throughput") < md.index("## Floors (same run")
    assert "1.50 floor too low" in md and "largest x floor: 1.50" in md and "FLOOR TOO LOW" in md
    assert "FLOOR TOO LOW: mnist-640 files cold w2 at 1.50x" in summary_table([res])
    assert FLOOR_SLACK == 1.05

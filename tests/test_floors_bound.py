"""Floors at the loader's concurrency bound the loader; fio where installed; the parallel reader
passes every byte once."""

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.probe import floors
from bench.run.config import BenchConfig
from bench.results.result import RunConfig, summarize
from bench.run.runner import run_bench
from generator.build import generate
from generator.errors import LayoutbenchError
from generator.spec import Spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """600 small images (3 KiB each) in every layout: many batches an epoch."""
    root = tmp_path_factory.mktemp("bound-corpus")
    generate(root, Spec(height=32, width=32, channels=3, count=600, seed=5, num_classes=4), workers=1, progress=False)
    return root


@pytest.fixture
def blobs(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i, size in enumerate((3 << 20, 12_345, 0, 4096 * 3 + 7)):
        p = tmp_path / f"b{i}.bin"
        p.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        paths.append(p)
    return paths


@pytest.mark.parametrize("streams,depth,mapped", [(1, 1, False), (2, 1, False), (3, 4, False), (2, 1, True)])
def test_seq_plan_reads_every_byte_once(blobs, streams, depth, mapped):
    plans = floors.seq_plan(blobs, streams)
    assert len(plans) == streams
    nbytes, seconds, reads = floors.parallel_read(plans, depth, 1 << 20, 1 << 16, mapped)
    assert nbytes == sum(p.stat().st_size for p in blobs) and seconds > 0 and reads > 0
    # the shares are contiguous and cover each file once
    for p in blobs:
        spans = sorted((off, n) for plan in plans for path, off, n in plan if path == str(p))
        assert sum(n for _, n in spans) == p.stat().st_size
        assert all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))


def test_rand_plan_covers_each_piece_once(blobs):
    plans = floors.rand_plan(blobs, 4096, samples=10_000, streams=3, seed=2)  # fewer files than samples: slots
    items = [i for plan in plans for i in plan]
    assert len(items) == len(set(items))
    assert sum(n for _, _, n in items) == sum(p.stat().st_size for p in blobs)
    assert max(n for _, _, n in items) == 4096
    assert floors.parallel_read(plans, 5, 4096)[0] == sum(p.stat().st_size for p in blobs)
    whole = floors.rand_plan(blobs, 4096, samples=len(blobs), streams=2)  # loose files: each file whole
    assert sorted(i for plan in whole for i in plan) == sorted((str(p), 0, p.stat().st_size) for p in blobs)


def test_a_failing_stream_is_an_error_not_a_fast_floor(tmp_path):
    with pytest.raises(LayoutbenchError, match="floor stream failed"):
        floors.parallel_read([[(str(tmp_path / "missing"), 0, 10)]], 2)
    # failing while it maps its files, before any pass: the same error, whether or not that stream
    # has ended by the time the pass is asked of it (then the pipe to it is broken)
    with pytest.raises(LayoutbenchError, match="floor stream failed: FileNotFoundError"):
        floors.parallel_read([[(str(tmp_path / "missing"), 0, 10)]], 1, mapped=True)


def test_streams_read_every_byte_each_pass_and_end_with_the_pool(blobs):
    """One pool of stream processes, several passes: each pass reads every byte once; a file gone
    between passes is an error naming it; the processes are gone (reaped) once the pool is."""
    plans = floors.seq_plan(blobs, 2)
    total = sum(p.stat().st_size for p in blobs)
    with floors.Streams(plans, 1, 1 << 20, 1 << 16) as pool:
        kids = list(pool.kids)
        assert len(kids) == 2 and all(Path(f"/proc/{pid}").exists() for pid in kids)
        assert [pool.run()[0] for _ in range(3)] == [total] * 3
        blobs[0].unlink()
        with pytest.raises(LayoutbenchError, match=f"floor stream failed: FileNotFoundError.*{blobs[0].name}"):
            pool.run()
    assert not any(Path(f"/proc/{pid}").exists() for pid in kids)


def test_two_pools_open_at_once_close_in_any_order(blobs):
    """A pool's streams end when it closes even where a process forked since holds its pipes (the
    streams of a pool opened after it): closing the older first hung in waitpid before."""
    import signal

    plans = floors.seq_plan(blobs, 2)
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("a pool's close hung"))
    signal.alarm(20)
    try:
        first, second = floors.Streams(plans), floors.Streams(plans)
        assert first.run()[0] == second.run()[0] == sum(p.stat().st_size for p in blobs)
        kids = first.kids + second.kids
        first.close()
        second.close()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert not any(Path(f"/proc/{pid}").exists() for pid in kids)


def test_memcpy_threads_copies_at_once():
    nbytes, seconds = floors.memcpy_threads(2, 8 << 20, repeats=2)
    assert nbytes == 8 << 20 and 0 < seconds < 5


def test_floor_streams_are_workers_times_ranks():
    cfg = BenchConfig(corpus=Path("."), output=Path("x.json"), workers=(0, 2, 4), naive=True)
    assert floors.floor_streams(cfg, 1) == [1, 2, 4]
    assert floors.floor_streams(cfg, 3) == [3, 6, 12]


def test_one_stream_floors_only_for_layouts_a_naive_baseline_reads():
    """Naive baselines read in the calling thread (one stream): the layouts without one get no
    one-stream floor, as no run of theirs is compared with it."""
    cfg = BenchConfig(corpus=Path("."), output=Path("x.json"), workers=(2,), naive=True)
    assert floors.floor_streams(cfg, 1, "files") == [1, 2]  # tifffile.imread per file
    assert floors.floor_streams(cfg, 1, "lmdb") == [2]
    assert floors.floor_streams(replace(cfg, naive=False), 1, "files") == [2]


def test_cold_floors_are_measured_next_to_each_layouts_cold_runs(small, tmp_path, monkeypatch):
    """Cold: a layout's floors are measured just before its first cold run (not minutes before,
    with every other layout's), once; warm ones first, as before; without cold runs, none."""
    from bench.run import runner

    events = []
    real_floors, real_run = floors._layout_floors, runner.run_one

    def floor(cfg, layout, paths, cache, *args):
        events.append(("floor", layout, cache))
        return real_floors(cfg, layout, paths, cache, *args)

    def run(ctx, spec, repeat):
        events.append(("run", spec.layout, spec.regime))
        return real_run(ctx, spec, repeat)

    monkeypatch.setattr(floors, "_layout_floors", floor)
    monkeypatch.setattr(runner, "run_one", run)
    cfg = BenchConfig(corpus=small, output=tmp_path / "r.json", layouts=("npy", "files"), caches=("cold", "warm"),
                      workers=(1, 2), naive=False, run=RunConfig(epochs=1, batch_size=32, sample_latency=False))
    res = run_bench(cfg)
    assert events == [("floor", "npy", "warm"), ("floor", "files", "warm"),
                      ("floor", "npy", "cold"), ("run", "npy", "cold"), ("floor", "files", "cold"), ("run", "files", "cold"),
                      ("run", "npy", "cold"), ("run", "files", "cold")] + [("run", x, "warm") for x in ("npy", "files")] * 2
    keys = [(f.layout, f.cache, f.way, f.streams, f.depth) for f in res.floors.at]
    assert len(keys) == len(set(keys)) and {k[:2] for k in keys} == {("npy", "cold"), ("files", "cold"),
                                                                      ("npy", "warm"), ("files", "warm")}
    assert {f.streams for f in res.floors.at} == {1, 2}
    assert sorted((f.layout, f.cache) for f in res.floors.seq) == [("files", "cold"), ("files", "warm"),
                                                                   ("npy", "cold"), ("npy", "warm")]
    for run_ in res.runs:  # every run found its floor
        assert summarize(run_, res.floors, res.corpus)["floor_ratio"] is not None
    events.clear()
    run_bench(replace(cfg, caches=("warm",), workers=(2,)))
    assert [e for e in events if e[0] == "floor"] == [("floor", "npy", "warm"), ("floor", "files", "warm")]


def test_floors_are_not_beaten_by_the_loaders_on_the_same_files(small, tmp_path):
    """Warm, 2 thread and 2 process workers, batches of 32 (2 in flight each: 64 reads a stream):
    every run at most 1.05x the floor of its own files at its own concurrency (a floor a loader
    beats is not a floor)."""
    for kind in ("thread", "process"):
        cfg = BenchConfig(corpus=small, output=tmp_path / f"{kind}.json", caches=("warm",), workers=(2,), naive=False,
                          run=RunConfig(epochs=3, batch_size=32, worker_kind=kind, sample_latency=False))
        # a burst of another process during the floors' passes can lower one measurement: up to
        # 3 whole runs, one of which must keep every layout under its floor (a floor that is too
        # low by design fails all three)
        for attempt in range(3):
            res = run_bench(cfg)
            assert {f.streams for f in res.floors.at} == {2} and {f.depth for f in res.floors.at} >= {1, 64}
            above = []
            for run in res.runs:
                s = summarize(run, res.floors, res.corpus)
                assert s["floor_streams"] == 2 and s["floor_way"].endswith(("2x1", "2x64"))
                assert s["floor_ratio"] > 0
                if s["floor_ratio"] > 1.05:
                    above.append((kind, run.layout, s["floor_ratio"], s["floor_way"]))
            if not above:
                break
        assert not above, above


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio not installed (make install-fio)")
def test_fio_reads_the_same_files(small):
    from bench.probe.fio import fio_floor
    from bench.probe import probes
    from loaders import open_corpus

    for layout in ("files", "hdf5"):
        reader = open_corpus(small, layout)
        paths = probes.expand(reader.paths())
        reader.close()
        sample = int(reader.manifest.sizes[0])
        f = fio_floor(layout, paths, "warm", 2, 8, sample, 600, "auto")
        assert f.iops > 0 and f.mb_per_s > 0 and f.jobs == 2 and f.iodepth == 8 and f.residency_before >= 0.99
        assert f.block_bytes == sample and f.ios >= 100


def test_fio_missing_is_one_line_naming_the_package(small, tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no fio on it
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--corpus", str(small), "--output",
                        str(tmp_path / "r.json"), "--fio"], cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "fio" in p.stderr and "apt-get install -y fio" in p.stderr and not (tmp_path / "r.json").exists()


def test_fio_is_set_beside_our_fastest_random_read_floor_and_flagged_past_25_percent():
    """Cold, rand-advise (a batch advised at once) is a random-read floor too: fio's figure is
    compared with the faster of it and rand, at the same layout, cache and jobs; a floor more
    than 25 % below fio is called too low, fio more than 25 % below ours is said to be slower."""
    from bench.report.verdict import fio_lines
    from bench.results.result import FioFloor, Floors, Results, StreamFloor

    def at(way, mb, streams=2):  # 1 MB per pass: MB/s = 1 / seconds
        return StreamFloor("hdf5", "cold", way, streams, 64, 1_000_000, 10, 1 / mb, 0.0, 100_000)

    def fio(mb, jobs=2):
        return FioFloor("hdf5", "cold", jobs, 32, "io_uring", 100_000, 10, 1_000_000, 1 / mb, mb * 10, mb, 0.0)

    def lines(*fios):
        floors_ = Floors(at=(at("rand", 800), at("rand-advise", 1000), at("seq-read", 5000), at("rand", 9000, 1)),
                         fio=fios)
        return fio_lines(Results("t", {}, {}, floors_, (), ()))

    out = lines(fio(1200), fio(1300), fio(700), fio(50, jobs=4))
    assert len(out) == 3  # no floor of ours at 4 streams: no line for fio's 4 jobs
    near, high, low = out
    assert "ours (rand-advise 2x64)" in near and "(+20%)" in near and "DIFFER" not in near
    assert "(+30%): DIFFER by +30%" in high and "our floor is too low" in high
    assert "(-30%): DIFFER by -30%" in low and "fio is slower" in low

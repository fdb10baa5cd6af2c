"""The capped regime: a real memory cgroup keeps the page cache under the cap (measured), the hit
ratio and read amplification agree with the OS's counters, OOM is reported, bad input is one line,
and nothing (group or process) is left behind however a run ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.probe import cgroups
from bench.run.config import BenchConfig
from bench.results.result import RunConfig, summarize
from bench.run.runner import run_bench
from generator.layouts import layout_ids
from loaders.registry import readers
from generator.build import generate
from generator.spec import Spec

try:
    VERSION, PARENT = cgroups.find_parent()
except cgroups.CgroupUnavailable as exc:
    pytest.skip(f"no memory cgroup can be made here: {exc}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
SPEC = Spec(height=256, width=256, channels=3, count=200, seed=5, num_classes=2)  # 196,800 B each, ~39 MB
SIZE = 6 << 20  # page cache under the cap: the corpus is ~6.5x that


def probed_layouts() -> list[str]:
    """Every layout installed here: each says where its samples' bytes lie (Reader.extents; the
    conformance suite holds a layout that cannot to saying why), so the capped regime measures
    every one's hit ratio at read time."""
    return list(layout_ids(available=True))


def read_unit_bytes(corpus, layout: str) -> int:
    """The largest range one sample's read brings in (its extents: a payload, a zarr chunk, a
    Parquet row group's column chunk)."""
    from loaders import open_corpus

    r = open_corpus(corpus, layout)
    try:
        return max(n for ranges in r.extents(list(range(len(r)))) for _, _, n in ranges)
    finally:
        r.close()


def fits(corpus, layout: str) -> bool:
    """Whether a sample's read unit fits the cap twice over. Parquet's row group here (~8 MB of
    200 KB images) does not fit 6 MiB: the page cache must hold a chunk while it is read, so the
    group's pages go past SIZE and the run is (rightly) marked not capped; a cap that small
    measures the chunk thrashing, and is held to none of the bounds below."""
    return 2 * read_unit_bytes(corpus, layout) <= SIZE


AMPLIFICATION_PAGES = 1.2  # read_bytes / the pages the probe saw missing, per steady epoch
# a layout whose own unit of reading is coarser than 4 KiB pages (readers' read_unit: SQLite's
# 64 KiB database pages, a blob's last one partly used) reads more, by design
AMPLIFICATION_UNIT = 1.5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("capped-corpus")
    generate(root, SPEC, probed_layouts(), workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def results(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("capped-out")
    cfg = BenchConfig(corpus=corpus, output=out / "r.json", caches=("cold", "capped"), workers=(1,), naive=False,
                      memory_limit=SIZE, layouts=tuple(held(corpus)),
                      run=RunConfig(epochs=3, batch_size=8, sample_latency=False))
    return run_bench(cfg)


def capped_runs(res):
    return [r for r in res.runs if r.cache == "capped"]


def held(corpus) -> list[str]:
    """The layouts a capped run takes under SIZE: those whose read unit fits it (bench run refuses
    the others by name: Parquet's ~8 MB row group here; tests/test_suite_plan.py holds that)."""
    from bench.probe.regimes import not_fork_safe, oversized_units

    refused = {name for name, _ in oversized_units(corpus, probed_layouts(), SIZE)}
    refused |= set(not_fork_safe(probed_layouts()))  # refused too: the capped child is forked (pylance)
    return [name for name in probed_layouts() if name not in refused]


def test_residency_stays_under_the_cap_measured(results, corpus):
    runs = capped_runs(results)
    assert {r.layout for r in runs} == set(held(corpus)) >= {"files", "hdf5", "lmdb"}
    capped = considered = 0
    for run in runs:
        if not fits(corpus, run.layout):
            continue
        considered += 1
        cap = run.cap
        assert 0 <= cap["own_bytes"] + SIZE - cap["limit"] < 4096 and not cap.get("failure")
        assert run.epochs[0].residency_before <= 0.01  # evicted once, at the start
        for e in run.epochs:
            # mincore of the layout's files after the epoch, and the group's own counters. The
            # page cache may also take what of the own memory its limit was set for the loader
            # left unused at its median (CI once: npy 7.4 MB resident under 6 MiB), sampled
            # through the epoch: its room; an epoch past 1.1 x its room is never counted as capped
            c = e.capped
            assert c.own_min_bytes <= c.own_median_bytes <= c.own_max_bytes
            assert SIZE <= c.room_bytes <= SIZE + c.own_max_bytes, (run.layout, c.room_bytes)
            if c.resident_bytes_after > c.room_bytes * 1.1:
                assert not e.cache_ok, (run.layout, c.resident_bytes_after, c.room_bytes)
            assert c.cgroup_peak_bytes <= cap["limit"] + SIZE and c.cgroup_cache_bytes <= cap["limit"] + SIZE
            assert not c.cgroup_oom_kills
        # the cap bound: the group hit its limit in every epoch, and the corpus was read whole
        assert all(e.capped.cgroup_limit_hits > 0 for e in run.epochs), run.layout
        assert all(e.payload_bytes == SPEC.count * 196_800 for e in run.epochs)
        s = summarize(run, results.floors, results.corpus)
        assert s["memory_ratio"] > 5 and not s["measures_page_cache"]
        assert s["cache_ok"] == all(e.cache_ok for e in run.epochs)
        capped += s["cache_ok"]
    assert considered >= 3 and capped >= considered - 1, "more than one layout was not held under its cap"


def test_hit_ratio_and_amplification_add_up_against_the_device_counters(results, corpus):
    for run in results.runs:
        if run.cache == "cold":  # cold: everything from the device, once (plus opening the files)
            ratios = [e.read_bytes / e.payload_bytes for e in run.epochs]
            assert min(ratios) >= 0.99, (run.layout, ratios)
            # the median epoch: in 3 of ~10 full runs one epoch of a layout counted 1.2-1.8x (seen for
            # hdf5, lmdb, parquet; not explained yet: the previous run's reads still in flight?)
            assert sorted(ratios)[len(ratios) // 2] <= 1.1, (run.layout, ratios)
            continue
        for e in run.epochs:
            c = e.capped
            assert c.hit_ratio is not None and c.miss_page_bytes > 0, run.layout  # every layout is probed
            if not fits(corpus, run.layout):
                continue
            assert 0 <= c.hit_ratio and c.expected_hit_ratio <= 1.0
            if not readers()[run.layout].read_unit:  # hits can only come from what was resident; a layout
                # whose read unit several samples share (SQLite's leaf pages, advised whole before
                # a part of a batch is queried) also hits on what it read for a neighbour this epoch
                assert c.hit_ratio < c.expected_hit_ratio + 0.05, (run.layout, c.hit_ratio, c.expected_hit_ratio)
            fetched = e.payload_bytes - c.hit_bytes
            # the probe (cachestat before each read) against the OS's count of bytes read
            assert c.read_amplification == pytest.approx(e.read_bytes / fetched)
            most = AMPLIFICATION_UNIT if readers()[run.layout].read_unit else AMPLIFICATION_PAGES
            assert 0.95 <= e.read_bytes / c.miss_page_bytes <= most, (run.layout, e)
            if not e.first:  # per steady epoch (the first also opens the files)
                assert c.read_amplification <= most, run.layout
            if e.device_sectors_read is not None:  # the device saw at least what our processes read
                assert e.device_sectors_read * 512 >= 0.95 * e.read_bytes


def test_no_group_or_process_is_left_after_a_normal_end(results):
    assert cgroups.groups_of(os.getpid()) == []


@pytest.mark.parametrize("after", [0, 1], ids=["first-epoch", "second-epoch"])
def test_the_oom_killer_is_reported_not_a_traceback(corpus, tmp_path, monkeypatch, after):
    import bench.run.epochs as epochs  # the one epoch loop, which the capped child runs

    real = epochs.time_batches

    calls = []

    def grows(*args, **kw):  # a loader whose own memory grows past its cap after it was measured
        calls.append(1)
        if len(calls) > after:
            hog = bytearray(SIZE * 40)
            for k in range(0, len(hog), 4096):
                hog[k] = 1
        return real(*args, **kw)

    monkeypatch.setattr(epochs, "time_batches", grows)
    cfg = BenchConfig(corpus=corpus, output=tmp_path / "oom.json", caches=("capped",), workers=(0,), naive=False,
                      layouts=("files",), memory_limit=SIZE, run=RunConfig(epochs=2, batch_size=8, sample_latency=False))
    res = run_bench(cfg)
    if after == 0:  # killed in its first epoch: no run reported as measured, a note names the cap and the usage
        assert res.runs == ()
        assert any(n.startswith("files capped with 0 workers measured nothing: the cgroup's OOM killer stopped the "
                                "loader") and f"{SIZE:,}" in n and "peak usage" in n for n in res.notes), res.notes
    else:  # in its second: the first epoch kept, the run marked not ok
        (run,) = res.runs
        assert len(run.epochs) == 1 and "OOM killer" in run.cap["failure"] and f"{SIZE:,}" in run.cap["failure"]
        assert not summarize(run, res.floors, res.corpus)["cache_ok"]
        assert any("OOM killer" in n and "not ok" in n for n in res.notes)
    assert cgroups.groups_of(os.getpid()) == []


def _bench(corpus, out, *extra, **kw):
    cmd = [sys.executable, "-m", "bench", "run", "--corpus", str(corpus), "--output", str(out), "--quiet",
           "--no-naive", "--no-sample-latency", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_nothing_is_left_behind_when_the_parent_is_stopped(corpus, tmp_path, how):
    p = _bench(corpus, tmp_path / "r.json", "--cache", "capped", "--memory-limit", "6M", "--epochs", "200",
               "--layouts", "files", "--workers", "1", "--worker-kind", "process", "--batch-size", "8")
    deadline = time.monotonic() + 60
    inside = []
    while time.monotonic() < deadline and len(inside) < 2:  # the child and its worker are in the group
        groups = cgroups.groups_of(p.pid)
        inside = cgroups.Group(VERSION, groups[0]).pids() if groups else []
        time.sleep(0.05)
    assert len(inside) >= 2, p.communicate()
    time.sleep(0.5)
    p.send_signal(getattr(signal, how))
    p.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in inside):
        time.sleep(0.05)
    assert not [pid for pid in inside if os.path.exists(f"/proc/{pid}")], how  # children died with the parent
    if how == "SIGKILL":  # nothing could run in the parent: the next run sweeps its group
        assert cgroups.groups_of(p.pid)
        cgroups.sweep_stale(PARENT)
    assert cgroups.groups_of(p.pid) == [], how


@pytest.mark.parametrize("args,message", [
    (["--cache", "capped"], "needs --memory-limit"),
    (["--cache", "cold", "--memory-limit", "6M"], "applies to --cache capped only"),
    (["--cache", "capped", "--memory-limit", "100T"], "physical RAM"),
    (["--cache", "capped", "--memory-limit", "1G"], "5x rule"),
    (["--cache", "capped", "--memory-limit", "100K"], "below what the loader's own reads hold"),
    (["--cache", "capped", "--memory-limit", "lots"], "expected a size like 320M"),
])
def test_bad_input_is_one_line_exit_2_before_measuring(corpus, tmp_path, args, message):
    p = _bench(corpus, tmp_path / "r.json", *args)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.json").exists()


def test_no_permission_is_one_line_exit_2(corpus, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the command as another user")
    subprocess.run(["chmod", "-R", "a+rX", str(corpus), str(tmp_path)], check=True)
    for parent in [*corpus.parents, *tmp_path.parents]:
        if parent != Path("/") and not os.access(parent, os.X_OK, effective_ids=False):
            pytest.skip(f"{parent} is not searchable by other users")
    os.chmod(tmp_path, 0o777)

    def nobody():
        os.setgid(65534)
        os.setuid(65534)

    try:
        subprocess.run([sys.executable, "-c", "import bench"], cwd=ROOT, preexec_fn=nobody, check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("this interpreter or checkout cannot be run by another user here")
    p = _bench(corpus, tmp_path / "r.json", "--cache", "capped", "--memory-limit", "6M", preexec_fn=nobody,
               env={**os.environ, "HOME": str(tmp_path)})
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "needs a memory cgroup" in err and len(err.strip().splitlines()) == 1, err


def test_an_unwritable_cgroup_tree_is_one_line_naming_what_is_needed(monkeypatch):
    monkeypatch.setattr(cgroups.os, "access", lambda path, mode, **kw: False)  # as for a user without delegation
    with pytest.raises(cgroups.CgroupUnavailable, match="needs a memory cgroup .*not writable"):
        cgroups.find_parent()


def test_every_capped_run_has_a_floor_measured_under_its_own_cap(results, corpus):
    """The capped floor (bench/probe/cappedfloor.py), measured in each run's cgroup after its
    epochs: at the run's concurrency and batch, every sample's bytes once a pass, and the floor
    the run's x floor divides by."""
    floors = {f.layout: f for f in results.floors.at if f.cache == "capped"}
    for run in capped_runs(results):
        f = floors.get(run.reads)
        assert f is not None, run.layout
        assert (f.way, f.streams, f.depth) == ("extents-advise", 1, 8)
        assert f.bytes >= SPEC.count * SPEC.pixel_bytes and f.reads >= SPEC.count and f.seconds > 0  # zarr: pixels
        s = summarize(run, results.floors, results.corpus)
        assert s["floor_way"] == "extents-advise 1x8" and s["floor_mb_per_s"] == pytest.approx(f.mb_per_s)
        assert s["floor_ratio"] is not None


def test_a_layout_whose_library_breaks_in_a_fork_is_refused_and_left_out(corpus, tmp_path, monkeypatch, capsys):
    """The capped regime forks its child inside the cgroup: a reader that is not fork_safe (pylance's)
    is refused by bench run in one line and left out of the suite's capped job with a note."""
    from bench.cli.suite import fit_cap
    from bench.probe.regimes import check_capped
    from generator.errors import UsageError
    from generator.manifest import read_manifest
    from loaders.npy import NpyReader

    monkeypatch.setattr(NpyReader, "fork_safe", False)
    cfg = BenchConfig(corpus=corpus, output=tmp_path / "r.json", caches=("capped",), memory_limit=SIZE,
                      layouts=("files", "npy"), run=RunConfig(batch_size=8))
    with pytest.raises(UsageError, match="the npy layout cannot be read under --cache capped"):
        check_capped(cfg, read_manifest(corpus))
    fitted = fit_cap(BenchConfig(corpus=corpus, output=tmp_path / "r.json", caches=("capped",), memory_limit=SIZE))
    assert "npy" not in fitted.layouts and "files" in fitted.layouts
    assert "npy left out: its library breaks in the forked child" in capsys.readouterr().out

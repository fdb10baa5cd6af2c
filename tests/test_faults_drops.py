"""A warm or capped epoch under which another process dropped the page cache is marked, from the
kernel's own count of drops (drop_pagecache in /proc/vmstat), never from residency swings; this
run's own drops (cold eviction as root) are not counted against it."""

import os
import subprocess
from dataclasses import replace

import pytest

from bench.probe import drops, probes
from bench.report.verdict import not_ok_reason
from bench.results.result import CappedEpoch, Results, RunConfig, summarize
from bench.run import capped
from bench.run.config import BenchConfig
from bench.run.regime import Cold, Regime, Warm
from bench.run.runner import cache_notes, run_bench
from generator.build import generate
from generator.spec import Spec


class Counter:
    """A kernel's count of drops: `add(n)` drops by someone; None: a kernel that keeps none."""

    def __init__(self, value=100):
        self.value = value

    def __call__(self):
        return self.value

    def add(self, n=1):
        self.value += n


def test_a_drop_watch_counts_other_processes_drops_and_not_this_ones():
    counter = Counter()
    watch = drops.DropWatch(counter)
    assert watch.foreign() == 0
    counter.add()
    drops.own_drop()  # ours: the kernel counts it too, the watch does not
    assert watch.foreign() == 0
    counter.add(2)  # two by someone else
    assert watch.foreign() == 2
    assert drops.DropWatch(Counter(None)).foreign() is None  # no counter: nothing counted, not 0


def test_the_counter_is_read_from_vmstat_and_absent_is_none(tmp_path):
    stat = tmp_path / "vmstat"
    stat.write_text("nr_free_pages 12\ndrop_pagecache 42\ndrop_slab 43\n")
    assert drops.read_counter(str(stat)) == 42
    stat.write_text("nr_free_pages 12\npgfault 9\n")  # an older kernel: no such line
    assert drops.read_counter(str(stat)) is None
    assert drops.read_counter(str(tmp_path / "none")) is None
    real = drops.read_counter()
    assert real is None or real >= 0


def test_only_the_regimes_that_keep_pages_mark_a_dropped_epoch():
    assert Warm.keeps_pages and capped.Capped.keeps_pages
    assert not Cold.keeps_pages and not Regime.keeps_pages  # cold wants it dropped; asis takes what is there


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("drops")
    generate(root, Spec(height=8, width=8, channels=1, count=24, num_classes=2), ["files", "npy"], workers=1,
             progress=False)
    return root


def bench(corpus, out, monkeypatch, counter):
    """bench run, warm and asis, with the kernel's count given by `counter` (read once at each
    epoch's start and once at its end)."""
    monkeypatch.setattr(drops, "read_counter", counter)
    cfg = BenchConfig(corpus=corpus, output=out / "r.json", caches=("warm", "asis"), naive=False, evict="fadvise",
                      run=RunConfig(epochs=2, batch_size=8, sample_latency=False))
    return run_bench(cfg)


def test_warm_epochs_under_another_process_drop_are_marked_and_said(corpus, tmp_path, monkeypatch):
    """Another process drops the page cache during every epoch (the count rises between each
    epoch's start and its end): warm epochs are marked not ok, the note says which, the verdict
    says why; asis epochs record the drops and stay ok; the results load back with them."""
    reads = [0]

    def rising():  # +1 between the start and the end of each epoch
        reads[0] += 1
        return 1000 + reads[0] // 2

    res = bench(corpus, tmp_path, monkeypatch, rising)
    warm = [r for r in res.runs if r.cache == "warm"]
    asis = [r for r in res.runs if r.cache == "asis"]
    assert warm and asis
    for r in warm:
        assert all(e.cache_drops == 1 and not e.cache_ok for e in r.epochs), r.layout
    for r in asis:
        assert all(e.cache_drops == 1 and e.cache_ok for e in r.epochs), r.layout
    notes = [n for n in res.notes if drops.REASON in n]
    assert len(notes) == len(warm)
    assert all("warm" in n and "epoch 0 (repeat 0), epoch 1 (repeat 0)" in n and "2 of 2 epochs did not measure warm"
               in n and "drop_pagecache in /proc/vmstat" in n for n in notes), notes
    assert not any("were not warm" in n for n in res.notes)  # the residency note does not say it again
    res.save(tmp_path / "r.json")
    back = Results.load(tmp_path / "r.json")
    assert [e.cache_drops for r in back.runs for e in r.epochs] == [e.cache_drops for r in res.runs for e in r.epochs]
    row = summarize(warm[0], back.floors, back.corpus) | {"_run": warm[0]}
    assert row["cache_ok"] is False
    assert not_ok_reason({**row, "_summary": row}) == "cache dropped by another process during 2 of 2 epochs"


def test_no_drop_marks_nothing(corpus, tmp_path, monkeypatch):
    """(Whether warm held is left to its residency check: a real drop by another process on this
    shared machine would fail it, and is not what this tests.)"""
    res = bench(corpus, tmp_path, monkeypatch, Counter(7))
    assert all(e.cache_drops == 0 for r in res.runs for e in r.epochs)
    assert all(e.cache_ok for r in res.runs if r.cache == "asis" for e in r.epochs)
    assert not any(drops.REASON in n or n == drops.ABSENT for n in res.notes)


def test_a_kernel_without_the_counter_is_said_once_and_marks_nothing(corpus, tmp_path, monkeypatch):
    res = bench(corpus, tmp_path, monkeypatch, Counter(None))
    assert all(e.cache_drops is None for r in res.runs for e in r.epochs)
    assert all(e.cache_ok for r in res.runs if r.cache == "asis" for e in r.epochs)
    assert res.notes.count(drops.ABSENT) == 1 and not any(drops.REASON in n for n in res.notes)


def test_a_capped_epoch_under_a_drop_is_noted_as_dropped_not_as_not_capped(corpus, tmp_path, monkeypatch):
    """The capped regime's notes: an epoch marked for a foreign drop is said as such, not as an
    epoch that went past its cap (the residency it shows fell, it did not grow)."""
    res = bench(corpus, tmp_path, monkeypatch, Counter(7))
    run = next(r for r in res.runs if r.cache == "warm")
    part = CappedEpoch(resident_bytes_before=5000, resident_bytes_after=100)
    epochs = (replace(run.epochs[0], capped=part, cache_ok=True),
              replace(run.epochs[1], capped=part, cache_drops=1, cache_ok=False))
    run = replace(run, cache="capped", epochs=epochs, cap={"size": 8192, "limit": 1 << 20})
    notes = cache_notes([run], "c")
    assert len(notes) == 1 and drops.REASON in notes[0] and "epoch 1 (repeat 0)" in notes[0], notes
    assert "1 of 2 epochs did not measure capped" in notes[0]
    assert not capped.capped_notes(run, "c")


@pytest.mark.drop_caches
@pytest.mark.skipif(os.geteuid() != 0, reason="writing /proc/sys/vm/drop_caches needs root")
def test_the_kernel_counts_a_real_drop_and_ours_is_not_taken_for_anothers():
    """Writes drop_caches three times (a second or so on a busy machine): run it alone (-m
    drop_caches), not beside measurements, which it disturbs. Our own eviction (bench.probe.probes,
    as a cold run as root makes it) is not counted; another process's `echo 1` is."""
    if drops.read_counter() is None:
        pytest.skip(drops.ABSENT)
    watch = drops.DropWatch()
    assert probes._drop_caches()
    ours = watch.foreign()
    subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=True, timeout=60)
    theirs = watch.foreign()
    assert ours == 0, f"{ours} drop(s) by other processes meanwhile: rerun on a quiet machine"
    assert theirs >= 1

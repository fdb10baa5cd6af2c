"""Corpus files that vanish while the bench uses them (issue 12): moved away during a warm or cold
run, or a `generator --force` over the corpus being benchmarked. Every path that touches corpus
files (residency, eviction, warming, the floors, the readers) names the file and what happened,
in one line: never a FileNotFoundError traceback.

The race (a file listed, then gone before it is opened) is made exact by deleting a file right
after the bench has listed the corpus (bench.probe.probes.expand), at each place that lists it."""

from __future__ import annotations


import pytest

from bench.probe import floors, probes
from bench.probe.probes import CorpusChanged
from generator.cli import run_main

PROBES = {
    "residency": (lambda paths: probes.residency(paths), "checking page-cache residency"),
    "evict": (lambda paths: probes.evict(paths, "fadvise"), "evicting the corpus from the page cache"),
    "warm": (lambda paths: probes.warm(paths), "warming the page cache"),
    "seq floor": (lambda paths: floors.read_sequential(probes.expand(paths)), "measuring the sequential-read floor"),
    "map floor": (lambda paths: floors.copy_sequential(probes.expand(paths)), "measuring the sequential-read floor"),
    "pread floor": (lambda paths: floors.pread_random(probes.expand(paths)[0], 784), "measuring the pread floor"),
}


def vanish_after_listing(monkeypatch, after_calls: int = 0):
    """bench.probe.probes.expand lists the files, then (from its `after_calls`+1-th call) deletes the first
    one it listed: what a mover or a regenerating generator does between listing and opening."""
    real, calls, gone = probes.expand.__wrapped__, [0], []

    def expand(paths):
        files = real(paths)
        calls[0] += 1
        if calls[0] > after_calls and not gone:
            files[0].unlink()
            gone.append(files[0])
        return files

    monkeypatch.setattr(probes, "expand", expand)
    return gone


@pytest.mark.parametrize("probe", PROBES)
def test_a_file_gone_between_listing_and_reading_is_named_by_every_probe(corpus_copy, monkeypatch, probe):
    root = corpus_copy("gray8")
    gone = vanish_after_listing(monkeypatch)
    fn, what = PROBES[probe]
    with pytest.raises(CorpusChanged) as e:
        fn([root / "files"])
    assert str(gone[0]) in str(e.value) and f"vanished while {what}" in str(e.value), e.value
    assert "the corpus changed during the run" in str(e.value) and "\n" not in str(e.value)


def bench_run(root, out, capsys, cache, layout="files"):
    from bench.__main__ import main

    code = run_main("python -m bench", main, ["run", "--corpus", str(root), "--output", str(out), "--cache", cache,
                                              "--epochs", "3", "--batch-size", "8", "--no-naive", "--quiet",
                                              "--layouts", layout, "--evict", "fadvise"])
    return code, capsys.readouterr().err


# after how many listings the file goes: 0 the floors, 3 the first epoch's cache setting, 8 a later
# epoch (loose files only: for one-file layouts that is the first epoch's case again)
MOMENTS = [(layout, n) for layout in ("files", "hdf5", "lmdb") for n in (0, 3, 8) if layout == "files" or n < 8]


@pytest.mark.parametrize("cache", ["cold", "warm"])
@pytest.mark.parametrize("layout, after_calls", MOMENTS)
def test_a_sample_moved_away_during_bench_run_is_one_named_line(corpus_copy, tmp_path, monkeypatch, capsys, cache,
                                                               after_calls, layout):
    """A loose file, corpus.h5 or lmdb/data.mdb deleted right after the bench listed it."""
    root = corpus_copy("gray8")
    gone = vanish_after_listing(monkeypatch, after_calls)
    code, err = bench_run(root, tmp_path / "r.json", capsys, cache, layout)
    assert gone, "the run ended before the file was moved: the test proves nothing"
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("python -m bench: error: ") and str(gone[0]) in err, err
    assert not (tmp_path / "r.json").exists()


def test_a_corpus_regenerated_under_a_running_bench_is_one_named_line(corpus_copy, tmp_path, monkeypatch, capsys):
    """`generator --force` with another spec over the corpus between two epochs (the loose files of
    another count and shape replace these): the next read or probe names what it found."""
    from bench.run import storage
    from generator.build import generate
    from generator.spec import Spec

    root = corpus_copy("gray8")
    real, calls = storage.set_cache, [0]

    def set_cache(cache, paths, method):
        calls[0] += 1
        if calls[0] == 2:
            generate(root, Spec(height=5, width=5, channels=3, count=11), ["files"], workers=1, force=True,
                     progress=False)
        return real(cache, paths, method)

    monkeypatch.setattr(storage, "set_cache", set_cache)
    code, err = bench_run(root, tmp_path / "r.json", capsys, "warm")
    assert calls[0] >= 2
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(root) in err and ("vanished" in err or "sample" in err), err

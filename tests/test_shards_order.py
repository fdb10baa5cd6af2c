"""The `shards` epoch order (streaming layouts), its randomness figures, and bench run with it."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import need_layout

from generator.build import generate
from generator.errors import UsageError
from generator.layouts import get_layout
from generator.spec import Spec
from loaders import open_corpus
from loaders.pipeline import Loader
from loaders.sampler import epoch_order, order_randomness, shard_stream

BOUNDS = np.array([0, 10, 20, 30, 40, 50, 60, 70, 75])  # 8 shards, the last one short


def shard_of(i):
    return np.searchsorted(BOUNDS, i, side="right") - 1


@pytest.mark.parametrize("world", [1, 2, 3, 8, 9, 75, 80])
def test_every_index_once_across_ranks(world):
    for epoch in range(3):
        parts = [shard_stream(75, 5, epoch, BOUNDS, 16, r, world) for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(75))


def test_ranks_take_contiguous_runs_of_whole_shards():
    perm = np.random.default_rng([5, 1]).permutation(8)  # this epoch's shard order, as the sampler draws it
    for world in (2, 4, 8):
        for r in range(world):
            mine = shard_stream(75, 5, 1, BOUNDS, 16, r, world)
            assert set(shard_of(mine).tolist()) == set(perm[r * 8 // world:(r + 1) * 8 // world].tolist())


def test_shard_order_changes_per_epoch_and_is_seeded():
    a, b = epoch_order(75, 5, 0, "shards", shards=BOUNDS), epoch_order(75, 5, 1, "shards", shards=BOUNDS)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, epoch_order(75, 5, 0, "shards", shards=BOUNDS))
    assert not np.array_equal(a, epoch_order(75, 6, 0, "shards", shards=BOUNDS))


def test_buffer_of_one_reads_each_shard_front_to_back():
    order = epoch_order(75, 3, 0, "shards", shards=BOUNDS, buffer_size=1)
    shards = shard_of(order)
    runs = np.split(order, np.flatnonzero(np.diff(shards)) + 1)
    assert len(runs) == 8 and all(np.array_equal(run, np.arange(run[0], run[0] + len(run))) for run in runs)


def test_the_buffer_bounds_how_early_a_sample_comes():
    order = epoch_order(75, 3, 0, "shards", shards=BOUNDS, buffer_size=4)
    stream = np.concatenate([np.arange(BOUNDS[k], BOUNDS[k + 1])
                             for k in np.random.default_rng([3, 0]).permutation(8).tolist()])
    pos_in_stream = {int(i): t for t, i in enumerate(stream)}
    early = [t - pos_in_stream[int(i)] for t, i in enumerate(order)]
    assert min(early) == -3  # never more than buffer_size - 1 places early, and that often happens


def test_bad_boundaries_and_missing_ones_are_usage_errors():
    for bad in ([0, 10], [1, 75], [0, 40, 40, 75], [[0, 75]], [0.0, 75.0], [0]):
        with pytest.raises(UsageError):
            epoch_order(75, 0, 0, "shards", shards=bad)
    # without boundaries the stream is one shard: the buffer mode's order over the whole range
    one = epoch_order(75, 0, 0, "shards", buffer_size=8)
    assert sorted(one.tolist()) == list(range(75))
    assert (np.argsort(one) - np.arange(75)).min() == -7  # at most buffer_size - 1 places early
    assert epoch_order(0, 0, 0, "shards").size == 0


def test_order_randomness_on_known_orders():
    n = 75
    seq = order_randomness(np.arange(n), BOUNDS)
    assert seq["displacement"] == 0.0
    assert seq["same_shard"] == pytest.approx((n - 8) / (n - 1))  # every step but the 7 shard changes
    sizes = np.diff(BOUNDS)
    assert seq["same_shard_shuffled"] == pytest.approx((sizes * (sizes - 1)).sum() / (n * (n - 1)))
    rev = order_randomness(np.arange(n)[::-1], BOUNDS)
    assert rev["displacement"] == pytest.approx(np.abs(np.arange(n)[::-1] - np.arange(n)).mean() / ((n * n - 1) / (3 * n)))
    full = [order_randomness(np.random.default_rng(s).permutation(n), BOUNDS) for s in range(200)]
    assert np.mean([f["displacement"] for f in full]) == pytest.approx(1.0, abs=0.03)
    assert np.mean([f["same_shard"] for f in full]) == pytest.approx(seq["same_shard_shuffled"], abs=0.02)
    alternating = np.ravel(np.column_stack([np.arange(0, 10), np.arange(10, 20)]))  # 0,10,1,11,...: never same shard
    assert order_randomness(alternating, [0, 10, 20])["same_shard"] == 0.0
    assert order_randomness(np.arange(5))["same_shard"] is None  # no boundaries, no shard figure
    assert order_randomness(np.arange(1), BOUNDS[:2] // 10)["displacement"] is None


def test_a_shard_stream_is_local_and_a_full_shuffle_is_not():
    stream = order_randomness(epoch_order(75, 2, 0, "shards", shards=BOUNDS, buffer_size=4), BOUNDS)
    full = order_randomness(epoch_order(75, 2, 0, "shuffle"), BOUNDS)
    assert stream["same_shard"] > 0.6 > full["same_shard"]


STREAMING = [name for name in ("tar", "tfrecord") if get_layout(name).missing() is None]


@pytest.fixture(scope="module")
def streaming_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    generate(root, Spec(height=8, width=8, channels=1, count=60, seed=4), [*STREAMING, "hdf5"], workers=1,
             progress=False, settings={"shard_samples": 6})
    return root


@pytest.mark.parametrize("layout", ["tar", "tfrecord"])
def test_the_batch_path_reads_in_file_order(streaming_corpus, layout, monkeypatch):
    need_layout(layout)
    r = open_corpus(streaming_corpus, layout)
    touched = []
    real = type(r)._slice
    monkeypatch.setattr(type(r), "_slice", lambda self, i: (touched.append(i), real(self, i))[1])
    batch = [17, 3, 16, 4, 40]
    payloads = r.read_many(batch)
    assert touched == sorted(batch) and [bytes(p) for p in payloads] == [bytes(r.read(i)) for i in batch]
    touched.clear()
    images, _ = r.read_batch(batch)
    assert touched == sorted(batch)
    assert np.array_equal(images, np.stack([r.decode(r.read(i), i) for i in batch]))


@pytest.mark.parametrize("layout", ["tar", "tfrecord"])
def test_loader_streams_every_index_once_with_workers_and_ranks(streaming_corpus, layout):
    need_layout(layout)
    r = open_corpus(streaming_corpus, layout)
    assert r.supports_streaming and r.shards().tolist() == list(range(0, 61, 6))
    for epoch in (0, 1):
        seen = []
        for rank in range(3):
            with Loader(r, batch_size=4, workers=2, worker_kind="fork", shuffle="shards", seed=1, rank=rank, world=3,
                        buffer_size=8) as loader:
                mine = [i for b in loader.epoch(epoch) for i in b.indices.tolist()]
            assert len({i // 6 for i in mine}) == (rank + 1) * 10 // 3 - rank * 10 // 3  # whole shards
            seen += mine
        assert sorted(seen) == list(range(60))


def test_bench_run_streams_records_and_reports_the_order(streaming_corpus, tmp_path, capsys):
    from bench.__main__ import main
    from bench.results.result import Results

    out = tmp_path / "s.json"
    assert main(["run", "--corpus", str(streaming_corpus), "--output", str(out), "--shuffle", "shards",
                 "--cache", "warm", "--epochs", "2", "--no-sample-latency", "--quiet"]) == 0
    res = Results.load(out)
    assert sorted(r.layout for r in res.runs) == STREAMING  # hdf5 does not stream: left out
    for run in res.runs:
        assert run.config.shuffle == "shards"
        for e in run.epochs:
            o = e.order
            assert 0 < o.displacement and 0 <= o.same_shard <= 1 and o.same_shard_shuffled == pytest.approx(5 / 59)
    printed = capsys.readouterr().out
    assert "order " in printed and "same shard" in printed
    with pytest.raises(UsageError, match="hdf5 is not one"):
        main(["run", "--corpus", str(streaming_corpus), "--output", str(tmp_path / "h.json"), "--layouts", "hdf5",
              "--shuffle", "shards"])

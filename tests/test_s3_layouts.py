"""Every layout read over S3 the way its users read it, through the real bundled server (one per
session: tests/conftest.py s3_server; skipped in one line without the s3 extra): tar and
tfrecord shards, Parquet, Arrow, HDF5 by ranged GETs (neighbours in a batch merged into one
GET), tar also streamed a whole shard per GET in the `shards` order, LMDB and SQLite staged.
Bit-exact against the local readers, every index once per epoch, the GETs counted exactly, a
missing or cut object one line naming its URL and the sample, staging counted and removed."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from conftest import S3_BUCKET
from test_s3_bench import _run, s3corpus, s3env  # noqa: F401 (fixtures)

RANGED = ("tar", "tfrecord", "arrow", "hdf5", "npy")  # one ranged GET per sample, neighbours merged
LAYOUTS = RANGED + ("parquet", "lmdb", "sqlite")


def _pair(url, local, layout):
    from loaders import open_corpus

    return open_corpus(url, layout), open_corpus(local, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_round_trips_bit_exact_through_s3(s3env, layout):
    local, url, _ = s3env
    remote, near = _pair(url, local, layout)
    try:
        idx = np.random.default_rng(5).permutation(len(near))
        for part in np.array_split(idx, 5):  # batches of a shuffled epoch
            assert [bytes(p) for p in remote.read_many(part)] == [bytes(p) for p in near.read_many(part)]
            a, _ = remote.read_batch(part)
            b, _ = near.read_batch(part)
            assert np.array_equal(a, b)
        assert bytes(remote.read(7)) == bytes(near.read(7))
        assert np.array_equal(remote.stored_labels(), near.stored_labels())
    finally:
        remote.close()
        near.close()


def _gets(reader, idx) -> int:
    before = reader.store.stats()
    reader.read_many(np.asarray(idx))
    return (reader.store.stats() - before).gets


def _shard_of(reader, i: int) -> int:
    return i // reader.per_shard if hasattr(reader, "per_shard") else 0


@pytest.mark.parametrize("layout", RANGED)
def test_a_ranged_get_per_sample_and_one_for_neighbours(s3env, layout):
    local, url, _ = s3env
    remote, near = _pair(url, local, layout)
    try:
        remote.read_many(np.arange(len(remote)))  # opened, every index read: later reads fetch samples only
        apart = list(range(0, 20, 2))  # no two back to back
        assert _gets(remote, apart) == len(apart)
        run = list(range(10, 15))  # back to back: one GET per object they lie in
        assert _gets(remote, run[::-1]) == len({_shard_of(remote, i) for i in run})
    finally:
        remote.close()
        near.close()


def _runs(batch, shard_of) -> int:
    """GETs a batch of back-to-back-in-index-order samples needs: one per run of consecutive
    indices in one object."""
    s = sorted(batch)
    return 1 + sum(1 for a, b in zip(s, s[1:]) if b != a + 1 or shard_of(a) != shard_of(b))


@pytest.mark.parametrize("layout", RANGED)
@pytest.mark.parametrize("workers", [0, 2])
def test_epochs_read_every_index_once_with_the_gets_expected(s3env, layout, workers):
    from loaders.pipeline import Loader

    local, url, _ = s3env
    remote, _ = _pair(url, local, layout)
    loader = Loader(remote, batch_size=6, workers=workers, worker_kind="thread", seed=3)
    try:
        remote.read_many(np.arange(len(remote)))  # the indexes, opened before the count
        for epoch in range(2):
            plan = loader.batches(epoch)
            before = remote.store.stats()
            seen = [i for b in loader.epoch(epoch) for i in b.indices.tolist()]
            used = remote.store.stats() - before
            assert sorted(seen) == list(range(len(remote)))
            assert used.gets == sum(_runs(b.tolist(), lambda i: _shard_of(remote, i)) for b in plan)
    finally:
        loader.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_tar_in_the_shards_order_is_one_streamed_get_per_shard(s3env, workers):
    from loaders.pipeline import Loader

    local, url, _ = s3env
    remote, near = _pair(url, local, "tar")
    loader = Loader(remote, batch_size=6, workers=workers, worker_kind="thread", shuffle="shards", buffer_size=8)
    try:
        for epoch in range(2):
            before = remote.store.stats()
            got = {}
            for b in loader.epoch(epoch):
                got.update(zip(b.indices.tolist(), b.images))
            used = remote.store.stats() - before
            assert sorted(got) == list(range(len(remote)))
            assert used.gets == remote.nshards  # no index read, one GET per shard
            want, _ = near.read_batch(np.arange(len(near)))
            assert all(np.array_equal(got[i], want[i]) for i in range(len(near)))
    finally:
        loader.close()
    other = Loader(remote, batch_size=6, shuffle="shuffle")  # any other order: ranged GETs again
    try:
        assert not remote.streaming
    finally:
        other.close()


def _damaged_copy(local, name):
    from generator.objectstore.transfer import upload

    url = f"s3://{S3_BUCKET}/gray8-{name}"
    upload(local, url, quiet=True)
    return url


@pytest.mark.parametrize("how", ["missing", "truncated"])
@pytest.mark.parametrize("layout,streamed", [("tar", True), ("tar", False), ("tfrecord", False),
                                             ("arrow", False), ("hdf5", False)])
def test_an_object_missing_or_cut_mid_epoch_is_one_line_naming_it_and_the_sample(s3env, layout, streamed, how):
    from generator.errors import SampleError
    from generator.objectstore.store import Store
    from loaders import open_corpus
    from loaders.pipeline import Loader

    local, _, _ = s3env
    url = _damaged_copy(local, f"{layout}-{streamed}-{how}")
    reader = open_corpus(url, layout)
    loader = Loader(reader, batch_size=6, shuffle="shards" if streamed else "sequential")
    if layout in ("tar", "tfrecord"):
        victim = reader.shard_name(1)  # a full shard, read after another in a sequential epoch
        first = reader.per_shard
    else:
        victim, first = reader.data_name(), None
    store = Store(url)
    data = store.get(victim)
    try:
        with pytest.raises(SampleError) as err:
            if first is None:  # one file: cut after it is opened, mid-epoch
                reader.read_many(np.arange(3))
            if how == "missing":
                store.delete(victim)
            else:
                store.put(victim, data[:3000 if first is not None else len(data) // 2])  # through its samples
            for _ in loader.epoch(0):
                pass
        line = str(err.value)
        assert "\n" not in line and f"{url}/{victim}" in line and f"{layout} sample " in line, line
        assert ("missing" if how == "missing" else "truncated") in line, line
        if first is not None:
            assert err.value.index >= first
    finally:
        loader.close()


def test_staged_layouts_are_counted_said_and_removed(s3env, tmp_path, monkeypatch):
    from bench.results.result import Results
    from loaders import open_corpus

    local, url, env = s3env
    stage = tmp_path / "stage"
    monkeypatch.setenv("LAYOUTBENCH_STAGE_DIR", str(stage))
    reader = open_corpus(url, "lmdb")
    size = sum(p.stat().st_size for p in (local / "lmdb").iterdir()) + (local / "manifest.json").stat().st_size
    assert reader.staging["bytes"] == size and reader.staging["objects"] == len(list((local / "lmdb").iterdir()))
    assert os.path.isdir(reader.stage_dir)
    before = reader.store.stats()
    reader.read_many(np.arange(len(reader)))
    assert (reader.store.stats() - before).gets == 0  # read locally
    where = reader.stage_dir
    reader.close()
    del reader
    gc.collect()
    assert not os.path.exists(where) and not any(stage.iterdir())

    out = tmp_path / "r.json"
    p = _run(["-m", "bench", "run", "--corpus", url, "--output", str(out), "--layouts", "lmdb,sqlite", "--epochs", "2",
              "--repeats", "1", "--workers", "0,2", "--cache", "warm", "--quiet"],
             {**env, "LAYOUTBENCH_STAGE_DIR": str(stage)})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "sqlite warm w2: staged" in p.stdout + p.stderr
    res = Results.load(out)
    for run in res.runs:
        for e in run.epochs:
            assert e.indices_ok and e.s3.gets == 0 and e.s3.staged_bytes > 0 and e.s3.staged_s > 0
    assert not any(stage.iterdir())  # nothing left behind


def test_hdf5_of_a_chunked_payload_round_trips_through_h5py_over_s3(s3env, s3_server, corpus):
    """Encoded payloads of varying size sit in a chunked dataset, which HDF5 over S3 reads through h5py."""
    from generator.objectstore.store import S3Config, Store
    from generator.objectstore.transfer import upload

    local = corpus("varjpeg")
    url = f"s3://{S3_BUCKET}/varjpeg"
    upload(local, url, quiet=True, store=Store(url, S3Config.from_env(s3_server.env())))
    remote, near = _pair(url, local, "hdf5")
    try:
        idx = list(range(len(near)))[::-1]
        assert [bytes(p) for p in remote.read_many(idx)] == [bytes(p) for p in near.read_many(idx)]
        assert remote._file is not None  # through h5py
    finally:
        remote.close()
        near.close()

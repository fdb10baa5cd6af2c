"""The Loader (batches, workers, failures) and the map-style dataset."""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import pytest
from conformance import reference
import test_lmdb

from generator.errors import SampleError, UsageError
from generator.manifest import read_manifest
from loaders import ImageDataset, open_corpus
from loaders.files import FilesReader
from loaders.pipeline import Loader, WorkerError


class DiesOnArrival(FilesReader):
    """A reader whose unpickling kills the worker process: a worker that dies while starting."""

    def __setstate__(self, state):
        os._exit(3)


@pytest.fixture(scope="module")
def ref(corpus):
    return reference(corpus("rgb16"))


def collect(loader, epoch=0):
    return [(b.indices.copy(), None if b.images is None else b.images.copy(), b.labels, b.nbytes)
            for b in loader.epoch(epoch)]


def test_batches_hold_the_right_images_labels_and_bytes(corpus, ref):
    pixels, labels, payloads = ref
    loader = Loader(open_corpus(corpus("rgb16"), "hdf5"), batch_size=8, seed=1)
    got = list(loader.epoch(0))
    assert [len(b.indices) for b in got] == [8, 8, 8, 8, 5] and len(loader) == 5
    for b in got:
        assert b.images.shape == (len(b.indices), 4, 6, 3) and b.images.dtype == np.dtype("<u2")
        assert np.array_equal(b.images, np.stack([pixels[i] for i in b.indices]))
        assert np.array_equal(b.labels, labels[b.indices])
        assert b.nbytes == sum(len(payloads[i]) for i in b.indices)
        assert b.sample_seconds is None


def test_drop_last_and_raw_bytes(corpus, ref):
    _, _, payloads = ref
    loader = Loader(open_corpus(corpus("rgb16"), "files"), batch_size=8, decode=False, drop_last=True)
    got = list(loader.epoch(0))
    assert [len(b.indices) for b in got] == [8, 8, 8, 8]
    assert all(b.images is None and b.nbytes == sum(len(payloads[i]) for i in b.indices) for b in got)


@pytest.mark.parametrize("decode", [True, False])
def test_timing_gives_one_duration_per_sample(corpus, ref, decode):
    pixels = ref[0]
    for b in Loader(open_corpus(corpus("rgb16"), "lmdb"), batch_size=8, timing=True, decode=decode).epoch(0):
        assert b.sample_seconds.shape == (len(b.indices),) and (b.sample_seconds > 0).all()
        if decode:
            assert np.array_equal(b.images, np.stack([pixels[i] for i in b.indices]))


@pytest.mark.parametrize("kind", ["thread", "fork", "spawn"])
def test_workers_give_the_serial_batches(corpus, kind):
    reader = open_corpus(corpus("rgb16"), "lmdb")
    serial = collect(Loader(reader, batch_size=6, seed=4, shuffle="block", block_size=8), 1)
    with Loader(reader, batch_size=6, seed=4, shuffle="block", block_size=8, workers=2, worker_kind=kind,
                prefetch=1) as loader:
        assert loader.worker_pids == []  # started by the first epoch
        par = collect(loader, 1)
        pids = loader.worker_pids
        assert len(pids) == (0 if kind == "thread" else 2)
        par_again = collect(loader, 1)
        assert loader.worker_pids == pids  # workers persist across epochs
        with Loader(reader, batch_size=6, workers=2, worker_kind=kind, timing=True) as timed:
            assert all(len(b.sample_seconds) == len(b.indices) for b in timed.epoch(0))
    for a, b, c in zip(serial, par, par_again, strict=True):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[3] == b[3]
        assert np.array_equal(b[0], c[0]) and np.array_equal(b[1], c[1])
    for pid in pids:  # close() stopped them
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("kind", ["thread", "fork"])
def test_a_sample_error_in_a_worker_reaches_the_caller(corpus_copy, kind):
    root = corpus_copy("gray8")
    test_lmdb.TestLMDB().make_truncated(root, 21)
    with Loader(open_corpus(root, "lmdb"), batch_size=4, shuffle="sequential", workers=2,
                worker_kind=kind) as loader:
        with pytest.raises(SampleError) as e:
            list(loader.epoch(0))
        assert (e.value.layout, e.value.index) == ("lmdb", 21) and "truncated" in e.value.problem
        # the workers survive a bad sample: the next epoch runs up to it again
        seen = []
        with pytest.raises(SampleError):
            for b in loader.epoch(1):
                seen.extend(b.indices.tolist())
        assert seen == list(range(20))


def test_a_dead_worker_raises_instead_of_hanging(corpus):
    with Loader(open_corpus(corpus("gray8"), "files"), batch_size=1, workers=2, worker_kind="fork",
                prefetch=1) as loader:
        it = loader.epoch(0)
        next(it)
        os.kill(loader.worker_pids[0], signal.SIGKILL)
        with pytest.raises(WorkerError, match="died"):
            list(it)
        assert len(list(loader.epoch(1))) == 37  # a fresh pool for the next epoch


@pytest.mark.parametrize("kind", ["fork", "spawn"])
def test_a_worker_dying_at_start_raises_instead_of_hanging(corpus, kind):
    root = corpus("gray8")
    loader = Loader(DiesOnArrival(root, read_manifest(root)), workers=2, worker_kind=kind)
    with pytest.raises(WorkerError, match="exit code 3"):
        list(loader.epoch(0))
    assert loader.worker_pids == []


@pytest.mark.parametrize("kind", ["thread", "fork"])
def test_an_abandoned_epoch_does_not_leak_into_the_next(corpus, kind):
    reader = open_corpus(corpus("gray8"), "lmdb")
    with Loader(reader, batch_size=3, workers=2, worker_kind=kind, prefetch=3) as loader:
        for _ in zip(range(2), loader.epoch(0)):
            pass
        got = collect(loader, 5)
    assert [a[0].tolist() for a in got] == [b.tolist() for b in loader.batches(5)]


def test_ranks_split_the_epoch(corpus):
    reader = open_corpus(corpus("gray8"), "hdf5")
    seen = []
    for rank in range(3):
        seen += [i for b in Loader(reader, batch_size=4, rank=rank, world=3).epoch(2) for i in b.indices.tolist()]
    assert sorted(seen) == list(range(37))


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=0), "batch_size"),
    (dict(workers=-1), "workers"),
    (dict(worker_kind="green"), "worker_kind"),
    (dict(shuffle="random"), "shuffle mode"),
    (dict(rank=2, world=2), "rank"),
    (dict(prefetch=0), "prefetch"),
    (dict(buffer_size=4), "takes no option"),
])
def test_bad_settings_are_usage_errors(corpus, kw, message):
    with pytest.raises(UsageError, match=message):
        Loader(open_corpus(corpus("gray8"), "files"), **kw)


def test_dataset_items(corpus, ref):
    pixels, labels, _ = ref
    ds = ImageDataset(open_corpus(corpus("rgb16"), "lmdb"))
    assert len(ds) == 37
    img, label = ds[5]
    assert np.array_equal(img, pixels[5]) and label == labels[5] and isinstance(label, int)
    img[0, 0, 0] = 1  # a writable copy, not a view of the storage
    items = ds.__getitems__([3, 1])
    assert [lab for _, lab in items] == [labels[3], labels[1]]
    assert np.array_equal(items[0][0], pixels[3])
    assert len(list(ds)) == 37  # the iteration protocol ends on IndexError
    with pytest.raises(IndexError):
        ds[37]


@pytest.mark.parametrize("workers", [0, 2])
def test_torch_dataloader(corpus, workers):
    torch = pytest.importorskip("torch")
    ds = ImageDataset(open_corpus(corpus("rgb8"), "hdf5"))
    pixels, labels, _ = reference(corpus("rgb8"))
    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=True, num_workers=workers)
    seen = []
    for images, labs in loader:
        for img, lab in zip(images.numpy(), labs.tolist()):
            i = next(k for k in range(37) if np.array_equal(pixels[k], img))
            assert lab == labels[i]
            seen.append(i)
    assert sorted(seen) == list(range(37))
    multiprocessing.active_children()  # reap the DataLoader's exited workers now: their pipes close here, not in a later test

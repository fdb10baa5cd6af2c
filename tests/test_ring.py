"""The Loader's batch ring: blocks are reused only when no batch (or view of one) is alive."""

from __future__ import annotations

import numpy as np
import pytest
from conformance import reference

import loaders.pipeline
from loaders import open_corpus
from loaders.pipeline import Loader


@pytest.fixture(autouse=True)
def ring_for_every_batch(monkeypatch):
    monkeypatch.setattr(loaders.pipeline, "RING_MIN", 0)  # the test corpora's batches are tiny


@pytest.fixture(scope="module")
def ref(corpus):
    return reference(corpus("big"))


def expected(ref, indices):
    return np.stack([ref[0][i] for i in indices])


@pytest.mark.parametrize("kind", ["serial", "thread", "fork"])
def test_kept_batches_and_views_are_never_overwritten(corpus, ref, kind):
    workers = {"serial": dict()}.get(kind, dict(workers=2, worker_kind=kind, prefetch=1))
    with Loader(open_corpus(corpus("big"), "files"), batch_size=1, seed=3, **workers) as loader:
        for epoch in range(2):
            kept = list(loader.epoch(epoch))  # every batch of the epoch held at once
            views = [(b.indices, b.images[0, 1:]) for b in loader.epoch(epoch + 10)]  # only a view survives
            for b in kept:
                assert np.array_equal(b.images, expected(ref, b.indices))
            for indices, view in views:
                assert np.array_equal(view, expected(ref, indices)[0, 1:])


@pytest.mark.parametrize("kind", ["serial", "thread", "fork"])
def test_dropped_batches_give_their_memory_back(corpus, ref, kind):
    workers = {"serial": dict()}.get(kind, dict(workers=2, worker_kind=kind, prefetch=1))
    with Loader(open_corpus(corpus("big"), "hdf5"), batch_size=2, seed=5, **workers) as loader:
        seen, handed = set(), 0
        for epoch in range(3):
            for b in loader.epoch(epoch):
                assert np.array_equal(b.images, expected(ref, b.indices))
                assert b.images.base is not None  # a view of one of the ring's blocks, not a fresh array
                seen.add(b.images.base.ctypes.data)
                handed += 1
        assert handed == 9  # 6 images in batches of 2, 3 epochs
        # each batch was dropped before the next arrived, so its memory came back: 9 batches out of
        # at most the few blocks kept (in flight, held here, one spare), never one new array each
        assert len(seen) <= loader._ring.keep < handed

"""Epoch orders and sharding: every index exactly once, reproducible, shaped as each mode says."""

from __future__ import annotations

import numpy as np
import pytest

from generator.errors import UsageError
from loaders.sampler import MODES, batches, epoch_order, shard, worker_share


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [0, 1, 7, 1000, 1031])
def test_every_index_exactly_once(mode, n):
    order = epoch_order(n, seed=5, epoch=2, mode=mode)
    assert order.dtype == np.int64
    assert np.array_equal(np.sort(order), np.arange(n))


@pytest.mark.parametrize("mode", MODES)
def test_reproducible_from_the_seed(mode):
    a = epoch_order(500, seed=9, epoch=3, mode=mode)
    assert np.array_equal(a, epoch_order(500, seed=9, epoch=3, mode=mode))


@pytest.mark.parametrize("mode", ["shuffle", "block", "buffer"])
def test_new_order_each_epoch_and_seed(mode):
    base = epoch_order(500, seed=9, epoch=0, mode=mode)
    assert not np.array_equal(base, epoch_order(500, seed=9, epoch=1, mode=mode))
    assert not np.array_equal(base, epoch_order(500, seed=10, epoch=0, mode=mode))
    assert not np.array_equal(base, np.arange(500))


def test_sequential_is_index_order():
    assert np.array_equal(epoch_order(10, mode="sequential"), np.arange(10))


def test_block_mode_keeps_blocks_together_and_shuffles_inside():
    n, size = 1000, 64
    order = epoch_order(n, seed=1, epoch=0, mode="block", block_size=size)
    starts = list(range(0, n, size))
    runs = [order[a:a + size] for a in range(0, n, size)]
    # The full blocks come out whole, in a random order of blocks, each shuffled inside.
    blocks = [set(range(b, min(b + size, n))) for b in starts]
    pos = 0
    seen = []
    for _ in starts:
        block_id = order[pos] // size
        block = blocks[block_id]
        assert set(order[pos:pos + len(block)].tolist()) == block
        seen.append(block_id)
        pos += len(block)
    assert sorted(seen) == list(range(len(starts))) and seen != sorted(seen)
    assert any(not np.array_equal(r, np.sort(r)) for r in runs)


def test_buffer_mode_never_emits_an_index_more_than_the_buffer_early():
    n, size = 2000, 100
    order = epoch_order(n, seed=4, epoch=0, mode="buffer", buffer_size=size)
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    assert (position >= np.arange(n) - size).all()
    assert np.abs(position - np.arange(n)).max() > size // 2  # it does shuffle


def test_buffer_larger_than_n_is_a_full_shuffle():
    order = epoch_order(50, seed=4, mode="buffer", buffer_size=1000)
    assert np.array_equal(np.sort(order), np.arange(50)) and not np.array_equal(order, np.arange(50))


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_index_once(world):
    order = epoch_order(1001, seed=2, mode="shuffle")
    parts = [shard(order, r, world) for r in range(world)]
    assert np.array_equal(np.concatenate(parts), order)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("mode", MODES)
def test_ranks_and_workers_together_see_every_index_once(mode):
    n, world, workers = 997, 3, 4
    seen = []
    for rank in range(world):
        mine = batches(shard(epoch_order(n, 8, 1, mode), rank, world), 16)
        for w in range(workers):
            for b in worker_share(mine, w, workers):
                seen.extend(b.tolist())
    assert sorted(seen) == list(range(n))


def test_batches_and_drop_last():
    order = np.arange(10)
    assert [len(b) for b in batches(order, 4)] == [4, 4, 2]
    assert [len(b) for b in batches(order, 4, drop_last=True)] == [4, 4]
    assert batches(np.arange(0), 4) == []


@pytest.mark.parametrize("call, message", [
    (lambda: epoch_order(10, mode="random"), "unknown shuffle mode"),
    (lambda: epoch_order(10, mode="block", buffer_size=3), "takes no option"),
    (lambda: epoch_order(10, mode="block", block_size=0), "positive integer"),
    (lambda: epoch_order(10, seed=-1), ">= 0"),
    (lambda: shard(np.arange(4), 2, 2), "rank must be"),
    (lambda: shard(np.arange(4), 0, 0), "world must be"),
    (lambda: worker_share([], 3, 2), "worker must be"),
])
def test_bad_arguments_are_usage_errors(call, message):
    with pytest.raises(UsageError, match=message):
        call()

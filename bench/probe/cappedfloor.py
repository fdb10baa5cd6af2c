"""The capped regime's floor: what the device gives for a run's own reads under its own cap.

Measured in the capped run's child, inside its memory cgroup and after its epochs, so under the
same limit, over the same files and from the page-cache state the epochs left: each pass reads
every sample's stored bytes once, where the layout's own index says they lie (reader.extents),
in a fresh shuffled order cut into the run's batches. The run's W workers are W threads here,
each taking every W-th batch and reading each range with one preadv into one reused buffer,
the ranges ahead advised WILLNEED meanwhile as the readers do (loaders.pagecache.advised_ahead):
what the fastest reader can do with the same requests in flight, with no decode, no copy out
and no Python work per sample beyond finding its ranges. The memory it adds is one buffer of the
largest range per thread, and a batch's ranges: a floor that needs more than the run's own
memory would be stopped by the cap it measures under (a floor of 2 x 64 threads and 8 MiB
buffers was, at a 10 MiB cap).

Cached bytes are read from the cache and missing ones from the device, exactly as the run's
were: a run's `x floor` against it says how far the reader is from its own layout's I/O, not
how the layouts compare (the floors differ by layout, as their reads do).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from bench.results.result import StreamFloor

from loaders.pagecache import advised_ahead

from . import probes
from .floors import _preadv_pieces

WAY = "extents-advise"
PASSES = 3


def capped_floor(reader, paths, layout: str, streams: int, batch: int, seed: int = 0,
                 passes: int = PASSES) -> StreamFloor | None:
    """The best of `passes` passes (see the module docstring) of `reader`'s samples, whose files
    are `paths`, at `streams` threads and `batch` samples a batch; None when the layout cannot say
    where its samples lie (reader.extents is None: its class's `no_extents` says why)."""
    count = reader.spec.count
    if not reader.extents([0]):
        return None
    streams, batch = max(1, streams), max(1, batch)
    rng = np.random.default_rng(seed ^ 0x5EED)
    best = None
    for _ in range(max(1, passes)):
        residency = probes.residency(paths).fraction
        order = rng.permutation(count)
        got = _pass(reader, order, streams, batch)
        if got is None:
            return None
        nbytes, reads, seconds = got
        if best is None or seconds < best[2]:
            best = (nbytes, reads, seconds, residency)
    nbytes, reads, seconds, residency = best
    return StreamFloor(layout, "capped", WAY, streams, batch, nbytes, reads, seconds, residency,
                       nbytes // max(1, count))


def _pass(reader, order: np.ndarray, streams: int, batch: int) -> tuple[int, int, float] | None:
    """(bytes, reads, seconds) of one pass: every sample of `order` once, batch k by thread k % streams."""
    batches = [order[k:k + batch] for k in range(0, len(order), batch)]
    results: list = [None] * streams
    errors: list[BaseException] = []
    start = threading.Barrier(streams + 1)

    def stream(s: int) -> None:
        total = reads = 0
        try:
            mine = batches[s::streams]
            dest, block = None, 1
            start.wait()
            for idx in mine:
                spans = reader.extents(idx)
                if spans is None:
                    results[s] = None
                    return
                items = [item for sample in spans for item in sample]
                need = max(n for _, _, n in items)
                if dest is None or need > block:
                    block = max(block, need)
                    dest, pos = memoryview(np.ones(2 * block, np.uint8)), 0
                fds = {}
                try:
                    for path, _, _ in items:
                        if path not in fds:
                            fds[path] = os.open(path, os.O_RDONLY)
                    for fd, at, length in advised_ahead([(fds[p], at, n) for p, at, n in items]):
                        got, n, pos = _preadv_pieces(fd, dest, pos, at, length, block)
                        total, reads = total + got, reads + n
                finally:
                    for fd in fds.values():
                        os.close(fd)
            results[s] = (total, reads)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)
            try:
                start.abort()
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=stream, args=(s,), daemon=True) for s in range(streams)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    if any(r is None for r in results):
        return None
    return sum(r[0] for r in results), sum(r[1] for r in results), seconds

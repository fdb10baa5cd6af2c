"""Producing payloads: chunks of indices -> encoded payloads, checksums, sizes and labels."""

from __future__ import annotations

import concurrent.futures as cf
import errno
import functools
import itertools
import zlib
from collections import deque

import numpy as np

from .codec import SMALL, Codec
from .errors import CorpusError, os_reason
from .spec import Spec
from .synth import make_sample


@functools.lru_cache(maxsize=4)
def codec_for(spec: Spec) -> Codec:
    return Codec(spec)


# Ingested corpora (generator.ingest): their samples, by spec, registered before generating (forked
# writer workers inherit it; threads share it). Each: a sequence of entries with .path, .crc,
# .size and .label, in sample order.
SOURCES: dict = {}


def produce(spec: Spec, indices):
    """(payloads, crc32s, sizes, labels) for `indices`: the corpus's bytes, made from scratch (an
    ingested corpus's: its files' bytes, read again and checked against what the scan saw)."""
    if spec.source is not None:
        return _produce_source(spec, indices)
    codec = codec_for(spec)
    in_place = codec.fixed_size is not None and codec.fixed_size >= SMALL
    payloads, crcs, sizes, labels = [], [], [], []
    for i in indices:
        if in_place:  # header + pixels: make the pixels straight into the payload, no copy
            buf, pixels = codec.payload_buffer()
            label = make_sample(spec, i, out=pixels)[1]
            p = memoryview(buf)
        else:
            pixels, label = make_sample(spec, i)
            p = codec.encode(pixels)
        payloads.append(p)
        crcs.append(zlib.crc32(p))
        sizes.append(len(p))
        labels.append(label)
    return payloads, crcs, sizes, labels


def chunks(start: int, stop: int, spec: Spec, at_least: int = 1):
    """Contiguous index ranges of about 8 MiB of payload (at most 4096 samples), and at least
    `at_least` of them when there are that many samples, so that every worker gets a share."""
    step = max(1, min(4096, (8 << 20) // max(1, spec.pixel_bytes), -(-(stop - start) // at_least)))
    return [range(a, min(a + step, stop)) for a in range(start, stop, step)]


def bounded_map(fn, items, workers: int, window: int | None = None):
    """Ordered map over threads with at most `window` results in flight (bounded memory)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    window = window or 2 * workers
    items = iter(items)
    with cf.ThreadPoolExecutor(min(workers, window)) as ex:
        pending = deque(ex.submit(fn, it) for it in itertools.islice(items, window))
        while pending:
            result = pending.popleft().result()
            nxt = next(items, None)
            if nxt is not None:
                pending.append(ex.submit(fn, nxt))
            yield result


class SampleTable:
    """Per-sample checksum, size and label, filled as samples are produced."""

    def __init__(self, count: int, crc=None, sizes=None, labels=None):
        self.known = crc is not None
        self.crc = np.asarray(crc if self.known else np.zeros(count), np.uint32)
        self.sizes = np.asarray(sizes if self.known else np.zeros(count), np.int64)
        self.labels = np.asarray(labels if self.known else np.zeros(count), np.uint16)

    def fill(self, indices: range, crcs, sizes, labels) -> None:
        sl = slice(indices.start, indices.stop)
        if self.known:
            # Every layout re-derives the samples: a difference means nondeterminism, a bug.
            if not (np.array_equal(self.crc[sl], crcs) and np.array_equal(self.sizes[sl], sizes)):
                raise CorpusError(f"samples {indices.start}..{indices.stop - 1} differ from the checksums in "
                                  f"the corpus's manifest: it was made by another version of the generator "
                                  f"(or edited); regenerate it with --force")
            return
        self.crc[sl], self.sizes[sl], self.labels[sl] = crcs, sizes, labels


def _produce_source(spec: Spec, indices):
    from .safeio import FileRefused, read_regular
    from .spec import MAX_SAMPLE_BYTES

    entries = SOURCES.get(spec)
    if entries is None:
        raise CorpusError("this corpus was ingested from files: rerun python -m generator ingest SRC --out DIR "
                          "to write (or resume) its layouts")
    payloads, crcs, sizes, labels = [], [], [], []
    for i in indices:
        e = entries[i]
        try:
            data = read_regular(e.path, MAX_SAMPLE_BYTES)
        except (FileRefused, OSError) as exc:
            if isinstance(exc, FileRefused) or exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise CorpusError(f"{e.path} cannot be read any more ({exc.strerror or exc}); it changed during the "
                                  f"ingest: rerun the ingest") from None
            reason = os_reason(exc)  # a limit of this process (open files, memory) raises its own line
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise CorpusError(f"{e.path} cannot be read: permission denied ({reason}); make it readable by this "
                                  f"user, then rerun the ingest") from None
            if exc.errno == errno.ELOOP:
                raise CorpusError(f"{e.path} cannot be read: a symbolic link loop (ELOOP); remove the link, then "
                                  f"rerun the ingest") from None
            raise CorpusError(f"{e.path} cannot be read ({reason}); fix that, then rerun the ingest") from None
        if len(data) != e.size or zlib.crc32(data) != e.crc:
            raise CorpusError(f"{e.path} changed while it was being ingested (its bytes differ from the scan's); "
                              f"rerun the ingest")
        payloads.append(data)
        crcs.append(e.crc)
        sizes.append(e.size)
        labels.append(e.label)
    return payloads, crcs, sizes, labels

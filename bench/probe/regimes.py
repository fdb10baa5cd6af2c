"""Regimes: how the page cache stands before an epoch, set and then checked (never assumed).

- cold: every handle closed, then evicted (drop_caches as root, else fadvise DONTNEED), and the
  residency must be at most COLD_MAX;
- warm: pre-read, and at least WARM_MIN resident before (and, checked by the runner, after);
- asis: whatever it is, measured;
- capped: the loader process and all its workers in a memory cgroup (bench.probe.cgroups) limited to
  the loader's own memory plus SIZE (`--memory-limit`) of page cache; the layout's files are
  evicted once at the start, then the epochs run back to back with no eviction between them:
  the steady state of a dataset larger than memory (bench.run.capped runs it).

What the cap counts (cgroup v1 and v2 alike): everything charged to the group, i.e. the memory
the loader process and its workers touch after joining it (anonymous memory, batch buffers,
shared-memory slots, kernel memory) and the page cache they bring in. The loader's own memory
is measured first, inside the group before the limit is set: after its read paths have run and
a few batches have gone through a started loader (so its batch buffers and workers exist), with
the layout's files then evicted; own = the group's usage minus what of those files is still
resident. The limit is own + SIZE. Pages shared with the bench process from before the fork
(the interpreter, libraries already loaded) are charged to the bench's own group, not counted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from . import probes

COLD_MAX, WARM_MIN = 0.01, 0.99  # residency limits of the cache settings
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'320M', '1G', '512K', '1.5G', '4096' -> bytes (binary units: K = 2^10, M = 2^20, G = 2^30;
    a trailing 'iB' or 'B' is allowed). ValueError for anything else or for sizes <= 0."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    number = t[:-1] if unit else t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"expected a size like 320M or 1G, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"a size must be positive, got {text!r}")
    return int(value * _UNITS[unit])


def host_ram() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def in_flight_bytes(rc, workers: int, sample_bytes: int) -> int:
    """Page cache the loader's reads need at once: one batch per reading worker (the pages of a
    batch being copied out must stay until they are copied)."""
    return max(1, workers) * rc.batch_size * sample_bytes


def read_unit_bytes(corpus, layout: str) -> int | None:
    """The most bytes `layout`'s reader must bring into the page cache to give one sample, where
    its design reads a unit larger than the sample (extents_cover "chunk": a Parquet column chunk,
    a zarr inner chunk); None where it reads the sample's own bytes (or cannot say)."""
    from loaders import open_corpus

    reader = open_corpus(corpus, layout)
    try:
        if reader.extents_cover != "chunk":
            return None
        extents = reader.extents(np.arange(len(reader)))
        return max((sum(n for _, _, n in ranges) for ranges in extents), default=0) if extents else None
    finally:
        reader.close()


def oversized_units(corpus, layouts, size: int) -> list[tuple[str, int]]:
    """(layout, read unit bytes) of each of `layouts` whose read unit is larger than `size`: a
    capped run cannot hold one of its units (check_capped refuses them; the suite leaves them out)."""
    return [(name, unit) for name in layouts
            if (unit := read_unit_bytes(corpus, name)) is not None and unit > size]


def not_fork_safe(layouts) -> list[str]:
    """Those of `layouts` whose reader's library breaks in a forked child (Reader.fork_safe False:
    pylance): the capped regime runs each layout in a child forked inside its cgroup."""
    from generator.layouts import get_layout

    return [name for name in layouts if not get_layout(name).reader_class().fork_safe]


def check_capped(cfg, manifest, world: int = 1) -> None:
    """The capped regime's bad inputs, each one line (UsageError, exit 2), before anything is measured."""
    from generator.errors import UsageError

    from . import cgroups

    if "capped" not in cfg.caches:
        if cfg.memory_limit is not None:
            raise UsageError("--memory-limit applies to --cache capped only; add capped to --cache or drop it")
        return
    size = cfg.memory_limit
    if size is None:
        raise UsageError("--cache capped needs --memory-limit SIZE (the page cache the run may use, e.g. 320M)")
    if world > 1:
        raise UsageError("--cache capped runs one process (its own cgroup); run it without MPI")
    ram = host_ram()
    if size >= ram:
        raise UsageError(f"--memory-limit {size:,} B is not below this machine's physical RAM ({ram:,} B): the "
                         f"cap would never bind; give less")
    sample = max(manifest.sizes) if manifest.sizes else 0
    need = max(in_flight_bytes(cfg.run, w, sample) for w in cfg.workers)
    if size < need:
        raise UsageError(f"--memory-limit {size:,} B is below what the loader's own reads hold in the page cache at once "
                         f"({need:,} B: a batch of {cfg.run.batch_size} samples of up to {sample:,} B per worker); "
                         f"the loader would thrash on its own batches; give at least that")
    for name in cfg.layouts or manifest.layouts:
        on_disk = (manifest.layouts.get(name) or {}).get("bytes_on_disk") or 0
        if on_disk and on_disk <= size:
            raise UsageError(f"the {name} layout ({on_disk:,} B) already fits in --memory-limit {size:,} B: a capped "
                             f"run would measure the page cache, not storage (the 5x rule: the corpus should be at "
                             f"least 5x the memory, {5 * size:,} B); give a smaller limit or a larger corpus")
    if unsafe := not_fork_safe(cfg.layouts or manifest.layouts):
        raise UsageError(f"the {unsafe[0]} layout cannot be read under --cache capped: the capped regime runs the "
                         f"loader in a child forked inside its memory cgroup, and {unsafe[0]}'s library breaks in a "
                         f"forked child; leave {unsafe[0]} out of --layouts for the capped runs")
    if oversized := oversized_units(cfg.corpus, cfg.layouts or manifest.layouts, size):
        name, unit = oversized[0]
        raise UsageError(f"the {name} layout reads {unit:,} B to give one sample (its design's read unit) and "
                         f"--memory-limit {size:,} B cannot hold one: every batch would read whole units again "
                         f"and again; give a limit above {unit:,} B or leave {name} out of --layouts")
    cgroups.find_parent()  # CgroupUnavailable: what is needed, in one line


@dataclass(frozen=True)
class CacheState:
    residency: float
    ok: bool
    method: str | None
    after: float | None = None


def cold_image(paths, method: str) -> float | bool | None:
    """Where `paths` are on a loop-mounted image (probes.loop_backing), the image file's residency
    after evicting it too (drop_caches has dropped its pages already; else fadvise): its pages serve
    the loop device's reads, and mincore of the corpus's files cannot see them. None when not on
    an image; False when the image cannot be opened here (cold cannot be made or checked)."""
    first = next(iter(probes.expand(paths)), None)
    backing = probes.loop_backing(first) if first is not None else None
    if backing is None:
        return None
    try:
        os.close(os.open(backing, os.O_RDONLY | os.O_NONBLOCK))  # gone, or not readable by this user
        if method != "drop_caches":
            probes.evict([backing], "fadvise")
        return probes.residency([backing]).fraction
    except OSError:
        return False


def cold_advice(corpus) -> str | None:
    """What makes a corpus on a loop-mounted image cold where its cold runs were not (None: not on one)."""
    backing = probes.loop_backing(corpus)
    if backing is None:
        return None
    return (f"the corpus is on a loop-mounted image ({backing}), whose own pages serve its reads: a cold epoch "
            f"needs them evicted too; run as root (--evict drop_caches), or make {backing} readable by this user "
            f"so that --evict fadvise can evict it")


def set_cache(cache: str, paths, evict_method: str) -> CacheState:
    """Put the files in the cache state asked for, with every handle already closed, and check it."""
    if cache == "cold":
        for attempt in range(4):  # readahead still in flight when the handles closed lands after a drop
            method = probes.evict(paths, evict_method)
            res = probes.residency(paths).fraction
            if res <= COLD_MAX:
                break
            time.sleep(0.05 * (attempt + 1))
        if method == "drop_caches":
            probes.evict(paths, method)  # the check itself looked every file up: forget those inodes again
        image = cold_image(paths, method)
        if image is False:  # on a loop image that cannot be evicted or checked from here: not cold
            return CacheState(res, False, method)
        res = max(res, image or 0.0)
        return CacheState(res, res <= COLD_MAX, method)
    if cache == "warm":
        res = probes.residency(paths).fraction
        if res < WARM_MIN:
            res = probes.warm(paths).fraction
        return CacheState(res, res >= WARM_MIN, None)
    return CacheState(probes.residency(paths).fraction, True, None)


def settle(cache: str, paths, evict: str, tries: int = 3):
    """set_cache, again (up to `tries` times) while the state does not hold: on a shared machine
    another user's drop_caches can empty the cache between warming and checking."""
    for _ in range(tries):
        state = set_cache(cache, paths, evict)
        if state.ok:
            break
    return state

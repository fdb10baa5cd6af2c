"""Runs: every layout read the way training reads it, next to the floors, in one process or many.

Every rank runs `run_bench` with its own shard (the Loader takes rank and world); before each
epoch every rank sets and checks the cache state, a barrier starts the epoch together, and
rank 0 gathers the ranks' records and aggregates them (all bytes / the slowest rank's time).

The measurement loop times batches, not samples: one clock read and one small tuple per batch,
so the harness costs a few nanoseconds per sample (the null-loader floor measures it). Per-sample
latencies come from one extra epoch per repeat with the loader's timing on, which is kept out of
the throughput figures.
"""

from __future__ import annotations

import importlib
import os
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from generator.errors import LayoutbenchError, UsageError
from generator.layouts import layout_ids
from generator.manifest import read_manifest
from loaders.registry import readers

from . import probes
from .comm import Comm, SingleProcessComm
from .result import (Checkpoint, EpochRecord, Floors, PreadFloor, RankRecord, Results, Run, RunConfig,
                     SeqFloor)

CACHES = ("cold", "warm", "asis")
COLD_MAX, WARM_MIN = 0.01, 0.99  # residency limits of the cache settings
NAIVE_PREFIX = "naive-"  # a naive baseline's run is named naive-<layout>: what plain library calls give


def naive_name(layout: str) -> str:
    return NAIVE_PREFIX + layout


def reads_of(run_layout: str, naive: bool) -> str:
    """The layout whose files a run reads (its floor): a naive baseline reads its layout's."""
    return run_layout[len(NAIVE_PREFIX):] if naive else run_layout


@dataclass(frozen=True)
class BenchConfig:
    """One `python -m bench run` command."""

    corpus: Path
    output: Path
    layouts: tuple[str, ...] | None = None  # None: every layout the corpus has
    caches: tuple[str, ...] = ("cold", "warm")
    workers: tuple[int, ...] = (0,)
    run: RunConfig = field(default_factory=RunConfig)
    naive: bool = True
    checkpoint_mb: float = 0.0
    checkpoint_every: int = 0
    checkpoint_dir: Path | None = None
    evict: str = "auto"
    progress: bool = False


# ---------------------------------------------------------------- checks

def inside(path: Path, root: Path) -> bool:
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def check_config(cfg: BenchConfig, manifest) -> None:
    """Refuse what would make the numbers untrue or damage the corpus, before any reading."""
    for what, path in (("--output", cfg.output), ("--checkpoint-dir", cfg.checkpoint_dir)):
        if path is not None and inside(path, cfg.corpus):
            raise UsageError(f"{what} {path} is inside the corpus directory {cfg.corpus}: results and "
                             f"checkpoints are never written onto the directory under test; choose another")
    from generator.layouts import get_layout

    for name in cfg.layouts or ():
        if (why := get_layout(name).missing()) is not None:
            raise UsageError(why)
    missing = [name for name in (cfg.layouts or ()) if name not in manifest.layouts]
    if missing:
        raise UsageError(f"layout {missing[0]!r} is not in the corpus {cfg.corpus} (it has "
                         f"{', '.join(manifest.layouts) or 'none'}); generate it or drop it from --layouts")
    for cache in cfg.caches:
        if cache not in CACHES:
            raise UsageError(f"unknown cache setting {cache!r}; choose from {', '.join(CACHES)}")
    if (cfg.checkpoint_mb > 0) != (cfg.checkpoint_every > 0):
        raise UsageError("give --checkpoint-mb and --checkpoint-every together")
    if Path(cfg.output).is_dir():
        raise UsageError(f"--output {cfg.output} is a directory; give a file name, e.g. {Path(cfg.output) / 'results.json'}")
    # Last: these make the directories if missing (as saving would), so only for a run that will go ahead.
    check_writable("--output", Path(cfg.output).parent)
    if cfg.checkpoint_mb > 0:
        check_writable("--checkpoint-dir", Path(cfg.checkpoint_dir or Path(cfg.output).parent))


def check_writable(what: str, directory: Path) -> None:
    """Refuse, before minutes of measuring, a directory the results or checkpoints cannot be
    written to (made if missing, as saving would; probed with a file created and removed)."""
    probe = directory / f".layoutbench-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{what}: cannot write in {directory} ({exc.strerror}); choose another place") from None


# ---------------------------------------------------------------- the measurement loop

@dataclass
class RankEpoch:
    """What one rank measured in one epoch (plain data: it travels to rank 0)."""

    seconds: float
    ttfb_s: float
    samples: int
    nbytes: int
    batch_ns: np.ndarray
    sample_ns: np.ndarray
    indices: np.ndarray


def time_batches(batches, timing: bool = False, t0: float | None = None) -> RankEpoch:
    """Consume one epoch, timing each batch's arrival from `t0` (default: now; pass the time
    before the loader was asked for the epoch, so starting its workers counts). The loop body is
    one clock read, one append and one addition per batch (plus the per-sample times when the
    loader has them on): everything else is done after the epoch."""
    clock = time.perf_counter
    stamps, kept, timed = [], [], []
    stamp, keep, keep_timed = stamps.append, kept.append, timed.append
    nbytes = 0
    t0 = clock() if t0 is None else t0
    if timing:
        for b in batches:
            stamp(clock())
            keep(b.indices)
            nbytes += b.nbytes
            keep_timed(b.sample_seconds)
    else:
        for b in batches:
            stamp(clock())
            keep(b.indices)
            nbytes += b.nbytes
    if not stamps:
        return RankEpoch(0.0, 0.0, 0, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    t = np.asarray(stamps)
    waits = np.diff(t, prepend=t0)
    indices = np.concatenate([np.asarray(k, np.int64).ravel() for k in kept])
    timed = [x for x in timed if x is not None]
    sample_s = np.concatenate([np.asarray(x, np.float64).ravel() for x in timed]) if timed else np.zeros(0)
    return RankEpoch(float(t[-1] - t0), float(t[0] - t0), int(indices.size), int(nbytes),
                     np.round(waits * 1e9).astype(np.int64), np.round(sample_s * 1e9).astype(np.int64), indices)


class NullBatch:
    __slots__ = ("nbytes", "indices", "sample_seconds")

    def __init__(self, batch_size: int, nbytes: int):
        self.nbytes, self.indices, self.sample_seconds = nbytes, np.arange(batch_size), None


def null_batches(samples: int, batch_size: int):
    """A loader that costs nothing: the same prebuilt batch, samples // batch_size times."""
    batch = NullBatch(batch_size, batch_size)
    for _ in range(samples // batch_size):
        yield batch


def null_floor(samples: int, batch_size: int, repeats: int = 3) -> tuple[int, float]:
    """(samples, best seconds) of the harness's own loop over the null loader."""
    best = min(time_batches(null_batches(samples, batch_size)).seconds for _ in range(repeats))
    return samples // batch_size * batch_size, best


# ---------------------------------------------------------------- cache settings

@dataclass(frozen=True)
class CacheState:
    residency: float
    ok: bool
    method: str | None
    after: float | None = None


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
        return CacheState(res, res <= COLD_MAX, method)
    if cache == "warm":
        res = probes.residency(paths).fraction
        if res < WARM_MIN:
            res = probes.warm(paths).fraction
        return CacheState(res, res >= WARM_MIN, None)
    return CacheState(probes.residency(paths).fraction, True, None)


# ---------------------------------------------------------------- one run

class Counters:
    """Process and device counters around one epoch (read while the workers are still alive)."""

    def __init__(self, device: probes.BlockDevice | None):
        self.device = device

    def start(self, pids):
        self.before = probes.sample_processes([0, *pids])
        self.sectors = self.device.sectors_read() if self.device else None

    def stop(self, pids) -> dict:
        after = probes.sample_processes([0, *pids])
        sectors = self.device.sectors_read() - self.sectors if self.device else None
        totals, lost = probes.counters_delta(self.before, after)
        return {**totals, "lost": len(lost), "sectors": sectors}


def open_loader(reader, rc: RunConfig, workers: int, rank: int, timing: bool, naive: bool = False):
    from loaders.pipeline import Loader

    kind = "fork" if rc.worker_kind == "process" else rc.worker_kind
    return Loader(reader, batch_size=rc.batch_size, workers=0 if naive else workers, worker_kind=kind,
                  shuffle=rc.shuffle, seed=rc.seed, prefetch=rc.prefetch, decode=rc.decode or naive,
                  drop_last=rc.drop_last, rank=rank, world=rc.world, timing=timing, naive=naive)


def shard_rank(rank: int, world: int, epoch: int, shift: int) -> int:
    """Which shard a rank reads in an epoch: with a shift, ranks rotate shards (IOR's reorder)."""
    return (rank + epoch * shift) % world


def run_layout(ctx: "Context", layout: str, cache: str, workers: int, repeat: int, naive: bool = False) -> list:
    """One (layout, cache, workers) run for one repeat: its epoch records (rank 0) and checkpoints."""
    from loaders import open_corpus

    rc, comm = ctx.cfg.run, ctx.comm
    reader = open_corpus(ctx.cfg.corpus, reads_of(layout, naive))
    paths = reader.paths()
    # naive baselines: one epoch (no workers to start, so no first epoch to set apart; and slow)
    plan = ([(0, False)] if naive else
            [(e, False) for e in range(rc.epochs)] + ([(rc.epochs, True)] if rc.sample_latency else []))
    loader, records, checkpoints, method = None, [], [], None
    counters = Counters(ctx.device)
    try:
        warm_up_code(reader, rc, naive)
        for epoch, timing in plan:
            rank = shard_rank(comm.rank, comm.size, epoch, rc.shard_shift)
            fresh = (loader is None or cache == "cold" or timing or (rc.shard_shift and comm.size > 1))
            if fresh and loader is not None:
                loader.close()
                loader = None
            if cache == "cold":
                reader.close()  # an open handle or map keeps pages resident
            state = set_cache(cache, paths, ctx.cfg.evict)
            method = state.method or method
            if loader is None:
                loader = open_loader(reader, rc, workers, rank, timing, naive)
                first = True
            comm.barrier()
            counters.start(loader.worker_pids)  # none yet for a fresh pool: its workers count from zero
            t0 = time.perf_counter()  # before epoch(), which starts a fresh loader's workers: in ttfb and wall
            mine = time_batches(loader.epoch(epoch), timing, t0)
            io = counters.stop(loader.worker_pids)
            if cache == "warm":  # did it stay warm? (another user of the machine may drop the cache)
                after = probes.residency(paths).fraction
                state = replace(state, after=after, ok=state.ok and after >= WARM_MIN)
            record = ctx.aggregate(epoch, repeat, first, timing, mine, io, state, len(reader))
            first = False
            if record is not None:
                records.append(record)
                ctx.tick(layout, cache, workers, record)
            every = ctx.cfg.checkpoint_every
            if every and not timing and (epoch + 1) % every == 0 and comm.rank == 0:
                checkpoints.append(write_checkpoint(ctx.checkpoint_path, ctx.cfg.checkpoint_mb, repeat, epoch))
            comm.barrier()
    finally:
        if loader is not None:
            loader.close()
        reader.close()
    return records, checkpoints, method


def warm_up_code(reader, rc: RunConfig, naive: bool) -> None:
    """Run every read path once on a few samples before measuring. Cold means the *data* is not
    cached: the code that reads it is, in training. drop_caches also drops the pages of libraries
    not yet mapped; without this, a cold first epoch would read h5py or lmdb code from disk and
    count it as sample bytes. Pages mapped by this process stay mapped (and fork workers share them)."""
    idx = np.arange(min(rc.batch_size, len(reader)))
    if naive:
        reader.naive_batch(idx)
        reader.close_naive()
        return
    reader.read_many(idx)
    reader.decode(reader.read(int(idx[0])), int(idx[0]))
    reader.read_batch(idx)
    reader.close()


def write_checkpoint(path: Path, mb: float, repeat: int, epoch: int) -> Checkpoint:
    """Write `mb` MB and fsync, as a training job saving its model would; timed, then removed."""
    total = int(mb * 1e6)
    block = np.random.default_rng(epoch).integers(0, 256, min(total, 4 << 20), dtype=np.uint8)
    t0 = time.perf_counter()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            left = total
            while left:
                left -= os.write(fd, block[: min(left, block.size)])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:  # a full disk, say: no half checkpoint left behind, one clear line
        path.unlink(missing_ok=True)
        raise LayoutbenchError(f"writing a {mb:g} MB checkpoint to {path} failed ({exc.strerror}); free space or "
                               f"give --checkpoint-dir on another disk, and rerun") from None
    seconds = time.perf_counter() - t0
    path.unlink()
    return Checkpoint(repeat, epoch, total, seconds)


PREAD_MIN_SLOTS = 100


def check_indices(index_lists, n: int, may_drop: int, epoch: int) -> None:
    """Every index exactly once per epoch across workers and ranks (drop_last may leave out at
    most `may_drop`: a partial batch per rank): a skipped or doubled sample would make the
    throughput untrue, so fail loudly."""
    everything = np.concatenate([np.asarray(i, np.int64).ravel() for i in index_lists])
    outside = int(((everything < 0) | (everything >= n)).sum())
    hits = np.bincount(everything[(everything >= 0) & (everything < n)], minlength=n)
    doubled, missing = int((hits > 1).sum()), int((hits == 0).sum())
    if outside or doubled or missing > may_drop:
        raise LayoutbenchError(f"epoch {epoch}: the loader delivered {everything.size:,} indices for {n:,} samples "
                               f"({missing:,} missing, {doubled:,} more than once, {outside:,} out of range); "
                               f"a throughput over a wrong epoch would be untrue")


# ---------------------------------------------------------------- the whole command

class Context:
    """What every run of one command shares: config, comm, device, progress, rank-0 aggregation."""

    def __init__(self, cfg: BenchConfig, comm: Comm, bar=None):
        self.cfg, self.comm, self.bar = cfg, comm, bar
        self.device = probes.block_device(cfg.corpus)
        self.host = socket.gethostname()
        ckdir = Path(cfg.checkpoint_dir or Path(cfg.output).parent)
        self.checkpoint_path = ckdir / f".layoutbench-checkpoint-{os.getpid()}.bin"

    def aggregate(self, epoch, repeat, first, timing, mine: RankEpoch, io, state: CacheState, n) -> EpochRecord | None:
        """Gather every rank's epoch on rank 0 and make one record (None on other ranks)."""
        mine_msg = {"rank": self.comm.rank, "host": self.host, "seconds": mine.seconds, "ttfb_s": mine.ttfb_s,
                    "samples": mine.samples, "bytes": mine.nbytes, "batch_ns": mine.batch_ns,
                    "sample_ns": mine.sample_ns, "indices": mine.indices, "residency": state.residency,
                    "residency_after": state.after,
                    "cache_ok": state.ok, **io}
        got = self.comm.gather(mine_msg)
        if got is None:
            return None
        may_drop = len(got) * (self.cfg.run.batch_size - 1) if self.cfg.run.drop_last else 0
        check_indices([g["indices"] for g in got], n, may_drop, epoch)
        return EpochRecord(
            repeat=repeat, epoch=epoch, first=first, timing=timing,
            samples=sum(int(g["samples"]) for g in got), payload_bytes=sum(int(g["bytes"]) for g in got),
            wall_s=max(float(g["seconds"]) for g in got), ttfb_s=max(float(g["ttfb_s"]) for g in got),
            batch_ns=tuple(int(x) for g in got for x in np.asarray(g["batch_ns"]).tolist()),
            sample_ns=tuple(int(x) for g in got for x in np.asarray(g["sample_ns"]).tolist()),
            cpu_s=round(sum(float(g["cpu_s"]) for g in got), 6),
            rchar=sum(int(g["rchar"]) for g in got), read_bytes=sum(int(g["read_bytes"]) for g in got),
            syscr=sum(int(g["syscr"]) for g in got), device_sectors_read=got[0]["sectors"],
            residency_before=float(got[0]["residency"]),
            residency_after=None if got[0]["residency_after"] is None else float(got[0]["residency_after"]),
            cache_ok=all(bool(g["cache_ok"]) for g in got),
            indices_ok=True, lost_processes=sum(int(g["lost"]) for g in got),
            ranks=tuple(RankRecord(int(g["rank"]), str(g["host"]), float(g["seconds"]), int(g["samples"]),
                                   int(g["bytes"])) for g in got) if len(got) > 1 else ())

    def tick_floor(self, what: str):
        if self.bar is not None:
            self.bar.set_postfix_str(f"floor: {what}", refresh=False)
            self.bar.update(1)

    def tick(self, layout, cache, workers, record: EpochRecord):
        if self.bar is not None:
            self.bar.set_postfix_str(f"{layout} {cache} w{workers}: {record.samples_per_s:,.0f} samples/s", refresh=False)
            self.bar.update(1)


def measure_floors(ctx: Context, manifest) -> Floors:
    """The floors of this corpus, on rank 0 while the other ranks wait (they share the page cache)."""
    cfg = ctx.cfg
    if ctx.comm.rank != 0:
        return Floors()
    from loaders import open_corpus

    caches = ["cold", "warm"] if "asis" in cfg.caches else [c for c in ("cold", "warm") if c in cfg.caches]
    seq = []
    all_paths = {}
    into = cfg.run.batch_size * int(np.mean(manifest.sizes))  # the floor, too, puts one batch's bytes in memory
    for layout in cfg.layouts:
        reader = open_corpus(cfg.corpus, layout)
        # listed before evicting: a cold floor must look its files up on disk, as the loader does
        all_paths[layout] = probes.expand(reader.paths())
        reader.close()
        for cache in caches:
            state = set_cache(cache, all_paths[layout], cfg.evict)
            # a floor is the best the machine does: one read() pass cold (a second would be warm); warm,
            # the best of 3 passes of read() and of 3 copying out of a map (see probes.copy_sequential)
            ways = [probes.read_sequential] if cache == "cold" else [probes.read_sequential, probes.copy_sequential] * 3
            nbytes, seconds, files = min((way(all_paths[layout], into=into) for way in ways), key=lambda t: t[1])
            seq.append(SeqFloor(layout, cache, nbytes, seconds, files, state.residency, into))
            ctx.tick_floor(f"seq {layout} {cache}")
    # pread: the largest single file the layouts read, at the mean sample size; not measured when
    # that file holds only a few of the samples (a loose-files-only run): one read is no floor
    biggest = max((p for ps in all_paths.values() for p in ps), key=os.path.getsize)
    sample = int(np.mean(manifest.sizes))
    slots = os.path.getsize(biggest) // max(1, sample)
    pread = []
    for cache in caches if slots >= min(PREAD_MIN_SLOTS, manifest.spec.count) else ():
        state = set_cache(cache, [biggest], cfg.evict)
        r = probes.pread_random(biggest, sample, seed=cfg.run.seed)
        pread.append(PreadFloor(cache, str(biggest), r.sample_bytes, r.reads, r.seconds,
                                tuple(round(x * 1e9) for x in r.latencies_s), state.residency))
        ctx.tick_floor(f"pread {cache}")
    mbytes, msec = probes.memcpy_bandwidth()
    nsamples, nsec = null_floor(max(manifest.spec.count, 100_000), cfg.run.batch_size)
    ctx.tick_floor("memcpy, null loader")
    return Floors(tuple(seq), tuple(pread), mbytes, msec, nsamples, nsec, cfg.run.batch_size)


def metadata(cfg: BenchConfig, comm: Comm) -> dict:
    from generator.codec import CODEC_LIBRARIES
    from generator.layouts import get_layout

    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    ram = next((int(line.split()[1]) * 1024 for line in _read_lines("/proc/meminfo")
                if line.startswith("MemTotal:")), None)
    dev = probes.block_device(cfg.corpus)
    fs = probes.filesystem(cfg.corpus) | {"device": dev.name if dev else None}
    if dev:
        ra = Path(dev.stat_path).parent / "queue" / "read_ahead_kb"
        fs["read_ahead_kb"] = int(ra.read_text()) if ra.exists() else None
    return {
        "host": {"name": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "ram_bytes": ram,
                 "kernel": platform.release(), "platform": platform.platform(), "root": os.geteuid() == 0},
        "filesystem": fs,
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     **{name: str(importlib.import_module(name).__version__) for name in CODEC_LIBRARIES},
                     **{k: v for layout in cfg.layouts for k, v in get_layout(layout).versions().items()}},
        "command": (["python", "-m", "bench"] if sys.argv[0].endswith("__main__.py") else sys.argv[:1]) + sys.argv[1:],
        "config": {"corpus": str(cfg.corpus), "output": str(cfg.output), "layouts": list(cfg.layouts),
                   "caches": list(cfg.caches), "workers": list(cfg.workers), "naive": cfg.naive,
                   "checkpoint_mb": cfg.checkpoint_mb, "checkpoint_every": cfg.checkpoint_every,
                   "evict": cfg.evict, "run": asdict(cfg.run)},
        "ranks": comm.size,
    }


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def plan_runs(cfg: BenchConfig, manifest) -> list[tuple[str, str, int, bool]]:
    """(layout, cache, workers, naive) in the order they run within one repeat: every layout at
    one setting back to back, so layouts are compared over the same minutes of a noisy machine."""
    out = []
    for cache in cfg.caches:
        for workers in cfg.workers:
            out.extend((layout, cache, workers, False) for layout in cfg.layouts)
        if cfg.naive:
            out.extend((naive_name(layout), cache, 0, True) for layout in cfg.layouts
                       if readers()[layout].naive)
    return out


def run_bench(cfg: BenchConfig, comm: Comm | None = None) -> Results | None:
    """Floors, then every run for every repeat. Returns the results on rank 0 (None elsewhere)."""
    from generator.codec import CODEC_LIBRARIES
    from generator.layouts import get_layout

    comm = comm or SingleProcessComm()
    cfg = replace(cfg, run=replace(cfg.run, world=comm.size))
    manifest = read_manifest(cfg.corpus)
    check_config(cfg, manifest)
    if cfg.layouts is None:
        cfg = replace(cfg, layouts=tuple(name for name in layout_ids() if name in manifest.layouts))
    # imported now: a cold first epoch must not read their libraries' code as sample bytes
    for name in CODEC_LIBRARIES:
        importlib.import_module(name)
    for layout in cfg.layouts:
        get_layout(layout).preload()
    runs = plan_runs(cfg, manifest)
    rc = cfg.run
    per_run = rc.epochs + (1 if rc.sample_latency else 0)
    total = rc.repeats * sum(1 if naive else per_run for *_, naive in runs)
    floor_steps = len(cfg.layouts) * 2 + 3
    bar = None
    if comm.rank == 0 and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total + floor_steps, unit="epoch", dynamic_ncols=True, leave=False, file=sys.stderr)
    ctx = Context(cfg, comm, bar)
    try:
        floors = measure_floors(ctx, manifest)
        comm.barrier()
        gathered: dict[tuple, dict] = {}
        for repeat in range(rc.repeats):
            for layout, cache, workers, naive in runs:
                records, checkpoints, method = run_layout(ctx, layout, cache, workers, repeat, naive)
                slot = gathered.setdefault((layout, cache, workers, naive),
                                           {"epochs": [], "checkpoints": [], "method": None})
                slot["epochs"] += records
                slot["checkpoints"] += checkpoints
                slot["method"] = slot["method"] or method
    finally:
        if bar is not None:
            bar.close()
    if comm.rank != 0:
        return None
    out_runs = []
    for (layout, cache, workers, naive), slot in gathered.items():
        config = replace(rc, workers=workers, **(dict(epochs=1, sample_latency=False) if naive else {}))
        out_runs.append(Run(layout, "naive" if naive else "loader", reads_of(layout, naive), cache,
                            slot["method"], config, tuple(slot["epochs"]), tuple(slot["checkpoints"])))
    notes = cache_notes(out_runs, f"{manifest.spec.preset or 'custom'}-{manifest.spec.count}")
    corpus = {"path": str(Path(cfg.corpus).resolve()), "spec": manifest.spec.to_dict(),
              "payload_bytes": int(sum(manifest.sizes)),
              "layouts": {k: v for k, v in manifest.layouts.items() if k in cfg.layouts}}
    return Results(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), metadata(cfg, comm), corpus, floors,
                   tuple(out_runs), tuple(notes))




def cache_notes(runs, corpus: str) -> list[str]:
    """Say, never hide, when a cache setting did not hold."""
    notes = []
    for r in runs:
        what = f"{corpus} {r.layout} {r.cache} w{r.config.workers}"
        bad = [e for e in r.epochs if not e.cache_ok]
        if bad:
            if r.cache == "cold":
                seen = f"residency up to {max(e.residency_before for e in bad):.1%} before the epoch"
            else:
                low = min(min(e.residency_before, 1.0 if e.residency_after is None else e.residency_after) for e in bad)
                seen = f"residency down to {low:.1%} before or after the epoch"
            notes.append(f"{what}: {len(bad)} of {len(r.epochs)} epochs were not {r.cache} ({seen}; another "
                         f"process may have read or dropped the cache); the run is marked cache_ok=false")
        if any(e.lost_processes for e in r.epochs):
            notes.append(f"{what}: a worker exited before its I/O counters were read; rchar/read_bytes/cpu of "
                         f"those epochs are incomplete")
    return notes

"""Results: immutable records of raw measurements, versioned JSON, summaries computed from them.

    {"format": "layoutbench-results", "version": 3, "created": ..., "metadata": {host, cpu, ram,
     kernel, filesystem, versions, command}, "corpus": {path, spec, layouts}, "floors": {...},
     "runs": [{layout, cache, storage, samples_per_s, mb_per_s, ttfb_s, p99_ms, floor_ratio, ... summary,
               "config": {...}, "epochs": [raw per-epoch records, each with its parts
               (capped, h2d, split, order) or null], "checkpoints": [...]}],
     "notes": [...]}

The summary fields of each run are recomputed from the raw records on load, so a results file
can never claim a figure its own measurements do not give. Latencies are integer nanoseconds.
A file of another format, or of a version with no migration to this one, is refused.

Version history (each bump adds a migration to MIGRATIONS, which loads the older file as this
version would have written it, or refuses it naming what it lacks):
- 1: the first format (runs of files/hdf5/lmdb and naive baselines, cold/warm/asis). Added since,
  all with defaults (older files load as they are): floors at the runs' concurrency (Floors.at,
  memcpy_at, fio), emulated compute and AU (RunConfig.compute_*, warmup; EpochRecord.compute_s, au),
  the capped regime's per-epoch fields (resident bytes, the cgroup's counters, hit_ratio,
  expected_hit_ratio, read_amplification, read_amplification_pages) and each run's memory_bytes,
  corpus_bytes and cap, Run.loader ("ours", or "torch" for torch.utils.data.DataLoader
  runs) and Run.dataloader (its settings); EpochRecord.h2d_* (the GPU copy stage); Floors.h2d_*
  (one large pinned host-to-device copy).
- 2: the timing epochs split each sample's time into read and decode (EpochRecord.read_ns,
  decode_ns per sample; read_cpu_s, decode_cpu_s summed), with the timing's own cost beside them
  (Floors.split_*); each run's summary says what bounded it (bound_by, SPLIT_RULE). Migration
  from 1: no split (empty / None: "not measured"); a naive baseline is marked decoded (it always
  decoded; v1 wrote the run's --no-decode); and the per-sample latencies of a no-decode loader
  run are dropped, with a note: v1's timing epoch decoded every sample even under --no-decode,
  so they measured a read+decode the run's other epochs never did.
- 3: an epoch record has shape: its core fields, and nested optional parts for what only some
  epochs have: `capped` (CappedEpoch: the capped regime's resident bytes, cgroup and hit
  counters), `h2d` (DeviceCopy: the GPU copy stage), `split` (Split: a timing epoch's read/decode
  split) and `order` (Order: the order's randomness); Run.storage. Migration from 2: the flat
  fields of each part move into it (a part none of whose fields was set is None), values unchanged.
  Later, within version 3: the optional part `s3` (S3Epoch: an S3 run's requests), and
  EpochRecord.cache_drops (page-cache drops by other processes during the epoch); files
  without them load with None.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from generator.errors import LayoutbenchError, UsageError
from loaders.pipeline import WORKER_KINDS
from loaders.sampler import MODES as SAMPLER_MODES
from loaders.stages import BOUND_RATIO, bound_by
from generator.safeio import FileRefused, read_regular

from . import stats
from .outputs import RESULTS, write_output
from .spec import LOADER_KINDS, REGIMES, STORAGES, RunSpec

FORMAT = "layoutbench-results"
VERSION = 3
MAX_BYTES = 1 << 30  # a results file larger than this is not one bench run wrote
# version -> a function taking that version's JSON object and returning the next version's
MIGRATIONS: dict[int, typing.Callable[[dict], dict]] = {}


class ResultsError(UsageError):
    """A results file that is missing, not ours, damaged or of another version (exit 2)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides how a run reads; two runs compare only if these are equal."""

    batch_size: int = 32
    workers: int = 0
    worker_kind: str = "thread"
    shuffle: str = "shuffle"
    decode: bool = True
    prefetch: int = 2
    seed: int = 0
    epochs: int = 2
    repeats: int = 1
    drop_last: bool = False
    world: int = 1
    shard_shift: int = 0
    sample_latency: bool = True  # one extra epoch per repeat with per-sample timing on
    # emulated compute (bench/results/au.py): spent by the consumer after each batch while the loader prefetches
    compute_ms: float = 0.0  # per batch
    compute_ms_per_sample: float = 0.0  # plus this per sample of the batch
    compute_busy: bool = False  # busy-wait instead of sleep (finer below a millisecond; holds a core and the GIL)
    warmup: int = 0  # repeats run first and discarded (MLPerf's warm-up run); `repeats` are the kept ones


@dataclass(frozen=True)
class RankRecord:
    """One rank's share of an epoch (kept only when there are several ranks)."""

    rank: int
    host: str
    wall_s: float
    samples: int
    payload_bytes: int


@dataclass(frozen=True)
class CappedEpoch:
    """What the capped regime measured around one epoch (bench.run.capped.Capped)."""

    # bytes of the layout's files in the page cache (mincore), just before and just after
    resident_bytes_before: int
    resident_bytes_after: int
    # the memory cgroup's own counters: page cache and rss at the epoch's end, peak usage during
    # it, limit hits (v1 failcnt, v2 events max) and OOM kills during it (None: not kept by this kernel)
    cgroup_cache_bytes: int | None = None
    cgroup_rss_bytes: int | None = None
    cgroup_peak_bytes: int | None = None
    cgroup_limit_hits: int | None = None
    cgroup_oom_kills: int | None = None
    # page-cache hits probed at read time (bench.probe.hits): payload bytes served without a device
    # read, the pages that had to come from the device, and the probe's own time (None: the probe
    # did not see every payload byte of the epoch)
    hit_bytes: int | None = None
    miss_page_bytes: int | None = None
    probe_s: float | None = None
    hit_ratio: float | None = None  # hit_bytes / payload_bytes
    expected_hit_ratio: float | None = None  # resident before the epoch / the files: what the cache could serve at most
    read_amplification: float | None = None  # read_bytes / (payload_bytes - hit_bytes)
    read_amplification_pages: float | None = None  # read_bytes / miss_page_bytes (page granularity)
    # the loader's own memory through the epoch: the group's usage less the page cache of files,
    # sampled every 10 ms (bench.run.capped.OwnSampler): least, median, most (None: older files)
    own_min_bytes: int | None = None
    own_median_bytes: int | None = None
    own_max_bytes: int | None = None
    # the page cache the epoch could have: SIZE, plus what of the own memory its limit was set for
    # the loader left unused at its median (an epoch past 1.1 x this is not capped; None: older files)
    room_bytes: int | None = None


@dataclass(frozen=True)
class DeviceCopy:
    """--device: each batch copied host to device inside the epoch's timing."""

    bytes: int
    transfers: int  # batches copied
    seconds: float  # in the copies, each through its synchronize
    stage_s: float = 0.0  # copying batches into the pinned staging buffers


@dataclass(frozen=True)
class Split:
    """A timing epoch's samples, each split into read and decode: wall time per sample in the order
    of sample_ns (sample_ns = read_ns + decode_ns), and the thread CPU seconds of each summed over
    the samples (loaders.stages says what each counts)."""

    read_ns: tuple[int, ...]
    decode_ns: tuple[int, ...]
    read_cpu_s: float
    decode_cpu_s: float


@dataclass(frozen=True)
class Order:
    """How random an epoch's order was (loaders.sampler.order_randomness)."""

    displacement: float | None = None  # mean |position - stored position|, over a full shuffle's
    same_shard: float | None = None  # share of consecutive samples from one shard (streaming layouts)
    same_shard_shuffled: float | None = None  # that share under a full shuffle


@dataclass(frozen=True)
class S3Epoch:
    """An S3 run's requests during one epoch (bench.run.s3storage), every rank's summed: the store
    client's own counters (generator.objectstore.store.RequestStats)."""

    gets: int
    get_bytes: int  # bytes the GETs returned (payloads, and what the layout reads beside them)
    retries: int  # requests retried (throttling, dropped connections): an epoch that needed them
    heads: int = 0
    lists: int = 0
    ttfb_p50_s: float | None = None  # time to first byte of the GETs
    ttfb_p99_s: float | None = None
    inflight: int = 0  # requests in flight at most per process (the reader's pool)
    # layouts staged to a local copy before the run (lmdb, sqlite: loaders.s3.staged): what the
    # staging fetched and took, the same in each epoch of the run (its reads are then local)
    staged_bytes: int = 0
    staged_s: float | None = None


@dataclass(frozen=True)
class EpochRecord:
    """One epoch, as rank 0 aggregates it: the slowest rank's time, every rank's bytes."""

    repeat: int
    epoch: int  # the sampler's epoch (a new order each)
    first: bool  # first epoch of its loader: worker start-up is inside ttfb and wall time
    timing: bool  # per-sample timing on: the latency epoch, not counted in throughput
    samples: int
    payload_bytes: int
    wall_s: float
    ttfb_s: float
    batch_ns: tuple[int, ...]  # time the consumer waited for each batch (first = ttfb)
    sample_ns: tuple[int, ...]  # per-sample read+decode time (timing epochs only)
    cpu_s: float  # user+system of this process and its worker processes
    rchar: int  # /proc/<pid>/io summed over the same processes
    read_bytes: int
    syscr: int
    device_sectors_read: int | None  # whole block device, 512-byte sectors (other users count too)
    residency_before: float  # fraction of the layout's bytes in the page cache just before
    residency_after: float | None  # warm runs: just after (someone else may drop the cache meanwhile)
    cache_ok: bool  # the cache setting held (cold <= 1% before; warm >= 99% before and after)
    indices_ok: bool  # every index read exactly once across workers and ranks
    lost_processes: int = 0  # processes whose counters could not be read (counters incomplete)
    ranks: tuple[RankRecord, ...] = ()
    compute_s: float = 0.0  # emulated compute spent by the consumer(s), summed over ranks
    au: float | None = None  # accelerator utilization (bench/results/au.py): compute / running time; None without compute
    capped: CappedEpoch | None = None  # the capped regime's part (None elsewhere)
    h2d: DeviceCopy | None = None  # --device: the GPU copy stage (None: no copy stage)
    split: Split | None = None  # timing epochs: each sample's read and decode (None: not measured)
    order: Order | None = None  # how random the order was (None: not measured)
    s3: S3Epoch | None = None  # S3 runs: the store's requests (None: not an S3 run)
    # drops of the page cache by other processes during the epoch, as the kernel counts them
    # (bench.probe.drops; the most any rank's host saw); None: not counted (no counter here, older files)
    cache_drops: int | None = None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / self.wall_s / 1e6 if self.wall_s > 0 else 0.0


@dataclass(frozen=True)
class Checkpoint:
    repeat: int
    after_epoch: int
    bytes: int
    seconds: float  # write + fsync


@dataclass(frozen=True)
class Run:
    layout: str  # what was measured: a layout id, or a naive baseline (naive-files, naive-hdf5)
    kind: str  # "loader" (ours), "naive" or "torch" (RunSpec.kind)
    reads: str  # the layout whose files it reads (its floor)
    cache: str  # cold, warm or asis
    evict_method: str | None  # drop_caches or fadvise (cold runs)
    config: RunConfig
    epochs: tuple[EpochRecord, ...]
    checkpoints: tuple[Checkpoint, ...] = ()
    memory_bytes: int | None = None  # memory available to the run: host RAM, or the cap's page cache (capped)
    corpus_bytes: int | None = None  # bytes of the files it reads
    # capped: {"size", "own_bytes", "limit", "version", "cgroup", "failure"} (see bench.probe.regimes)
    cap: dict | None = None
    loader: str = "ours"  # which loader read it: ours (loaders.pipeline.Loader) or torch (DataLoader)
    dataloader: dict | None = None  # torch runs: the DataLoader's settings (dataset, num_workers, ...)
    device: str | None = None  # --device: where each batch was copied (None: no copy stage)
    storage: str = "local"  # where the corpus's bytes were read from (bench.results.spec.STORAGES)

    @property
    def spec(self) -> RunSpec:
        """The run's identity, as bench run planned it."""
        loader = {"loader": "ours", "naive": "naive", "ecosystem": "ecosystem"}.get(self.kind)
        if loader is None:  # a DataLoader run: its dataset is among its recorded settings
            loader = f"torch-{(self.dataloader or {}).get('dataset', 'sample')}"
        return RunSpec(self.reads, loader, self.storage, self.cache, self.config.workers,
                       self.config.decode or self.kind != "loader")


@dataclass(frozen=True)
class SeqFloor:
    """Sequential 4 MiB reads of every file of a layout: the floor for the same bytes. They land in
    a reused buffer of `into_bytes` (one batch; 0 in older files: one 4 MiB buffer)."""

    layout: str
    cache: str
    bytes: int
    seconds: float
    files: int
    residency_before: float
    into_bytes: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class PreadFloor:
    """pread of one sample's size at random sample-sized slots of one file."""

    cache: str
    path: str
    sample_bytes: int
    reads: int
    seconds: float
    latency_ns: tuple[int, ...]
    residency_before: float

    @property
    def samples_per_s(self) -> float:
        return self.reads / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class StreamFloor:
    """A floor at a loader's concurrency (bench/probe/floors.py): `streams` processes (a run's workers,
    at least 1, times the ranks on the node), each with `depth` reads in flight, reading every
    byte of a layout's files: `seq-read` (in order, read()), `seq-map` (in order, copied out of a
    map) or `rand` (every sample-sized piece once, in a random order)."""

    layout: str
    cache: str
    way: str
    streams: int
    depth: int
    bytes: int
    reads: int
    seconds: float
    residency_before: float
    sample_bytes: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class MemcpyFloor:
    """`threads` threads copying memory at once (each its own buffers)."""

    threads: int
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class FioFloor:
    """fio's random reads of a layout's files (bench/probe/fio.py), beside our random-read floor of the same
    layout, cache state and concurrency; iops and MB/s are fio's own figures."""

    layout: str
    cache: str
    jobs: int
    iodepth: int
    engine: str
    block_bytes: int
    ios: int
    bytes: int
    seconds: float
    iops: float
    mb_per_s: float
    residency_before: float
    version: str = ""


@dataclass(frozen=True)
class Floors:
    seq: tuple[SeqFloor, ...] = ()
    pread: tuple[PreadFloor, ...] = ()
    memcpy_bytes: int = 0
    memcpy_s: float = 0.0
    null_samples: int = 0  # the harness's own loop over a loader that costs nothing
    null_s: float = 0.0
    null_batch_size: int = 0
    at: tuple[StreamFloor, ...] = ()  # floors at the runs' concurrencies (absent in older files)
    memcpy_at: tuple[MemcpyFloor, ...] = ()
    fio: tuple[FioFloor, ...] = ()

    def bound(self, layout: str, cache: str, streams: int) -> StreamFloor | None:
        """The fastest floor of `layout`'s files at `cache` and `streams` streams: what a loader
        at that concurrency must stay under. None when not measured (older files)."""
        fits = [f for f in self.at if f.layout == layout and f.cache == cache and f.streams == streams]
        return max(fits, key=lambda f: f.mb_per_s, default=None)

    def memcpy_for(self, threads: int) -> float | None:
        m = next((m for m in self.memcpy_at if m.threads == threads), None)
        return m.mb_per_s if m else self.memcpy_mb_per_s
    h2d_bytes: int = 0  # --device: one large copy from pinned memory to the device (0: not measured)
    h2d_s: float = 0.0
    h2d_device: str | None = None
    # the per-sample timing's own cost (loaders.stages.split_overhead, 0: not measured): the timed
    # and untimed loop over a reader that costs nothing, and each split column summed over it (the
    # floor under that column's figures)
    split_samples: int = 0
    split_timed_s: float = 0.0
    split_plain_s: float = 0.0
    split_read_s: float = 0.0
    split_decode_s: float = 0.0
    split_read_cpu_s: float = 0.0
    split_decode_cpu_s: float = 0.0

    @property
    def split_us_per_sample(self) -> float | None:
        """Microseconds the timing adds to each sample of a timing epoch (None: not measured)."""
        return (self.split_timed_s - self.split_plain_s) / self.split_samples * 1e6 if self.split_samples else None

    def split_bias_us(self) -> dict | None:
        """Microseconds per sample each split column measures over a reader that costs nothing: the
        floor under its figures (None: not measured)."""
        if not self.split_samples:
            return None
        return {k: getattr(self, f"split_{k[:-2]}_s") / self.split_samples * 1e6
                for k in ("read_s", "decode_s", "read_cpu_s", "decode_cpu_s")}

    def seq_for(self, layout: str, cache: str) -> SeqFloor | None:
        return next((f for f in self.seq if f.layout == layout and f.cache == cache), None)

    def pread_for(self, cache: str) -> PreadFloor | None:
        return next((f for f in self.pread if f.cache == cache), None)

    @property
    def null_us_per_sample(self) -> float | None:
        return self.null_s / self.null_samples * 1e6 if self.null_samples else None

    @property
    def memcpy_mb_per_s(self) -> float | None:
        return self.memcpy_bytes / self.memcpy_s / 1e6 if self.memcpy_s else None

    @property
    def h2d_gb_per_s(self) -> float | None:
        return self.h2d_bytes / self.h2d_s / 1e9 if self.h2d_s else None


@dataclass(frozen=True)
class Results:
    created: str
    metadata: dict
    corpus: dict
    floors: Floors
    runs: tuple[Run, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "created": self.created, "metadata": self.metadata,
                "corpus": self.corpus, "floors": _dump(self.floors) | floor_summary(self.floors),
                "runs": [summarize(r, self.floors, self.corpus) | _dump(r) for r in self.runs],
                "notes": list(self.notes)}

    def save(self, path, overwrite: bool = False) -> None:
        """Write the results to `path`, atomically; a file there that is not a results file of ours
        is never replaced unless `overwrite` (bench.results.outputs)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"
        try:  # never write a file that report, compare and plan would refuse: whatever a run accepts loads
            Results.from_dict(json.loads(text), str(path))
        except ResultsError as exc:
            raise LayoutbenchError(f"the results of this run would not load back ({exc}); nothing was written: "
                                   f"report this as a bug") from None
        write_output(path, text, RESULTS, overwrite)

    @classmethod
    def from_dict(cls, data, where: str = "results") -> "Results":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ResultsError(f"{where} is not a layoutbench results file (make one with python -m bench run)")
        data = migrate(data, where)
        _check_facts(data.get("corpus"), data.get("metadata"), where)
        return _load(cls, data, where)

    @classmethod
    def load(cls, path) -> "Results":
        try:
            data = json.loads(read_regular(path, MAX_BYTES))  # a FIFO or /dev/zero: refused, never read
        except FileNotFoundError:
            raise ResultsError(f"{path}: no such results file") from None
        except FileRefused as exc:
            raise ResultsError(f"{exc}: give a results file written by python -m bench run") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ResultsError(f"{path} cannot be read as JSON ({exc})") from None
        return cls.from_dict(data, str(path))


def _v1_to_v2(data: dict) -> dict:
    """Version 1 -> 2 (see the version history): no read/decode split; naive baselines decoded;
    a no-decode loader run's per-sample latencies (measured with decoding) dropped, with a note."""
    runs, dropped = [], []
    for run in data.get("runs") or []:
        if not isinstance(run, dict):
            runs.append(run)
            continue
        run = dict(run)
        config = dict(run["config"]) if isinstance(run.get("config"), dict) else run.get("config")
        undecoded = isinstance(config, dict) and config.get("decode") is False
        if undecoded and run.get("kind") == "naive":
            config["decode"] = True
            run["config"] = config
        epochs = []
        for e in run.get("epochs") or []:
            if isinstance(e, dict):
                e = {**e, "read_ns": [], "decode_ns": [], "read_cpu_s": None, "decode_cpu_s": None}
                if undecoded and run.get("kind") == "loader" and e.get("timing") and e.get("sample_ns"):
                    e["sample_ns"] = []
                    dropped.append(f"{run.get('layout')} {run.get('cache')}")
            epochs.append(e)
        if isinstance(run.get("epochs"), list):
            run["epochs"] = epochs
        runs.append(run)
    if isinstance(data.get("runs"), list):
        data["runs"] = runs
    if dropped:
        notes = list(data.get("notes") or []) if isinstance(data.get("notes"), list) else data.get("notes")
        if isinstance(notes, list):
            notes.append(f"migrated from results version 1: the per-sample latencies of the no-decode runs "
                         f"({', '.join(dict.fromkeys(dropped))}) are left out: version 1 decoded every sample of "
                         f"the timing epoch even under --no-decode")
            data["notes"] = notes
    data["version"] = 2
    return data


MIGRATIONS[1] = _v1_to_v2

# version 3's nested parts of an epoch record: part -> its fields in version 2
_V3_PARTS = {
    "capped": ("resident_bytes_before", "resident_bytes_after", "cgroup_cache_bytes", "cgroup_rss_bytes",
               "cgroup_peak_bytes", "cgroup_limit_hits", "cgroup_oom_kills", "hit_bytes", "miss_page_bytes",
               "probe_s", "hit_ratio", "expected_hit_ratio", "read_amplification", "read_amplification_pages"),
    "h2d": ("h2d_bytes", "h2d_transfers", "h2d_s", "h2d_stage_s"),
    "split": ("read_ns", "decode_ns", "read_cpu_s", "decode_cpu_s"),
    "order": ("displacement", "same_shard", "same_shard_shuffled"),
}


def _v2_to_v3(data: dict) -> dict:
    """Version 2 -> 3 (see the version history): each epoch's flat optional fields into its parts."""
    for run in data.get("runs") or []:
        if not isinstance(run, dict) or not isinstance(run.get("epochs"), list):
            continue
        run["epochs"] = [_nest_v2_epoch(e) if isinstance(e, dict) else e for e in run["epochs"]]
    data["version"] = 3
    return data


def _nest_v2_epoch(e: dict) -> dict:
    e = dict(e)
    for part, keys in _V3_PARTS.items():
        flat = {k: e.pop(k) for k in keys if k in e}
        # version 2 wrote None (capped, order, split's CPU), [] (split) or 0 (h2d) where there was no part
        present = [k for k, v in flat.items() if v is not None and v != [] and not (part == "h2d" and v == 0)]
        if not present:
            e[part] = None
        elif part == "h2d":
            e[part] = {"bytes": flat.get("h2d_bytes", 0), "transfers": flat.get("h2d_transfers", 0),
                       "seconds": flat.get("h2d_s", 0.0), "stage_s": flat.get("h2d_stage_s", 0.0)}
        elif part == "split":
            e[part] = {"read_ns": flat.get("read_ns", []), "decode_ns": flat.get("decode_ns", []),
                       "read_cpu_s": flat.get("read_cpu_s") or 0.0, "decode_cpu_s": flat.get("decode_cpu_s") or 0.0}
        elif part == "capped":
            e[part] = {"resident_bytes_before": 0, "resident_bytes_after": 0, **{k: v for k, v in flat.items()
                                                                                 if v is not None}}
        else:
            e[part] = flat
    return e


MIGRATIONS[2] = _v2_to_v3


def migrate(data: dict, where: str) -> dict:
    """`data` brought to VERSION through MIGRATIONS, one version at a time; ResultsError when a
    version has no way here (newer than this layoutbench, or unknown)."""
    version = data.get("version")
    while version != VERSION:
        step = MIGRATIONS.get(version) if type(version) is int else None
        if step is None:
            raise ResultsError(f"{where} has results version {version!r}; this layoutbench reads versions "
                               f"{', '.join(map(str, sorted({*MIGRATIONS, VERSION})))}: rerun python -m bench run "
                               f"with this version")
        data = step(dict(data))
        version = data.get("version")
    return data


def load_results(path) -> dict:
    """The results file as plain JSON with every run's summary recomputed (for bench plan)."""
    return Results.load(path).to_dict()


# ---------------------------------------------------------------- summaries

def steady_epochs(run: Run) -> tuple[list[EpochRecord], bool]:
    """Throughput epochs after each loader's first; all throughput epochs if there are none."""
    counted = [e for e in run.epochs if not e.timing]
    steady = [e for e in counted if not e.first]
    return (steady, True) if steady else (counted, False)


def floor_cache(run: Run) -> str | None:
    """Which floor a run compares with: its cache setting (capped: the floor measured under its
    cap, bench/probe/cappedfloor.py), or for asis what it measured."""
    if run.cache in ("cold", "warm", "capped"):
        return run.cache
    res = [e.residency_before for e in run.epochs]
    if res and max(res) <= 0.01:
        return "cold"
    if res and min(res) >= 0.99:
        return "warm"
    return None


def summarize(run: Run, floors: Floors, corpus: dict | None = None) -> dict:
    """The run's headline figures, from its raw epochs and the floors of the same results."""
    steady, is_steady = steady_epochs(run)
    first = [e for e in run.epochs if e.first and not e.timing]
    timed = [e for e in run.epochs if e.timing]
    sps = stats.spread([e.samples_per_s for e in steady])
    mbs = stats.spread([e.mb_per_s for e in steady])
    batch = stats.percentiles_ms([ns / 1e9 for e in steady for ns in e.batch_ns])
    sample = stats.percentiles_ms([ns / 1e9 for e in timed for ns in e.sample_ns])
    fc = floor_cache(run)
    seq = floors.seq_for(run.reads, fc) if fc else None
    streams, nodes = run_streams(run)
    bound = floors.bound(run.reads, fc, streams) if fc else None
    # several nodes: each node's ranks against the node's floor, so the aggregate against nodes x it
    floor_mb = bound.mb_per_s * nodes if bound else seq.mb_per_s if seq else None
    au = [e.au for e in steady if e.au is not None]
    pread = floors.pread_for(fc) if fc else None
    counted = [e for e in run.epochs if not e.timing]
    payload = sum(e.payload_bytes for e in counted)
    ckpt_bytes = sum(c.bytes for c in run.checkpoints)
    ckpt_s = sum(c.seconds for c in run.checkpoints)
    read_bytes = sum(e.read_bytes for e in counted)
    samples = sum(e.samples for e in counted)
    facts = ((corpus or {}).get("layouts") or {}).get(run.reads, {})
    out = {
        "layout": run.layout, "cache": run.cache, "kind": run.kind, "reads": run.reads,
        "preset": ((corpus or {}).get("spec") or {}).get("preset"),
        "count": ((corpus or {}).get("spec") or {}).get("count"),
        "samples_per_s": sps["median"], "mb_per_s": mbs["median"],
        "ttfb_s": stats.median([e.ttfb_s for e in first]) if first else stats.median([e.ttfb_s for e in steady]),
        "p99_ms": batch.get("p99"),
        "floor_ratio": stats.ratio(mbs["median"], floor_mb),
        "floor_mb_per_s": floor_mb,
        "floor_way": f"{bound.way} {bound.streams}x{bound.depth}" if bound else "seq-read 1x1" if seq else None,
        "floor_streams": streams,
        "memcpy_ratio": stats.ratio(mbs["median"], floors.memcpy_for(streams)),
        "au": stats.median(au) if au else None, "au_min": min(au) if au else None,
        "pread_ratio": stats.ratio(sps["median"], pread.samples_per_s if pread else None),
        "steady_state": is_steady,
        "samples_per_s_spread": sps, "mb_per_s_spread": mbs,
        "first_epoch": {"samples_per_s": stats.median([e.samples_per_s for e in first]),
                        "mb_per_s": stats.median([e.mb_per_s for e in first]),
                        "ttfb_s": stats.median([e.ttfb_s for e in first]),
                        "wall_s": stats.median([e.wall_s for e in first]), "n": len(first)},
        "steady_ttfb_s": stats.median([e.ttfb_s for e in steady]),
        "batch_latency_ms": batch, "sample_latency_ms": sample,
        "cpu_us_per_sample": stats.ratio(sum(e.cpu_s for e in counted) * 1e6, samples),
        "read_bytes_per_payload_byte": stats.ratio(read_bytes, payload),
        "rchar": sum(e.rchar for e in counted), "read_bytes": read_bytes,
        "syscr_per_sample": stats.ratio(sum(e.syscr for e in counted), samples),
        "payload_bytes": payload, "samples": samples,
        "residency_before": {"min": min((e.residency_before for e in run.epochs), default=None),
                             "max": max((e.residency_before for e in run.epochs), default=None)},
        "residency_after": {"min": min((e.residency_after for e in run.epochs if e.residency_after is not None),
                                       default=None)},
        "cache_ok": all(e.cache_ok for e in run.epochs) and not (run.cap or {}).get("failure"),
        "indices_ok": all(e.indices_ok for e in run.epochs),
        "counters_complete": all(e.lost_processes == 0 for e in run.epochs),
        "bytes_on_disk": facts.get("bytes_on_disk"), "files": facts.get("files"),
        "checkpoint": {"writes": len(run.checkpoints), "bytes": ckpt_bytes, "seconds": ckpt_s,
                       "mb_per_s": ckpt_bytes / ckpt_s / 1e6 if ckpt_s else None,
                       "read_write_ratio": stats.ratio(payload, ckpt_bytes)},
        **capped_summary(run, steady),
        "order": {key: stats.median([getattr(e.order, key) for e in counted
                                     if e.order is not None and getattr(e.order, key) is not None])
                  for key in ("displacement", "same_shard", "same_shard_shuffled")},
        "nodes": len({r.host for e in run.epochs for r in e.ranks}) or 1,
        "ranks": run.config.world,
        # each rank's own MB/s over the steady epochs: how unevenly the ranks were served
        "rank_mb_per_s": stats.spread([r.payload_bytes / r.wall_s / 1e6 for e in steady for r in e.ranks
                                       if r.wall_s > 0]) if run.config.world > 1 else None,
        "loader": run.loader, "dataloader": run.dataloader, "device": run.device,
        "h2d": h2d_summary(steady, floors) if run.device else None,
        **split_summary(run),
    }
    return out


SPLIT_RULE = (f"decode-bound: decode wall time per sample > {BOUND_RATIO:g}x the read's; I/O-bound: read > "
              f"{BOUND_RATIO:g}x decode; else mixed (means over the timing epochs' samples; runs that do not "
              f"decode have no bound)")


def split_summary(run: Run) -> dict:
    """A run's read/decode split over its timing epochs: per-sample means of read and decode, wall
    and CPU (seconds), wall percentiles (ms), the samples timed, whether it decoded, and bound_by
    ("io", "decode" or "mixed", SPLIT_RULE; None when not measured or not decoded)."""
    timed = [e.split for e in run.epochs if e.timing and e.split is not None and e.split.read_ns]
    n = sum(len(e.read_ns) for e in timed)
    decoded = run.config.decode or run.kind == "naive"
    out = {"decoded": decoded, "split_samples": n, "read_s_per_sample": None, "decode_s_per_sample": None,
           "read_cpu_s_per_sample": None, "decode_cpu_s_per_sample": None, "read_ms": {}, "decode_ms": {},
           "bound_by": None}
    if not n:
        return out
    read = [ns / 1e9 for e in timed for ns in e.read_ns]
    decode = [ns / 1e9 for e in timed for ns in e.decode_ns]
    out.update(read_s_per_sample=sum(read) / n, read_cpu_s_per_sample=sum(e.read_cpu_s for e in timed) / n,
               read_ms=_p50_p90(read))
    if decoded:  # a payload-bytes run has no decode: None, not 0
        out.update(decode_s_per_sample=sum(decode) / n, decode_ms=_p50_p90(decode),
                   decode_cpu_s_per_sample=sum(e.decode_cpu_s for e in timed) / n)
        if sum(read) + sum(decode) > 0:
            out["bound_by"] = bound_by(sum(read), sum(decode))
    return out


def _p50_p90(seconds) -> dict:
    p = stats.percentiles_ms(seconds)
    return {"p50": p["p50"], "p90": p["p90"]} if p else {}


def run_streams(run: Run) -> tuple[int, int]:
    """(streams on the busiest node, nodes): a run's workers (at least one: the calling thread)
    times its ranks on that node; the concurrency its floor is measured at."""
    hosts: dict[str, int] = {}
    for r in next((e.ranks for e in run.epochs if e.ranks), ()):
        hosts[r.host] = hosts.get(r.host, 0) + 1
    per_node = max(hosts.values(), default=1)
    return max(1, run.config.workers) * per_node, max(1, len(hosts))


PAGE_CACHE_RULE = 5.0  # MLPerf Storage: a corpus under 5x the memory available measures the page cache


def capped_summary(run: Run, steady: list[EpochRecord]) -> dict:
    """The 5x rule for every run; for capped runs the medians of the per-epoch cache figures
    over the steady epochs and the cgroup's worst counters."""
    ratio = stats.ratio(run.corpus_bytes, run.memory_bytes) if run.corpus_bytes and run.memory_bytes else None
    out = {"memory_bytes": run.memory_bytes, "corpus_bytes": run.corpus_bytes, "memory_ratio": ratio,
           "measures_page_cache": bool(run.cache != "cold" and ratio is not None and ratio < PAGE_CACHE_RULE)}
    parts = [e.capped for e in steady if e.capped is not None]
    for key in ("hit_ratio", "expected_hit_ratio", "read_amplification", "read_amplification_pages"):
        values = [getattr(c, key) for c in parts if getattr(c, key) is not None]
        out[key] = stats.median(values) if values else None
    if run.cap is not None:
        every = [e.capped for e in run.epochs if e.capped is not None]
        peaks = [c.cgroup_peak_bytes for c in every if c.cgroup_peak_bytes is not None]
        out["cap"] = {**run.cap, "peak_bytes": max(peaks, default=None),
                      "limit_hits": sum(c.cgroup_limit_hits or 0 for c in every),
                      "oom_kills": sum(c.cgroup_oom_kills or 0 for c in every),
                      "resident_bytes_max": max((c.resident_bytes_after for c in every), default=None)}
    return out
def h2d_summary(steady: list[EpochRecord], floors: Floors) -> dict:
    """The GPU copy stage over the steady epochs, beside the same run's pinned-copy floor."""
    copies = [e.h2d for e in steady if e.h2d is not None]
    nbytes, seconds = sum(c.bytes for c in copies), sum(c.seconds for c in copies)
    transfers = sum(c.transfers for c in copies)
    gbs = nbytes / seconds / 1e9 if seconds else None
    return {"gb_per_s": gbs, "seconds": seconds, "bytes": nbytes, "transfers": transfers,
            "bytes_per_transfer": stats.ratio(nbytes, transfers),
            "stage_s": sum(c.stage_s for c in copies), "floor_gb_per_s": floors.h2d_gb_per_s,
            "floor_ratio": stats.ratio(gbs, floors.h2d_gb_per_s)}


def floor_summary(floors: Floors) -> dict:
    return {
        "seq_mb_per_s": {f"{f.layout}/{f.cache}": f.mb_per_s for f in floors.seq},
        "pread_samples_per_s": {f.cache: f.samples_per_s for f in floors.pread},
        "pread_latency_ms": {f.cache: stats.percentiles_ms([ns / 1e9 for ns in f.latency_ns]) for f in floors.pread},
        "memcpy_mb_per_s": floors.memcpy_mb_per_s,
        "null_us_per_sample": floors.null_us_per_sample,
        "at_mb_per_s": {f"{f.layout}/{f.cache}/{f.way}/{f.streams}x{f.depth}": f.mb_per_s for f in floors.at},
        "memcpy_at_mb_per_s": {str(m.threads): m.mb_per_s for m in floors.memcpy_at},
        "h2d_gb_per_s": floors.h2d_gb_per_s,
    }


# ---------------------------------------------------------------- (de)serialisation

_RECORDS = {c.__name__: c for c in (RunConfig, RankRecord, CappedEpoch, DeviceCopy, Split, Order, S3Epoch, EpochRecord,
                                    Checkpoint, Run, SeqFloor,
                                    PreadFloor, StreamFloor, MemcpyFloor, FioFloor, Floors, Results)}


def _dump(obj) -> dict:
    return {f.name: _dump_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _dump_value(value):
    if dataclasses.is_dataclass(value):
        return _dump(value)
    if isinstance(value, (tuple, list)):
        return [_dump_value(v) for v in value]
    return value


def _load(cls, data, where: str):
    if not isinstance(data, dict):
        raise ResultsError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ResultsError(f"{where}: {cls.__name__} lacks {f.name!r}; the file is damaged: rerun python -m bench run")
        kwargs[f.name] = _load_value(hints[f.name], data[f.name], f"{where}: {f.name}")
    obj = cls(**kwargs)
    _check_values(obj, where)
    return obj


# Values, beyond types, that the summaries and reports rely on. Every number in a results file
# is >= 0 and finite (checked in _load_value); these are the narrower ranges, the names from a
# fixed set, and the lists that must not be empty. (field -> (low, high) or a tuple of names)
SHUFFLES = SAMPLER_MODES  # every epoch order the sampler has
RUN_CACHES = REGIMES  # the cache settings `bench run --cache` takes
RUN_KINDS = tuple(dict.fromkeys(LOADER_KINDS.values()))  # our Loader, a naive baseline, torch's DataLoader
# whose loader a run measured: ours, torch's DataLoader (bench.run.torchrun), or the layout's ecosystem loader
LOADERS = ("ours", "torch", "ecosystem")
FRACTION = (0.0, 1.0)
_VALUES = {
    "RunConfig": {"batch_size": (1, None), "prefetch": (1, None), "epochs": (1, None), "repeats": (1, None),
                  "world": (1, None), "worker_kind": WORKER_KINDS, "shuffle": SHUFFLES},
    "EpochRecord": {"samples": (1, None), "wall_s": (1e-12, None), "residency_before": FRACTION,
                    "residency_after": FRACTION},
    "Run": {"kind": RUN_KINDS, "cache": RUN_CACHES, "loader": LOADERS, "storage": STORAGES},
    "SeqFloor": {"cache": ("cold", "warm"), "residency_before": FRACTION},
    "PreadFloor": {"cache": ("cold", "warm"), "sample_bytes": (1, None), "residency_before": FRACTION},
}


def _check_values(obj, where: str) -> None:
    """ResultsError for a value out of its range (see _VALUES), naming the field and the value."""
    def bad(name, value, want):
        raise ResultsError(f"{where}: {type(obj).__name__} {name} is {_clip(value)}, {want}; the file is damaged "
                           f"or not ours: rerun python -m bench run")

    for name, allowed in _VALUES.get(type(obj).__name__, {}).items():
        value = getattr(obj, name)
        if value is None:
            continue
        if isinstance(allowed[0], str):
            if value not in allowed:
                bad(name, value, f"not one of {', '.join(allowed)}")
        elif not ((allowed[0] is None or value >= allowed[0]) and (allowed[1] is None or value <= allowed[1])):
            bad(name, value, f"outside [{allowed[0]}, {'...' if allowed[1] is None else allowed[1]}]")
    if isinstance(obj, Run):
        if not obj.layout or not obj.reads:
            bad("layout", obj.layout, "empty")
        if not any(not e.timing for e in obj.epochs):
            bad("epochs", len(obj.epochs), "without a throughput epoch (none, or only timing epochs)")
    if isinstance(obj, EpochRecord) and obj.ttfb_s > obj.wall_s:
        bad("ttfb_s", obj.ttfb_s, f"more than its wall_s {obj.wall_s}")
    if isinstance(obj, EpochRecord) and obj.split is not None:
        if not obj.timing:
            bad("split", len(obj.split.read_ns), "in a throughput epoch (only timing epochs split their samples)")
        if not len(obj.split.read_ns) == len(obj.split.decode_ns) == len(obj.sample_ns):
            bad("split read_ns", len(obj.split.read_ns), f"not one per sample (decode_ns "
                                                         f"{len(obj.split.decode_ns)}, sample_ns {len(obj.sample_ns)})")


def _load_value(hint, value, where: str):
    """`value` as the field's type says, or ResultsError: what is loaded is then safe to compute
    and print with (a string where a number belongs would fail deep in a report, as a traceback)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and hint.__name__ in _RECORDS:
        return _load(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ResultsError(f"{where}: expected a list")
        return tuple(_load_value(args[0], v, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _load_value(next(a for a in args if a is not type(None)), value, where)
    if hint is float and _number(value) and value >= 0:  # no field is negative: times, counts, fractions
        return float(value)
    if (hint is bool and type(value) is bool) or (hint is int and _number(value) and type(value) is int and value >= 0) or (
            hint in (str, dict) and isinstance(value, hint)) or hint not in (bool, int, float, str, dict):
        return value
    if hint in (int, float) and _number(value):
        raise ResultsError(f"{where}: {value} is negative; the file is damaged or not ours: rerun python -m bench run")
    raise ResultsError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {_clip(value)}; the file is damaged "
                       f"or not ours: rerun python -m bench run")


def _number(value) -> bool:
    """A finite JSON number a float can hold (not a bool, not 1e400 written out as an integer)."""
    return (type(value) is int and abs(value) < 2**63) or (type(value) is float and math.isfinite(value))


def _clip(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_facts(corpus, metadata, where: str) -> None:
    """The free-form parts the reports compute with: the corpus's spec, sizes and per-layout
    facts, and the machine's RAM and command line."""
    def bad(what, value):
        raise ResultsError(f"{where}: {what} is {_clip(value)}; the file is damaged or not ours: rerun "
                           f"python -m bench run")

    if not isinstance(corpus, dict):
        bad("corpus", corpus)
    spec = corpus.get("spec", {})
    if not isinstance(spec, dict):
        bad("corpus spec", spec)
    if "count" in spec and not (_number(spec["count"]) and type(spec["count"]) is int and spec["count"] > 0):
        bad("corpus spec count", spec["count"])
    if not isinstance(spec.get("preset", ""), (str, type(None))):
        bad("corpus spec preset", spec["preset"])
    if not isinstance(corpus.get("path", ""), str):
        bad("corpus path", corpus["path"])
    if "payload_bytes" in corpus and not (_number(corpus["payload_bytes"]) and corpus["payload_bytes"] >= 0):
        bad("corpus payload_bytes", corpus["payload_bytes"])
    layouts = corpus.get("layouts", {})
    if not isinstance(layouts, dict) or not all(isinstance(f, dict) for f in layouts.values()):
        bad("corpus layouts", layouts)
    for name, facts in layouts.items():
        for key in ("bytes_on_disk", "files"):
            if facts.get(key) is not None and not (_number(facts[key]) and facts[key] >= 0):
                bad(f"corpus layout {name} {key}", facts[key])
    if not isinstance(metadata, dict):
        bad("metadata", metadata)
    if isinstance(metadata.get("host"), str):  # a bare host name (hand-made files): as bench run writes it
        metadata["host"] = {"name": metadata["host"]}
    for key in ("host", "filesystem", "versions"):
        if not isinstance(metadata.get(key, {}), dict):
            bad(f"metadata {key}", metadata[key])
    ram = metadata.get("host", {}).get("ram_bytes")
    if ram is not None and not _number(ram):
        bad("metadata host ram_bytes", ram)
    command = metadata.get("command", [])
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        bad("metadata command", command)

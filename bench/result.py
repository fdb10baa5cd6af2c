"""Results: immutable records of raw measurements, versioned JSON, summaries computed from them.

    {"format": "layoutbench-results", "version": 1, "created": ..., "metadata": {host, cpu, ram,
     kernel, filesystem, versions, command}, "corpus": {path, spec, layouts}, "floors": {...},
     "runs": [{layout, cache, samples_per_s, mb_per_s, ttfb_s, p99_ms, floor_ratio, ... summary,
               "config": {...}, "epochs": [raw per-epoch records], "checkpoints": [...]}],
     "notes": [...]}

The summary fields of each run are recomputed from the raw records on load, so a results file
can never claim a figure its own measurements do not give. Latencies are integer nanoseconds.
A file of another format, or of a version with no migration to this one, is refused.

Version history (each bump adds a migration to MIGRATIONS, which loads the older file as this
version would have written it, or refuses it naming what it lacks):
- 1: the first format (runs of files/hdf5/lmdb and naive baselines, cold/warm/asis). Fields added
  since with defaults, so older files load unchanged: Run.loader ("ours", or "torch" for
  torch.utils.data.DataLoader runs) and Run.dataloader (its settings); EpochRecord.h2d_* (the GPU
  copy stage); Floors.h2d_* (one large pinned host-to-device copy).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from generator.errors import LayoutbenchError, UsageError

from . import stats

FORMAT = "layoutbench-results"
VERSION = 1
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


@dataclass(frozen=True)
class RankRecord:
    """One rank's share of an epoch (kept only when there are several ranks)."""

    rank: int
    host: str
    wall_s: float
    samples: int
    payload_bytes: int


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
    h2d_bytes: int = 0  # --device: bytes copied host to device (0: no copy stage)
    h2d_transfers: int = 0  # batches copied
    h2d_s: float = 0.0  # seconds in the copies, each through its synchronize
    h2d_stage_s: float = 0.0  # seconds copying batches into the pinned staging buffers

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
    kind: str  # "loader" or "naive"
    reads: str  # the layout whose files it reads (its floor)
    cache: str  # cold, warm or asis
    evict_method: str | None  # drop_caches or fadvise (cold runs)
    config: RunConfig
    epochs: tuple[EpochRecord, ...]
    checkpoints: tuple[Checkpoint, ...] = ()
    loader: str = "ours"  # which loader read it: ours (loaders.pipeline.Loader) or torch (DataLoader)
    dataloader: dict | None = None  # torch runs: the DataLoader's settings (dataset, num_workers, ...)
    device: str | None = None  # --device: where each batch was copied (None: no copy stage)


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
class Floors:
    seq: tuple[SeqFloor, ...] = ()
    pread: tuple[PreadFloor, ...] = ()
    memcpy_bytes: int = 0
    memcpy_s: float = 0.0
    null_samples: int = 0  # the harness's own loop over a loader that costs nothing
    null_s: float = 0.0
    null_batch_size: int = 0
    h2d_bytes: int = 0  # --device: one large copy from pinned memory to the device (0: not measured)
    h2d_s: float = 0.0
    h2d_device: str | None = None

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

    def save(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
            os.replace(tmp, path)
        except OSError as exc:  # checked writable before the run; a disk that filled up since
            tmp.unlink(missing_ok=True)
            raise LayoutbenchError(f"cannot write the results to {path} ({exc.strerror}); free space or choose "
                                   f"another --output and rerun") from None

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
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ResultsError(f"{path}: no such results file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ResultsError(f"{path} cannot be read as JSON ({exc})") from None
        return cls.from_dict(data, str(path))


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
    """Which floor a run compares with: its cache setting, or for asis what it measured."""
    if run.cache in ("cold", "warm"):
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
        "floor_ratio": stats.ratio(mbs["median"], seq.mb_per_s if seq else None),
        "floor_mb_per_s": seq.mb_per_s if seq else None,
        "memcpy_ratio": stats.ratio(mbs["median"], floors.memcpy_mb_per_s),
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
        "cache_ok": all(e.cache_ok for e in run.epochs),
        "indices_ok": all(e.indices_ok for e in run.epochs),
        "counters_complete": all(e.lost_processes == 0 for e in run.epochs),
        "bytes_on_disk": facts.get("bytes_on_disk"), "files": facts.get("files"),
        "checkpoint": {"writes": len(run.checkpoints), "bytes": ckpt_bytes, "seconds": ckpt_s,
                       "mb_per_s": ckpt_bytes / ckpt_s / 1e6 if ckpt_s else None,
                       "read_write_ratio": stats.ratio(payload, ckpt_bytes)},
        "nodes": len({r.host for e in run.epochs for r in e.ranks}) or 1,
        "ranks": run.config.world,
        # each rank's own MB/s over the steady epochs: how unevenly the ranks were served
        "rank_mb_per_s": stats.spread([r.payload_bytes / r.wall_s / 1e6 for e in steady for r in e.ranks
                                       if r.wall_s > 0]) if run.config.world > 1 else None,
        "loader": run.loader, "dataloader": run.dataloader, "device": run.device,
        "h2d": h2d_summary(steady, floors) if run.device else None,
    }
    return out


def h2d_summary(steady: list[EpochRecord], floors: Floors) -> dict:
    """The GPU copy stage over the steady epochs, beside the same run's pinned-copy floor."""
    nbytes, seconds = sum(e.h2d_bytes for e in steady), sum(e.h2d_s for e in steady)
    transfers = sum(e.h2d_transfers for e in steady)
    gbs = nbytes / seconds / 1e9 if seconds else None
    return {"gb_per_s": gbs, "seconds": seconds, "bytes": nbytes, "transfers": transfers,
            "bytes_per_transfer": stats.ratio(nbytes, transfers),
            "stage_s": sum(e.h2d_stage_s for e in steady), "floor_gb_per_s": floors.h2d_gb_per_s,
            "floor_ratio": stats.ratio(gbs, floors.h2d_gb_per_s)}


def floor_summary(floors: Floors) -> dict:
    return {
        "seq_mb_per_s": {f"{f.layout}/{f.cache}": f.mb_per_s for f in floors.seq},
        "pread_samples_per_s": {f.cache: f.samples_per_s for f in floors.pread},
        "pread_latency_ms": {f.cache: stats.percentiles_ms([ns / 1e9 for ns in f.latency_ns]) for f in floors.pread},
        "memcpy_mb_per_s": floors.memcpy_mb_per_s,
        "null_us_per_sample": floors.null_us_per_sample,
        "h2d_gb_per_s": floors.h2d_gb_per_s,
    }


# ---------------------------------------------------------------- (de)serialisation

_RECORDS = {c.__name__: c for c in (RunConfig, RankRecord, EpochRecord, Checkpoint, Run, SeqFloor,
                                    PreadFloor, Floors, Results)}


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
    return cls(**kwargs)


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
        hint = next(a for a in args if a is not type(None))
    if hint is float and _number(value):
        return float(value)
    if (hint is bool and type(value) is bool) or (hint is int and _number(value) and type(value) is int) or (
            hint in (str, dict) and isinstance(value, hint)) or hint not in (bool, int, float, str, dict):
        return value
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
    if "payload_bytes" in corpus and not _number(corpus["payload_bytes"]):
        bad("corpus payload_bytes", corpus["payload_bytes"])
    layouts = corpus.get("layouts", {})
    if not isinstance(layouts, dict) or not all(isinstance(f, dict) for f in layouts.values()):
        bad("corpus layouts", layouts)
    for name, facts in layouts.items():
        for key in ("bytes_on_disk", "files"):
            if facts.get(key) is not None and not _number(facts[key]):
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

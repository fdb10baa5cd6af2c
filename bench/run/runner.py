"""The run driver: the command's runs (RunSpecs: layout x loader x storage x regime x workers x
decode) planned, then read the way training reads them, next to the floors, in one process or many.

Every rank runs `run_bench` with its own shard (the Loader takes rank and world); each run's epochs
go through the one epoch loop (bench.run.epochs.run_epochs), whose regime sets and checks the cache
before each epoch; a barrier starts the epoch together, and rank 0 gathers the ranks' records and
aggregates them (all bytes / the slowest rank's time). Per-sample latencies come from one extra
epoch per repeat with the loader's timing on, kept out of the throughput figures; it also splits
each sample's time into read and decode, wall and CPU (loaders.stages), and the cost of that timing
is measured once per command beside the floors (Floors.split_*). With --decode both, every loader
run is measured decoded and as payload bytes only, back to back at each setting.
"""

from __future__ import annotations

import copy
import importlib
import os
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from generator.errors import LayoutbenchError, UsageError
from generator.lifetime import owned_name, pid_alive, sweep_dead
from generator.layouts import get_layout, installed, layout_ids
from loaders.registry import readers
from loaders.sampler import order_randomness
from loaders.stages import split_overhead

from bench.probe import drops, probes
from bench.probe.floors import cold_floors, cold_next_to_runs, measure_floors
from bench.probe.machine import metadata
from bench.probe.measure import RankEpoch, check_indices
from bench.probe.regimes import CacheState, host_ram
from bench.results.au import au
from bench.results.result import DeviceCopy, EpochRecord, Order, RankRecord, Results, Run, Split

from bench.results.spec import RunSpec, loaders_for

from . import capped
from .comm import Comm, SingleProcessComm
from .config import PROBE_PREFIX, BenchConfig, check_config
from .ecosystem import leave_out, open_source
from .epochs import CHECKPOINT_PREFIX, Epochs, epoch_plan, run_epochs
from .reading import open_loader, warm_up_code
from .regime import REGIME_CLASSES, Cold, not_read_from_the_device, regime_for
from .s3storage import retry_notes, s3_layouts, s3_message, s3_part, staging_notes
from .storages import corpus_manifest, storage_for, storage_name
from .torchrun import device_stage, open_torch_loader


def sweep_leftovers(cfg: BenchConfig) -> list[Path]:
    """Remove what killed runs on this host left where this one writes: checkpoints, write probes
    and results temporaries named after a process that is dead (a kill -9 runs no cleanup)."""
    out = Path(cfg.output).parent
    removed = sweep_dead(out, PROBE_PREFIX) + sweep_dead(out, f".{Path(cfg.output).name}.tmp-")
    if cfg.checkpoint_mb > 0:
        ckdir = Path(cfg.checkpoint_dir or out)
        removed += sweep_dead(ckdir, CHECKPOINT_PREFIX, ".bin") + sweep_dead(ckdir, PROBE_PREFIX)
        # the name of earlier versions, pid only: removed when that pid is dead here
        for p in ckdir.glob(f"{CHECKPOINT_PREFIX}*.bin"):
            pid = p.name[len(CHECKPOINT_PREFIX):-len(".bin")]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def run_one(ctx: "Context", spec: RunSpec, repeat: int) -> Epochs:
    """One repeat of one run: its epochs through run_epochs, here or (capped) in a child process
    inside a memory cgroup (bench.run.capped), whose cap facts go to ctx.caps."""
    if spec.regime == "capped":
        epochs, cap = capped.run_capped(ctx, spec, repeat)
        ctx.caps[(spec, repeat)] = cap
        return epochs
    ctx = ctx.decoding(spec.decode)
    rc, storage = ctx.cfg.run, ctx.storage(spec.storage)
    reader = storage.open(spec.layout)
    try:
        warm_up_code(reader, rc, spec.naive)
    except BaseException:
        reader.close()
        raise
    if spec.kind == "torch":
        def opener(rank, timing):
            return open_torch_loader(reader, rc, spec.torch_dataset, spec.workers, rank, ctx.cfg.pin_memory)
    elif spec.kind in ("loader", "naive"):
        def opener(rank, timing):
            return open_loader(reader, rc, spec.workers, rank, timing, spec.naive)
    elif spec.kind == "ecosystem":  # the layout's own library's loader (bench.run.ecosystem), made once a repeat
        try:
            source = open_source(reader, rc, ctx.cfg.pin_memory)
        except BaseException:
            reader.close()
            raise

        def opener(rank, timing):
            return source.loader(spec.workers, rank)
    else:
        reader.close()
        raise UsageError(f"no loader of kind {spec.kind!r} can open {spec.name}")
    return run_epochs(ctx, spec, reader, regime_for(spec.regime, storage), repeat, opener,
                      emit=lambda record: ctx.tick(spec, record))


def epoch_au(got: list[dict]) -> float | None:
    """AU of one epoch over the ranks: their compute over (ranks x the slowest rank's running
    time), None without emulated compute (see bench/results/au.py)."""
    return au(sum(float(g["compute_s"]) for g in got), len(got) * max(float(g["au_span_s"]) for g in got))


class Context:
    """What every run of one command shares: config, comm, device, progress, rank-0 aggregation."""

    def __init__(self, cfg: BenchConfig, comm: Comm, bar=None):
        self.cfg, self.comm, self.bar = cfg, comm, bar
        self._storages: dict[str, object] = {}
        if storage_name(cfg.corpus) == "s3":  # the device under the bundled server's files (None: a remote store)
            data_dir = self.storage("s3").data_dir
            self.device = probes.block_device(data_dir) if data_dir is not None else None
        else:
            self.device = probes.block_device(cfg.corpus)
        self.host = socket.gethostname()
        ckdir = Path(cfg.checkpoint_dir or Path(cfg.output).parent)
        # host and pid in the name: a later run removes what a killed one left (sweep_leftovers)
        self.checkpoint_path = ckdir / f"{owned_name(CHECKPOINT_PREFIX)}.bin"
        self.caps: dict[tuple, dict] = {}  # (RunSpec, repeat) -> a capped run's cap facts
        self.capped_floors: list = []  # the floors the capped runs measured under their caps
        self.floor_paths: dict[str, list] = {}  # layout -> its files, listed once for all its floors
        self.gpu, self.gpu_note = device_stage(cfg.device)  # --device: the copy stage, or why it is skipped

    def storage(self, name: str):
        """The command's Storage `name` over its corpus (bench.run.storage), made once."""
        if name not in self._storages:
            options = {"data_dir": self.cfg.s3_data_dir} if name == "s3" else {}
            self._storages[name] = storage_for(name, self.cfg.corpus, self.cfg.evict, **options)
        return self._storages[name]

    def decoding(self, decode: bool) -> "Context":
        """This context for runs that decode (True) or read payload bytes only (False): the same
        comm, progress, caps and device, the run settings' decode set."""
        if self.cfg.run.decode == decode:
            return self
        other = copy.copy(self)
        other.cfg = replace(self.cfg, run=replace(self.cfg.run, decode=decode))
        return other

    def aggregate(self, epoch, repeat, first, timing, mine: RankEpoch, io, state: CacheState, n,
                  bounds=None) -> EpochRecord | None:
        """Gather every rank's epoch on rank 0 and make one record (None on other ranks). The order's
        randomness is that of the ranks' orders one after another (rank 0's, then rank 1's...)."""
        mine_msg = {"rank": self.comm.rank, "host": self.host, "seconds": mine.seconds, "ttfb_s": mine.ttfb_s,
                    "samples": mine.samples, "bytes": mine.nbytes, "batch_ns": mine.batch_ns,
                    "sample_ns": mine.sample_ns, "indices": mine.indices, "residency": state.residency,
                    "residency_after": state.after, "compute_s": mine.compute_s, "au_span_s": mine.au_span_s,
                    "cache_ok": state.ok, "read_ns": mine.read_ns, "decode_ns": mine.decode_ns,
                    "read_cpu_s": mine.read_cpu_s, "decode_cpu_s": mine.decode_cpu_s,
                    "s3": s3_message(self._storages.get("s3")), **io}
        got = self.comm.gather(mine_msg)
        if got is None:
            return None
        may_drop = len(got) * (self.cfg.run.batch_size - 1) if self.cfg.run.drop_last else 0
        if not any(int(g["samples"]) for g in got):  # check_config refuses such runs; never report one
            raise LayoutbenchError(f"epoch {epoch} read no sample: a throughput of nothing would be untrue")
        check_indices([g["indices"] for g in got], n, may_drop, epoch)
        randomness = order_randomness(np.concatenate([np.asarray(g["indices"], np.int64).ravel() for g in got]), bounds)
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
                                   int(g["bytes"])) for g in got) if len(got) > 1 else (),
            compute_s=sum(float(g["compute_s"]) for g in got), au=epoch_au(got),
            h2d=device_copy(got), split=split_part(got),
            order=Order(**randomness) if any(v is not None for v in randomness.values()) else None,
            s3=s3_part(got), cache_drops=most_drops(got))

    def tick_floor(self, what: str):
        if self.bar is not None:
            self.bar.set_postfix_str(f"floor: {what}", refresh=False)
            self.bar.update(1)

    def tick(self, spec: RunSpec, record: EpochRecord):
        if self.bar is not None:
            self.bar.set_postfix_str(f"{spec.name} {spec.regime} w{spec.workers}: {record.samples_per_s:,.0f} samples/s",
                                     refresh=False)
            self.bar.update(1)


def most_drops(got: list[dict]) -> int | None:
    """The page-cache drops by other processes during an epoch: the most any rank counted (ranks on
    one host count the same drops); None when no rank's kernel counts them."""
    counts = [int(g["cache_drops"]) for g in got if g.get("cache_drops") is not None]
    return max(counts) if counts else None


def split_part(got: list[dict]) -> Split | None:
    """The ranks' read/decode split of one epoch, merged (each rank's samples in rank order, as
    sample_ns is); None when the epoch did not time its samples."""
    if any(g.get("read_ns") is None for g in got):
        return None
    return Split(read_ns=tuple(int(x) for g in got for x in np.asarray(g["read_ns"]).tolist()),
                 decode_ns=tuple(int(x) for g in got for x in np.asarray(g["decode_ns"]).tolist()),
                 read_cpu_s=sum(float(g["read_cpu_s"]) for g in got),
                 decode_cpu_s=sum(float(g["decode_cpu_s"]) for g in got))


def device_copy(got: list[dict]) -> DeviceCopy | None:
    """The ranks' GPU copy stage of one epoch (all bytes, the slowest rank's seconds); None without one."""
    if not any("h2d_bytes" in g for g in got):
        return None
    return DeviceCopy(bytes=sum(int(g.get("h2d_bytes", 0)) for g in got),
                      transfers=sum(int(g.get("h2d_transfers", 0)) for g in got),
                      seconds=max(float(g.get("h2d_s", 0.0)) for g in got),
                      stage_s=max(float(g.get("h2d_stage_s", 0.0)) for g in got))


def plan_runs(cfg: BenchConfig, manifest) -> list[RunSpec]:
    """Every run of one repeat, in the order they run: every layout at one setting back to back, so
    layouts are compared over the same minutes of a noisy machine; with --decode both, the decoded
    runs of a setting, then its payload-bytes runs. Naive baselines and DataLoader runs always
    decode: they run once per setting, with the decoded ones."""
    out, storage = [], storage_name(cfg.corpus)
    for cache in cfg.caches:
        for workers in cfg.workers:
            # capped runs are our loader's: a DataLoader's workers are not started inside the cgroup
            option = "ours" if cache == "capped" else cfg.loader
            for decode in cfg.decode_modes:
                out.extend(RunSpec(layout, loader, storage, cache, workers, decode) for layout in cfg.layouts
                           for loader in loaders_for(option) if decode or loader == "ours")
        # naive baselines read in the bench process (not capped), and stack one shape: a corpus whose
        # samples have shapes of their own (manifest.shapes) has none
        if cfg.naive and cache != "capped" and manifest.shapes is None and storage == "local":
            out.extend(RunSpec(layout, "naive", "local", cache, 0, True) for layout in cfg.layouts
                       if readers()[layout].naive)
    return out


def run_bench(cfg: BenchConfig, comm: Comm | None = None) -> Results | None:
    """Floors (a layout's cold ones just before its first cold run), then every run for every repeat.
    Returns the results on rank 0 (None elsewhere)."""
    from generator.codec import codec_libraries

    comm = comm or SingleProcessComm()
    cfg = replace(cfg, run=replace(cfg.run, world=comm.size))
    manifest = corpus_manifest(cfg.corpus)
    check_config(cfg, manifest)
    sweep_leftovers(cfg)
    if cfg.layouts is None:
        names = installed([n for n in layout_ids() if n in manifest.layouts], explicit=False, prog="python -m bench run")
        if storage_name(cfg.corpus) == "s3":  # those read over S3; the others left out in one line each
            names = s3_layouts(cfg.corpus, names, sys.stderr if comm.rank == 0 else None)
        if manifest.layouts and not names:
            raise UsageError(f"no layout of the corpus {cfg.corpus} ({', '.join(manifest.layouts)}) can be read "
                             f"here: install what the lines above name")
        cfg = replace(cfg, layouts=tuple(name for name in names if (
            cfg.run.shuffle != "shards" or get_layout(name).reader_class().supports_streaming)))
        if not cfg.layouts:
            raise LayoutbenchError(f"--shuffle shards reads streaming layouts (tar, tfrecord) and the corpus "
                                   f"{cfg.corpus} has none; generate one (--layouts tar,tfrecord)")
    # imported now: a cold first epoch must not read their libraries' code as sample bytes
    for name in codec_libraries():
        importlib.import_module(name)
    for layout in cfg.layouts:
        get_layout(layout).preload()
    if cfg.loader != "ours":  # torch's libraries too (hundreds of MB: never counted as a cold epoch's reads)
        importlib.import_module("loaders.torch")
    # the ecosystem's libraries imported too; a layout whose contender cannot run here: one line, left out
    absent = leave_out(cfg, sys.stderr if comm.rank == 0 else None)
    runs = [s for s in plan_runs(cfg, manifest) if not (s.kind == "ecosystem" and s.layout in absent)]
    rc = cfg.run
    total = (rc.repeats + rc.warmup) * sum(len(epoch_plan(spec, rc)) for spec in runs)
    floor_steps = len(cfg.layouts) * 2 + 3
    bar = None
    if comm.rank == 0 and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total + floor_steps, unit="epoch", dynamic_ncols=True, leave=False, file=sys.stderr)
    ctx = Context(cfg, comm, bar)
    try:
        floors = measure_floors(ctx, manifest)
        if ctx.gpu is not None:  # the link's own ceiling, in the same run
            h2d_bytes, h2d_s = ctx.gpu.floor()
            floors = replace(floors, h2d_bytes=h2d_bytes, h2d_s=h2d_s, h2d_device=cfg.device)
        if rc.sample_latency:  # what the per-sample timing itself costs, beside the figures it gives
            over = split_overhead()
            floors = replace(floors, **{f"split_{k}": v for k, v in over.items()})
        comm.barrier()
        gathered: dict[RunSpec, dict] = {}
        cold_measured: set[str] = set()
        for repeat in range(-rc.warmup, rc.repeats):  # negative: MLPerf's warm-up runs, measured and dropped
            for spec in runs:
                if spec.regime == "cold" and cold_next_to_runs(cfg) and spec.layout not in cold_measured:
                    floors = cold_floors(ctx, manifest, floors, spec.layout)  # next to its first cold run
                    cold_measured.add(spec.layout)
                    comm.barrier()  # no other rank evicts or reads while rank 0 measures
                got = run_one(ctx, spec, repeat)
                if repeat < 0:
                    continue
                slot = gathered.setdefault(spec, {"epochs": [], "checkpoints": [], "method": None})
                slot["epochs"] += got.records
                slot["checkpoints"] += got.checkpoints
                slot["method"] = slot["method"] or got.evict_method
                slot["dataloader"] = got.settings
    finally:
        if bar is not None:
            bar.close()
    if comm.rank != 0:
        return None
    floors = replace(floors, at=floors.at + tuple(ctx.capped_floors))
    out_runs, lost = [], []
    for spec, slot in gathered.items():
        config = replace(rc, workers=spec.workers, decode=spec.decode,
                         **(dict(epochs=1, sample_latency=False) if spec.naive else {}))
        if spec.kind != "loader":  # no timing epoch (epoch_plan): none claimed
            config = replace(config, sample_latency=False)
        cap = ctx.caps.get((spec, 0)) if spec.regime == "capped" else None
        if cap is not None:  # a failure in any repeat marks the run
            cap = {**cap, "failure": "; ".join(c["failure"] for (s, _), c in ctx.caps.items()
                                               if s == spec and c.get("failure")) or None}
        if not slot["epochs"]:  # stopped before its first epoch (the OOM killer): said, not reported as measured
            lost.append(f"{spec.name} {spec.regime} with {spec.workers} workers measured nothing: "
                        f"{(cap or {}).get('failure') or 'no epoch finished'}")
            continue
        out_runs.append(Run(spec.name, spec.kind, spec.layout, spec.regime,
                            slot["method"], config, tuple(slot["epochs"]), tuple(slot["checkpoints"]),
                            memory_bytes=cfg.memory_limit if spec.regime == "capped" else host_ram(),
                            corpus_bytes=(manifest.layouts.get(spec.layout) or {}).get("bytes_on_disk"), cap=cap,
                            loader={"torch": "torch", "ecosystem": "ecosystem"}.get(spec.kind, "ours"),
                            dataloader=slot.get("dataloader"),
                            device=cfg.device if ctx.gpu is not None else None, storage=spec.storage))
    name = f"{manifest.spec.preset or 'custom'}-{manifest.spec.count}"
    notes = cache_notes(out_runs, name) + retry_notes(out_runs, name) + staging_notes(out_runs, name) + lost
    advice = ctx.storage(storage_name(cfg.corpus)).cold_advice()
    if advice and any(r.cache == "cold" and not all(e.cache_ok for e in r.epochs) for r in out_runs):
        notes.append(advice)
    if ctx.gpu_note:
        notes.append(ctx.gpu_note)
    corpus = {"path": cfg.corpus if storage_name(cfg.corpus) == "s3" else str(Path(cfg.corpus).resolve()),
              "spec": manifest.spec.to_dict(),
              "payload_bytes": int(sum(manifest.sizes)),
              "layouts": {k: v for k, v in manifest.layouts.items() if k in cfg.layouts}}
    return Results(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), metadata(cfg, comm), corpus, floors,
                   tuple(out_runs), tuple(notes))


def cache_notes(runs, corpus: str) -> list[str]:
    """Say, never hide, when a cache setting did not hold; and, once, where this kernel keeps no
    count of page-cache drops (bench.probe.drops) for the regimes that keep pages."""
    notes, uncounted = [], False
    keeps = {cls.name for cls in (*REGIME_CLASSES.values(), capped.Capped) if cls.keeps_pages}
    for r in runs:
        bytes_only = "" if r.config.decode or r.kind == "naive" else " (bytes only)"
        what = f"{corpus} {r.layout}{bytes_only} {r.cache} w{r.config.workers}"
        dropped = [e for e in r.epochs if e.cache_drops and not e.cache_ok] if r.cache in keeps else []
        uncounted = uncounted or (r.cache in keeps and any(e.cache_drops is None for e in r.epochs))
        if dropped:
            which = ", ".join(f"epoch {e.epoch} ({'timing, ' if e.timing else ''}repeat {e.repeat})" for e in dropped)
            notes.append(f"{what}: {which}: {drops.REASON} ({sum(e.cache_drops for e in dropped)} drop(s) of the "
                         f"page cache counted by the kernel, drop_pagecache in /proc/vmstat, none of them this run's); "
                         f"{len(dropped)} of {len(r.epochs)} epochs did not measure {r.cache} and the run is marked "
                         f"cache_ok=false")
        bad = [e for e in r.epochs if not e.cache_ok and e not in dropped]
        if r.cache == "capped":
            notes += capped.capped_notes(r, corpus)
        elif bad:
            if r.cache == "cold":
                seen = f"residency up to {max(e.residency_before for e in bad):.1%} before the epoch"
                unread = [e for e in bad if not_read_from_the_device(e, Cold.DEVICE_MIN, Cold.DEVICE_CHECKED)]
                if unread:
                    e = min(unread, key=lambda e: e.device_sectors_read)
                    seen += (f"; the device read {e.device_sectors_read * 512:,} B of {e.payload_bytes:,} payload "
                             f"bytes in {len(unread)} of them, so a cache mincore cannot see served the rest")
            else:
                low = min(min(e.residency_before, 1.0 if e.residency_after is None else e.residency_after) for e in bad)
                seen = f"residency down to {low:.1%} before or after the epoch"
            notes.append(f"{what}: {len(bad)} of {len(r.epochs)} epochs were not {r.cache} ({seen}; another "
                         f"process may have read or dropped the cache); the run is marked cache_ok=false")
        if any(e.lost_processes for e in r.epochs):
            notes.append(f"{what}: a worker exited before its I/O counters were read; rchar/read_bytes/cpu of "
                         f"those epochs are incomplete")
    if uncounted:
        notes.append(drops.ABSENT)
    return notes

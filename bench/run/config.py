"""What one `python -m bench run` measures (BenchConfig), and the checks made before any reading."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import UsageError
from generator.objectstore.store import is_s3_url
from generator.lifetime import owned_name, sweep_dead

from bench.results.outputs import RESULTS, check_output
from bench.results.result import RUN_CACHES, ResultsError, RunConfig, _dump, _load

CACHES = RUN_CACHES  # cold, warm, asis, capped (bench.results.result checks results against the same list)
PROBE_PREFIX = ".layoutbench-probe-"  # + host-pid: check_writable's probe file


@dataclass(frozen=True)
class BenchConfig:
    """One `python -m bench run` command."""

    corpus: Path | str  # a directory, or an s3://bucket/prefix URL (a str: bench.run.s3storage)
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
    fio: bool = False  # also run fio's random reads beside the floors (bench/probe/fio.py)
    memory_limit: int | None = None  # capped: bytes of page cache on top of the loader's own memory
    loader: str = "ours"  # ours, torch (torch.utils.data.DataLoader) or both, side by side (bench.run.torchrun)
    pin_memory: bool = False  # DataLoader runs: pin_memory=True
    device: str | None = None  # cuda or cuda:N: copy each batch to that GPU (skipped, with a note, without CUDA)
    # --decode both: (True, False), every loader run decoded and as payload bytes only; () = run.decode alone
    decodes: tuple[bool, ...] = ()
    overwrite: bool = False  # --overwrite: --output may replace a file layoutbench did not write
    s3_data_dir: Path | None = None  # an S3 corpus: the bundled server's data directory (None: found from the endpoint)

    @property
    def decode_modes(self) -> tuple[bool, ...]:
        """Whether each loader run decodes, in the order measured: `decodes`, or run.decode alone."""
        return self.decodes or (self.run.decode,)


def inside(path: Path, root: Path) -> bool:
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def check_config(cfg: BenchConfig, manifest) -> None:
    """Refuse what would make the numbers untrue or damage the corpus, before any reading."""
    s3 = is_s3_url(cfg.corpus)
    if s3:
        check_s3(cfg)
    elif cfg.s3_data_dir is not None:
        raise UsageError(f"--s3-data-dir is for a corpus in S3 (--corpus s3://...); --corpus {cfg.corpus} is a directory")
    for what, path in (("--corpus", None if s3 else cfg.corpus), ("--output", cfg.output),
                       ("--checkpoint-dir", cfg.checkpoint_dir)):
        if path is not None and not Path(path).is_absolute():
            try:
                os.getcwd()
            except FileNotFoundError:
                raise UsageError(f"{what} {path}: the working directory no longer exists; cd to a directory that "
                                 f"does, or give an absolute path") from None
    for what, path in (("--output", cfg.output), ("--checkpoint-dir", cfg.checkpoint_dir)):
        if path is not None and not s3 and inside(path, cfg.corpus):
            raise UsageError(f"{what} {path} is inside the corpus directory {cfg.corpus}: results and "
                             f"checkpoints are never written onto the directory under test; choose another")
    from generator.layouts import get_layout

    for name in cfg.layouts or ():
        if (why := get_layout(name).missing()) is not None:
            raise UsageError(why)
    if cfg.run.shuffle == "shards":
        flat = [name for name in (cfg.layouts or ()) if not get_layout(name).reader_class().supports_streaming]
        if flat:
            raise UsageError(f"--shuffle shards reads streaming layouts (shards in random order through a shuffle "
                             f"buffer); {', '.join(flat)} is not one: drop it from --layouts or choose another --shuffle")
    missing = [name for name in (cfg.layouts or ()) if name not in manifest.layouts]
    if missing:
        raise UsageError(f"layout {missing[0]!r} is not in the corpus {cfg.corpus} (it has "
                         f"{', '.join(manifest.layouts) or 'none'}); generate it or drop it from --layouts")
    from .torchrun import check_torch

    check_torch(cfg.loader, cfg.run.worker_kind, cfg.workers)
    if not cfg.decode_modes or not all(type(d) is bool for d in cfg.decode_modes) or len(set(cfg.decode_modes)) != len(
            cfg.decode_modes):
        raise UsageError(f"decode modes must be True and/or False, each once; got {cfg.decodes!r}")
    if cfg.loader != "ours" and not any(cfg.decode_modes):
        raise UsageError(f"--loader {cfg.loader} measures torch's DataLoader, which always decodes; with --decode no "
                         f"use --loader ours, or --decode both")
    for cache in cfg.caches:
        if cache not in CACHES:
            raise UsageError(f"unknown cache setting {cache!r}; choose from {', '.join(CACHES)}")
    from bench.probe.regimes import check_capped

    check_capped(cfg, manifest, cfg.run.world)
    if (cfg.checkpoint_mb > 0) != (cfg.checkpoint_every > 0):
        raise UsageError("give --checkpoint-mb and --checkpoint-every together")
    check_reads_something(cfg, manifest)
    check_memory(cfg, manifest)
    check_round_trip(cfg)
    if Path(cfg.output).is_dir():
        raise UsageError(f"--output {cfg.output} is a directory; give a file name, e.g. {Path(cfg.output) / 'results.json'}")
    check_output(cfg.output, RESULTS, cfg.overwrite, "--output")  # never replaces what someone else wrote
    # Last: these make the directories if missing (as saving would), so only for a run that will go ahead.
    check_writable("--output", Path(cfg.output).parent)
    if cfg.checkpoint_mb > 0:
        ckdir = Path(cfg.checkpoint_dir or Path(cfg.output).parent)
        check_writable("--checkpoint-dir", ckdir)
        free = shutil.disk_usage(ckdir).free
        if cfg.checkpoint_mb * 1e6 > free:
            raise UsageError(f"--checkpoint-mb {cfg.checkpoint_mb:g} does not fit in {ckdir} ({free / 1e6:,.0f} MB "
                             f"free); give a smaller size or --checkpoint-dir on a larger disk")


def check_s3(cfg: BenchConfig) -> None:
    """What a run of a corpus in S3 cannot do, each one line: layouts not read over S3, other loaders
    than ours, process workers (the store's request counts are this process's), the capped regime,
    fio, and cold runs where the store's cache cannot be evicted from this host."""
    from generator.objectstore.store import S3Config, parse_url
    from loaders.s3 import refusal

    from .s3storage import bundled_data_dir, cold_refusal

    parse_url(cfg.corpus)
    for name in cfg.layouts or ():
        if (why := refusal(name, cfg.corpus)) is not None:
            raise UsageError(why)
    if cfg.loader != "ours":
        raise UsageError(f"--loader {cfg.loader} with --corpus {cfg.corpus}: over S3 only our loader runs (--loader ours)")
    if cfg.run.worker_kind != "thread":
        raise UsageError(f"--worker-kind {cfg.run.worker_kind} with --corpus {cfg.corpus}: over S3 the workers are "
                         f"threads (the store's requests are counted in this process); use --worker-kind thread")
    if "capped" in cfg.caches:
        raise UsageError(f"--cache capped with --corpus {cfg.corpus}: the capped regime caps this host's page cache "
                         f"under local files; over S3 use --cache cold, warm or asis")
    if cfg.fio:
        raise UsageError(f"--fio with --corpus {cfg.corpus}: fio reads local files; drop --fio")
    if "cold" in cfg.caches and cfg.s3_data_dir is None and bundled_data_dir(S3Config.from_env().endpoint) is None:
        raise UsageError(cold_refusal(cfg.corpus, S3Config.from_env().where))


def check_reads_something(cfg: BenchConfig, manifest) -> None:
    """Refuse a run some epoch of which would read nothing (its throughput would be 0 samples/s,
    reported as if measured): every rank gets at least one sample, and with --drop-last at
    least one full batch."""
    count, world, batch = manifest.spec.count, cfg.run.world, cfg.run.batch_size
    fewest = count // world  # the smallest rank's share (loaders.sampler.shard)
    if fewest == 0:
        raise UsageError(f"{world} ranks for {count:,} samples: some ranks would read nothing; use at most "
                         f"{count:,} ranks")
    if cfg.run.drop_last and batch > fewest:
        raise UsageError(f"--batch-size {batch:,} with --drop-last reads no sample of the {fewest:,} "
                         f"{'each rank has' if world > 1 else 'in the corpus'}: every batch would be dropped; use "
                         f"--batch-size {fewest:,} or less, or drop --drop-last")


def check_memory(cfg: BenchConfig, manifest) -> None:
    """Refuse batches in flight (workers x prefetch x batch, decoded or not) that do not fit in the
    memory available: the run would be killed by the OOM killer, or swap, and measure that."""
    spec = manifest.spec
    per_sample = spec.pixel_bytes if any(cfg.decode_modes) else max(manifest.sizes)
    batch = min(cfg.run.batch_size, manifest.spec.count) * per_sample
    in_flight = max(1, max(cfg.workers)) * cfg.run.prefetch * batch + 3 * batch
    avail = available_memory()
    if avail is not None and in_flight > avail:
        raise UsageError(f"batches in flight would take {in_flight / 1e9:,.1f} GB (up to {max(cfg.workers)} workers x "
                         f"--prefetch {cfg.run.prefetch} x {batch / 1e6:,.1f} MB batches) and {avail / 1e9:,.1f} GB "
                         f"is available; lower --prefetch, --batch-size or --workers")


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo, in bytes (None where it is not known)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_round_trip(cfg: BenchConfig) -> None:
    """What this run would store as its settings loads back as they are (bench/results/result.py checks
    types and values on load): a run whose results its own report would refuse is refused now."""
    try:
        back = _load(RunConfig, json.loads(json.dumps(_dump(cfg.run))), "the run's settings")
    except (ResultsError, ValueError, TypeError) as exc:
        raise UsageError(f"these settings could not be stored in results that load: {exc}") from None
    if back != cfg.run:
        raise UsageError("these settings do not survive being stored as results; report this as a bug")


def check_writable(what: str, directory: Path) -> None:
    """Refuse, before minutes of measuring, a directory the results or checkpoints cannot be
    written to (made if missing, as saving would; probed with a file created and removed)."""
    probe = directory / owned_name(PROBE_PREFIX)
    sweep_dead(directory, PROBE_PREFIX)  # what a run killed right here left
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{what}: cannot write in {directory} ({exc.strerror}); choose another place") from None

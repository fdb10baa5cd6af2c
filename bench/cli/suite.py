"""The default suite, what `make bench` runs: generate what is missing, run every layout cold and
warm on each corpus, a worker sweep of cold loose files, then the report. The console says what
is generated and each job as it runs (with the time left, estimated from the jobs done), then
ends with the verdict report.md opens with, where the report is, and each run not ok in one line
(--verbose adds the summary table, the floors and the notes). The project's own speed goals are
not part of it: `python -m bench.goals results/` measures them in the results files.

Full (FULL below; `make generate` makes its corpora): MNIST 20,000, ImageNet-size 800, an
ImageNet-like JPEG corpus of 700 (photo content, quality 90, sizes around 390x470), 4k-8bit 3 and
4k-16bit 2; every layout cold and warm with 2 loader threads, 2 epochs (4K: 3 epochs of one-image
batches) plus one per-sample timing epoch (read apart from decode), the naive baselines (not on
MNIST or 4k-16bit, nor on corpora of varying shape), 40 MB checkpoints on 4k-8bit, and cold MNIST loose
files with 1 and 2 worker processes. Then every layout of one corpus per sample-size class under
a memory cap (MNIST under 2.5M, ImageNet-size under 20M, the JPEG corpus's payload bytes under 8M in batches of 16,
each corpus at least 5x its cap), 4 epochs back to back, where a memory cgroup can be made (else
one line says they are left out), and the MNIST corpus's streaming layouts (tar, tfrecord: those
installed) cold and warm in their own order (`--shuffle shards`).
Quick (`make bench QUICK=1`): smaller corpora, the same runs, capped ImageNet-size only (the README
has the times measured).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import NamedTuple
from pathlib import Path

from generator.build import describe, generate
from generator.errors import UsageError
from generator.layouts import layouts
from generator.manifest import MANIFEST, read_manifest
from generator.sizes import parse_size_dist
from generator.spec import Spec, preset_spec

from bench.report.markdown import summary_table, write_report
from bench.report.verdict import verdict, verdict_console
from bench.results.result import RunConfig
from bench.run.config import BenchConfig, check_config, check_writable
from bench.run.runner import run_bench
from bench.run.torchrun import default_worker_kind


@dataclass(frozen=True)
class Corpus:
    """One corpus of the suite: its directory name under --data and the spec it is made from."""

    name: str
    spec: Spec


def preset(name: str, count: int) -> Corpus:
    return Corpus(f"{name}-{count}", preset_spec(name, count=count))


def imagenet_like(count: int) -> Corpus:
    """What ImageNet's train set is made of: photo-like content, JPEG quality 90, sizes varying
    around its average (about 390x470, each side normal with a standard deviation of 60 px; ~80 KB
    an image here, ImageNet's average is ~110 KB)."""
    return Corpus(f"imagenet-jpeg-{count}", Spec(height=390, width=470, channels=3, count=count, content="photo",
                                                   payload="jpeg", quality=90, sizes=parse_size_dist("normal:390x470,60")))


class Capped(NamedTuple):
    """One capped job: every layout of `corpus` under `size` of page cache (each corpus at least 5x
    it), in batches of `batch`; `decode` False reads the payload bytes only (see FULL)."""

    corpus: str
    size: str
    batch: int = 32
    decode: bool = True


@dataclass(frozen=True)
class SuitePlan:
    corpora: tuple[Corpus, ...]  # what `make generate` makes (python -m bench suite --generate-only)
    sweep: str  # the corpus whose cold loose files are read with 1 and 2 worker processes
    epochs: int = 2
    workers: int = 2  # loader threads of the main runs
    # 4K images: batches of one image (a 32-image batch would be the whole corpus, one batch an
    # epoch, nothing for workers to overlap) and one more epoch, as an epoch is only a few images
    big_batch: int = 1
    big_epochs: int = 3
    checkpoint: tuple[str, float, int] = ("4k-8bit-", 40.0, 1)  # corpus name prefix, MB, every N epochs (the seed's 40 MB)
    # the capped regime: one corpus per sample-size class, 1 + 3 steady epochs back to back
    capped: tuple[Capped, ...] = ()
    capped_epochs: int = 4
    # corpora read without the naive baselines, for the suite's 10 minutes: MNIST's make one library
    # call per sample (1,200-4,000 samples/s: 67 s of one 25,000-image job here; bench/speed/loader.py
    # measures them); 4K at 16 bit is the 8-bit corpus's shape at twice the bytes, and zarr-python's
    # oindex of one such image took 6-14 s
    no_naive: tuple[str, ...] = ("mnist-", "4k-16bit-")

    def corpus(self, name: str) -> Corpus:
        return next(c for c in self.corpora if c.name == name)


# Sized so that `make bench` takes under 10 minutes on a 2-core VM from a fresh clone, corpora
# included (README: the times measured); larger corpora: python -m bench run on your own.
# The JPEG corpus's capped run reads batches of 16 and does not decode. A cap must hold the
# batches in flight (2 workers x batch x its largest image, ~200 KB): 5x a cap that holds 32 a
# batch took 1,300 images, 73 s of cold and warm runs beside 38 s for ImageNet-size. Decoded, the
# loader's own memory (each batch a fresh list of images of their own sizes, ~96 MB with Pillow's
# buffers) swung past what was measured before the cap was set, and the OOM killer stopped every
# layout before its first epoch; the payload bytes are what the page cache holds in any case.
FULL = SuitePlan((preset("mnist", 20_000), preset("imagenet", 800), imagenet_like(700), preset("4k-8bit", 3),
                  preset("4k-16bit", 2)), "mnist-20000",
                 capped=(Capped("mnist-20000", "2.5M"), Capped("imagenet-800", "20M"),
                         Capped("imagenet-jpeg-700", "8M", batch=16, decode=False)))
QUICK = SuitePlan((preset("mnist", 10_000), preset("imagenet", 400), imagenet_like(300), preset("4k-8bit", 2),
                   preset("4k-16bit", 1)), "mnist-10000",
                  capped=(Capped("imagenet-400", "10M"),))  # mnist 10,000 and jpeg 300: too small for a cap 5x below them


def ensure_corpora(plan: SuitePlan, data: Path, progress: bool) -> list[Path]:
    """Every corpus of the plan under `data`, generated where missing (resumed where cut short)."""
    dirs = []
    for c in plan.corpora:  # all checked before any is made: minutes of generating, then a refusal, helps no one
        d = Path(data) / c.name
        if (d / MANIFEST).exists() and not (held := read_manifest(d).spec).same_corpus(c.spec):
            # the generator's advice (--force) is not the suite's: its corpora are named by its plan
            raise UsageError(f"{d} holds another corpus ({describe(held)}) than this make bench's plan makes there "
                             f"({describe(c.spec)}), likely from an older version; remove it (rm -r {d}) to have "
                             f"it made again, or give another --data")
    for c in plan.corpora:
        d = Path(data) / c.name
        if not (d / MANIFEST).exists():
            shape = (f"sizes {c.spec.sizes}, {c.spec.channels} channels" if c.spec.sizes else
                     f"{c.spec.height}x{c.spec.width}x{c.spec.channels}")
            print(f"generating {d} ({c.spec.count:,} images, {shape}, {c.spec.dtype}, {c.spec.payload})", flush=True)
        generate(d, c.spec, workers=os.cpu_count() or 1, progress=progress)
        dirs.append(d)
    return dirs


def capped_jobs(plan: SuitePlan, data: Path, out: Path, progress: bool) -> list[BenchConfig]:
    """Every layout of one corpus per sample-size class under its cap, 2 loader threads."""
    from bench.probe.regimes import parse_size

    return [BenchConfig(corpus=Path(data) / c.corpus, output=out / f"{c.corpus}-capped.json",
                        caches=("capped",), workers=(plan.workers,), naive=False, memory_limit=parse_size(c.size),
                        progress=progress, run=RunConfig(epochs=plan.capped_epochs, worker_kind="thread",
                                                         batch_size=c.batch, decode=c.decode, sample_latency=False))
            for c in plan.capped]


def fit_cap(cfg: BenchConfig) -> BenchConfig:
    """The capped job without the layouts whose design reads a unit larger than the cap for one
    sample (Parquet's row group: every batch would read whole groups again; `bench run` refuses
    them), nor those whose library breaks in a forked child (pylance), each left out with one line."""

    from generator.layouts import get_layout, layout_ids

    from bench.probe.regimes import not_fork_safe, oversized_units

    manifest = read_manifest(cfg.corpus)
    names = [n for n in layout_ids() if n in manifest.layouts and get_layout(n).missing() is None]
    dropped = dict(oversized_units(cfg.corpus, names, cfg.memory_limit))
    for name, unit in dropped.items():
        print(f"note: {cfg.corpus.name} capped: {name} left out: it reads {unit / 2**20:,.1f} MiB to give one "
              f"sample, more than the {cfg.memory_limit / 2**20:,.1f} MiB cap", flush=True)
    for name in not_fork_safe(names):
        dropped[name] = 0
        print(f"note: {cfg.corpus.name} capped: {name} left out: its library breaks in the forked child the capped "
              f"regime runs in", flush=True)
    return replace(cfg, layouts=tuple(n for n in names if n not in dropped))


def left(done_s: list[float], remaining: int) -> str:
    """The time left, estimated as the mean of the jobs done times the jobs remaining."""
    if not remaining:
        return "the report next"
    est = sum(done_s) / len(done_s) * remaining
    return f"about {est / 60:.0f} min left" if est >= 90 else f"about {est:.0f} s left"


def run_suite(data: Path, out: Path, quick: bool = False, progress: bool = False, generate_only: bool = False,
              verbose: bool = False, capped_only: bool = False) -> int:
    plan = QUICK if quick else FULL
    if capped_only:  # the capped jobs alone, on their corpora only
        if not plan.capped:
            raise UsageError("this plan has no capped jobs")
        names = {c.corpus for c in plan.capped}
        plan = replace(plan, corpora=tuple(c for c in plan.corpora if c.name in names))
    t0 = time.perf_counter()
    out = Path(out)
    if Path(data).exists() and not Path(data).is_dir():
        raise UsageError(f"--data {data} is not a directory; give the directory the corpora are kept in")
    if generate_only:
        for d in ensure_corpora(plan, data, progress):
            print(f"{d}: ready", flush=True)
        return 0
    check_writable("--out", out)  # before generating and measuring for minutes
    for layout in layouts().values():  # said once, never silently measured without
        if (why := layout.missing()) is not None:
            print(f"note: left out of this run: {why}", flush=True)
    dirs = ensure_corpora(plan, data, progress)
    files, results = [], []
    jobs = []
    for d in [] if capped_only else dirs:
        big = d.name.startswith("4k")
        rc = RunConfig(epochs=plan.big_epochs if big else plan.epochs, batch_size=plan.big_batch if big else 32,
                       worker_kind=default_worker_kind("ours", (plan.workers,), read_manifest(d).spec))
        ck_prefix, ck_mb, ck_every = plan.checkpoint
        ck = dict(checkpoint_mb=ck_mb, checkpoint_every=ck_every) if d.name.startswith(ck_prefix) else {}
        naive = not d.name.startswith(plan.no_naive)
        jobs.append(BenchConfig(corpus=d, output=out / f"{d.name}.json", workers=(plan.workers,), run=rc,
                                naive=naive, progress=progress, **ck))
    sweep = Path(data) / plan.sweep
    streaming = tuple(name for name, layout in layouts().items() if layout.missing() is None
                      and layout.reader_class().supports_streaming)
    if not capped_only:
        jobs.append(BenchConfig(corpus=sweep, output=out / f"{sweep.name}-workers.json", layouts=("files",),
                                caches=("cold",), workers=(1, 2), naive=False, progress=progress,
                                run=RunConfig(epochs=plan.epochs, worker_kind="process", sample_latency=False)))
    if streaming and not capped_only:  # the record layouts as their own loaders read them
        jobs.append(BenchConfig(corpus=sweep, output=out / f"{sweep.name}-shards.json", layouts=streaming,
                                workers=(plan.workers,), naive=False, progress=progress,
                                run=RunConfig(epochs=plan.epochs, worker_kind="thread", shuffle="shards")))
    capped = capped_jobs(plan, data, out, progress)
    if capped:
        from bench.probe.cgroups import CgroupUnavailable, find_parent

        try:
            find_parent()
            jobs += [fit_cap(cfg) for cfg in capped]
        except CgroupUnavailable as exc:
            if capped_only:
                raise UsageError(f"--capped-only: no memory cgroup can be made here: {exc}") from None
            print(f"bench: the capped runs are left out: {exc}", flush=True)
    for cfg in jobs:  # every job's settings checked before the first is measured, not minutes later
        try:
            check_config(cfg, read_manifest(cfg.corpus))
        except UsageError as exc:
            raise UsageError(f"the suite's run of {cfg.corpus} ({', '.join(cfg.caches)}) is refused: {exc}") from None
    took: list[float] = []
    for i, cfg in enumerate(jobs, 1):
        t = time.perf_counter()
        print(f"bench: [{i}/{len(jobs)}] {cfg.corpus} ({', '.join(cfg.layouts or ('every layout',))}; "
              f"{', '.join(cfg.caches)}) -> {cfg.output}", flush=True)
        res = run_bench(cfg)
        res.save(cfg.output)
        took.append(time.perf_counter() - t)
        print(f"       {took[-1]:.0f} s; {left(took, len(jobs) - i)}", flush=True)
        files.append(cfg.output)
        results.append(res)
    md = write_report(files, out, results=results)
    print_outcome(results, md, verbose, f"; {time.perf_counter() - t0:.0f} s in all")
    return 0


def print_outcome(results, md: Path, verbose: bool = False, tail: str = "") -> None:
    """The end of `bench suite` and `bench report`: with `verbose`, the summary table and the
    notes; then the verdict (the table, its sentences, each run not ok in one line), where the
    report is, and how many notes it holds."""
    if verbose:
        print(summary_table(results))
        for res in results:
            for note in res.notes:
                print(f"note: {note}")
    for line in verdict_console(verdict(results)):
        print(line)
    notes = sum(len(res.notes) for res in results)
    print(f"report: {md} (the evidence: tables, plots, results.csv beside it){tail}"
          + (f"; {notes} note{'s' * (notes != 1)} in it (Notes)" if notes else ""))

"""python -m bench: run | report | compare | suite | plan.

    python -m bench run --corpus DIR --output FILE.json [--layouts L,...] [--cache cold,warm]
                        [--epochs E] [--repeats R] [--batch-size B] [--workers K[,K...]] [--worker-kind KIND]
                        [--shuffle MODE] [--decode yes|no|both] [--checkpoint-mb M --checkpoint-every N]
                        [--compute-ms X] [--compute-ms-per-sample Y] [--compute-busy] [--warmup N] [--fio]
    python -m bench report FILE.json ... [--out results/] [--verbose]
    python -m bench compare A.json B.json [--force]
    python -m bench suite [--quick] [--verbose]  # what `make bench` runs
    python -m bench plan ...                   # storage demands of a training run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generator.cli import Parser, int_in, nonneg_int
from generator.objectstore.store import is_s3_url
from generator.errors import UsageError
from generator.layouts import layout_ids
from loaders.pipeline import WORKER_KINDS

from bench.results.result import SHUFFLES  # the values a results file may hold
from bench.run.torchrun import LOADER_OPTIONS

PROG = "python -m bench"
# emulated compute per batch (or per sample) above a minute is no training step: such a run would go
# on for hours (1e6 ms x 2 epochs of 300 batches is a week) and 1e13 overflowed the timing
COMPUTE_MS_MAX = 60_000.0


def number_in(low: float, high: float):
    """An argparse type: a finite number in [low, high], else a one-line error naming the bounds."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (low <= value <= high):  # NaN fails too
            raise argparse.ArgumentTypeError(f"{text} is outside [{low:g}, {high:,.0f}] (more than a minute of "
                                             f"compute per batch is no training step)")
        return value
    return parse


def comma_list(allowed=None, kind=str):
    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
        out = []
        for item in items:
            if allowed and item not in allowed:
                raise argparse.ArgumentTypeError(f"unknown value {item!r}; choose from {', '.join(allowed)}")
            out.append(kind(item))
        return tuple(dict.fromkeys(out))

    return parse


# Bounds of bench run's numbers (the loader's own, loaders.pipeline.LIMITS, for what it takes)
MAX_EPOCHS, MAX_REPEATS, MAX_BATCH, MAX_WORKERS, MAX_PREFETCH = 1_000_000, 1000, 1 << 25, 256, 1024
MAX_CHECKPOINT_MB = 1e9  # 1 PB; the free space of --checkpoint-dir is checked before the run


def nonneg_list(text: str):
    try:
        return comma_list(kind=int_in(0, MAX_WORKERS))(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise argparse.ArgumentTypeError(f"--workers takes integers >= 0 separated by commas ({exc})") from None


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    if value > MAX_CHECKPOINT_MB:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CHECKPOINT_MB:g}, got {text}")
    return value


def size_arg(text: str) -> int:
    from bench.probe.regimes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_run(sub) -> None:
    from bench.run.config import CACHES

    p = sub.add_parser("run", help="measure layouts of one corpus against the machine's floors",
                       description="Read every layout of one corpus the way training does (a new order each "
                                   "epoch, in batches, from workers), cold and warm, next to the floors of "
                                   "the same files; write versioned JSON.")
    p.add_argument("--corpus", type=corpus_arg, required=True,
                   help="corpus directory (made by python -m generator), or s3://BUCKET/PREFIX where one was uploaded "
                        "(python -m generator.objectstore upload; endpoint and keys from AWS_ENDPOINT_URL, "
                        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or a profile)")
    p.add_argument("--s3-data-dir", type=Path, default=None,
                   help="--corpus s3://...: the bundled server's data directory on this host, whose files cold runs "
                        "evict (default: found from the endpoint's weed process)")
    p.add_argument("--output", type=Path, required=True, help="results JSON (never inside the corpus)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --output replace a file layoutbench did not write (by default only a results file "
                        "of ours is replaced; a device, FIFO or link never is)")
    p.add_argument("--layouts", type=comma_list(layout_ids()), default=None,
                   help=f"comma list of {','.join(layout_ids())} (default: every layout the corpus has)")
    p.add_argument("--cache", type=comma_list(CACHES), default=("cold", "warm"),
                   help="comma list of cold, warm, asis, capped (default cold,warm); checked with mincore "
                        "(capped: also the cgroup's counters; needs --memory-limit)")
    p.add_argument("--memory-limit", type=size_arg, default=None, metavar="SIZE",
                   help="with --cache capped: the page cache the run may use (e.g. 320M, 1G; binary units), on "
                        "top of the loader's own memory, which is measured first; the loader and its workers run "
                        "in a memory cgroup of that limit")
    p.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), default=2, help="epochs per run; the first is reported apart (default 2)")
    p.add_argument("--repeats", type=int_in(1, MAX_REPEATS), default=1, help="repeat every run R times (default 1)")
    p.add_argument("--batch-size", type=int_in(1, MAX_BATCH), default=32, help="samples per batch (default 32)")
    p.add_argument("--workers", type=nonneg_list, default=(0,),
                   help="loader workers, a comma list to sweep, e.g. 1,2 (default 0: the calling thread)")
    p.add_argument("--worker-kind", choices=WORKER_KINDS, default=None,
                   help="thread, process (= fork), fork or spawn (default: process for uncompressed TIFF or raw "
                        "samples up to 1 MiB and with --loader torch|both, whose DataLoader workers are processes; "
                        "thread otherwise: docs/lab/2026-12-08-worker-kind.md)")
    p.add_argument("--shuffle", choices=SHUFFLES, default="shuffle",
                   help="epoch order (default shuffle); shards: the streaming layouts (tar, tfrecord) read as "
                        "their own loaders do, shards in random order through a shuffle buffer of 1024")
    p.add_argument("--prefetch", type=int_in(1, MAX_PREFETCH), default=2, help="batches in flight per worker (default 2)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="epoch order seed (default 0)")
    p.add_argument("--drop-last", action="store_true", help="drop the last partial batch")
    p.add_argument("--decode", choices=("yes", "no", "both"), default=None,
                   help="yes (default): decode every sample into pixels, as training does; no: deliver the "
                        "payload bytes only; both: measure every loader run both ways, side by side (the "
                        "payload-bytes view beside the decoded one). Each run's timing epoch splits every "
                        "sample's time into read and decode (wall and CPU; read alone when not decoding), and the "
                        "report says whether each corpus was I/O-bound or decode-bound")
    p.add_argument("--no-decode", action="store_true", help="the same as --decode no")
    p.add_argument("--no-sample-latency", action="store_true",
                   help="skip the extra per-sample timing epoch of each run (and with it the read/decode split)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive baselines (tifffile.imread, h5py)")
    p.add_argument("--checkpoint-mb", type=positive_number, help="emulate checkpoints of M MB (with --checkpoint-every)")
    p.add_argument("--checkpoint-every", type=int_in(1, MAX_EPOCHS), help="write a checkpoint every N epochs")
    p.add_argument("--checkpoint-dir", type=Path, help="where checkpoints go (default: beside --output)")
    p.add_argument("--evict", choices=("auto", "fadvise"), default="auto",
                   help="cold eviction: auto = drop_caches as root, else fadvise (default auto)")
    p.add_argument("--shard-shift", type=int_in(0, 2**31), default=0,
                   help="under MPI: rank r reads shard (r + epoch*S) %% ranks (default 0)")
    p.add_argument("--comm", choices=("auto", "single", "mpi"), default="auto",
                   help="auto (default): MPI when started by mpirun, else one process")
    p.add_argument("--compute-ms", type=number_in(0.0, COMPUTE_MS_MAX), default=0.0,
                   help="emulated compute per batch, ms, spent by the consumer while the loader prefetches; "
                        "each epoch records AU (default 0: none; at most 60,000: a minute per batch)")
    p.add_argument("--compute-ms-per-sample", type=number_in(0.0, COMPUTE_MS_MAX), default=0.0,
                   help="emulated compute per sample of each batch, ms (added to --compute-ms; at most 60,000)")
    p.add_argument("--compute-busy", action="store_true",
                   help="busy-wait the compute instead of sleeping (finer below 1 ms; holds a core and the GIL)")
    p.add_argument("--warmup", type=nonneg_int, default=0,
                   help="warm-up repeats run first and dropped (MLPerf: --repeats 5 --warmup 1; the report says "
                        "whether the repeats replicate within 5%%)")
    p.add_argument("--fio", action="store_true",
                   help="also run fio's random reads on the same files beside our floors (needs the fio package)")
    p.add_argument("--loader", choices=LOADER_OPTIONS, default="ours",
                   help="ours (default), torch (the same runs through torch.utils.data.DataLoader, per-sample and "
                        "batch datasets) or both, side by side; torch needs make install-torch")
    p.add_argument("--pin-memory", action="store_true", help="DataLoader runs: pin_memory=True")
    p.add_argument("--device", metavar="cuda[:N]",
                   help="copy each batch to this GPU as training does, timed beside a pinned-copy floor "
                        "(skipped, with a note, where there is no CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)


def corpus_arg(text: str):
    """--corpus: an s3:// URL as it is (a str), anything else a directory (a Path)."""
    return text if is_s3_url(text) else Path(text)


def cmd_run(args) -> int:
    from bench.report.markdown import summary_table
    from bench.results.result import RunConfig
    from bench.run.comm import get_comm
    from bench.run.config import BenchConfig
    from bench.run.runner import run_bench
    from bench.run.torchrun import default_worker_kind
    from generator.manifest import read_manifest

    if (args.checkpoint_mb is None) != (args.checkpoint_every is None):
        raise UsageError("give --checkpoint-mb and --checkpoint-every together")
    if isinstance(args.corpus, Path) and not args.corpus.is_dir():
        raise UsageError(f"--corpus {args.corpus}: no such directory (make a corpus with python -m generator)")
    if args.fio:
        from bench.probe.fio import require_fio

        require_fio()
    if args.no_decode and args.decode not in (None, "no"):
        raise UsageError(f"--no-decode contradicts --decode {args.decode}; give one of them")
    decode = "no" if args.no_decode else args.decode or "yes"
    comm = get_comm(args.comm)
    spec = read_manifest(args.corpus).spec if isinstance(args.corpus, Path) else None  # None: S3
    worker_kind = args.worker_kind or default_worker_kind(args.loader, args.workers, spec)
    if args.worker_kind is None and worker_kind != "thread" and comm.rank == 0:
        why = (f"--loader {args.loader}: DataLoader workers are processes, so every run's workers are" if args.loader != "ours"
               else f"uncompressed {spec.payload} samples: the runs' workers are")
        print(f"note: {why} {worker_kind} workers (give --worker-kind to choose)", file=sys.stderr)
    rc = RunConfig(batch_size=args.batch_size, worker_kind=worker_kind, shuffle=args.shuffle,
                   decode=decode != "no", prefetch=args.prefetch, seed=args.seed, epochs=args.epochs,
                   repeats=args.repeats, drop_last=args.drop_last, shard_shift=args.shard_shift,
                   sample_latency=not args.no_sample_latency, compute_ms=args.compute_ms,
                   compute_ms_per_sample=args.compute_ms_per_sample, compute_busy=args.compute_busy,
                   warmup=args.warmup)
    cfg = BenchConfig(corpus=args.corpus, output=args.output, layouts=args.layouts, caches=args.cache,
                      workers=args.workers, run=rc, naive=not args.no_naive,
                      checkpoint_mb=args.checkpoint_mb or 0.0, checkpoint_every=args.checkpoint_every or 0,
                      checkpoint_dir=args.checkpoint_dir, evict=args.evict, memory_limit=args.memory_limit,
                      progress=not args.quiet and sys.stderr.isatty(), fio=args.fio,
                      loader=args.loader, pin_memory=args.pin_memory, device=args.device,
                      decodes=(True, False) if decode == "both" else (), overwrite=args.overwrite,
                      s3_data_dir=args.s3_data_dir)
    results = run_bench(cfg, comm)
    if results is not None:
        results.save(args.output, overwrite=args.overwrite)
        print(summary_table([results]))
        for note in results.notes:
            print(f"note: {note}")
        print(f"results: {args.output}")
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="report.md, CSV and PNG plots from results files")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE.json")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default results/)")
    p.add_argument("--verbose", action="store_true",
                   help="also print the summary table, the floors and the notes (all in report.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace report.md, results.csv or a PNG under --out that layoutbench did not write "
                        "(by default such a file is never replaced)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from bench.report.markdown import write_report
    from bench.results.result import Results

    from .suite import print_outcome

    results = [Results.load(f) for f in args.files]
    md = write_report(args.files, args.out, results=results, overwrite=args.overwrite)
    print_outcome(results, md, verbose=args.verbose)
    return 0


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="two results files side by side, as ratios")
    p.add_argument("a", type=Path, metavar="A.json")
    p.add_argument("b", type=Path, metavar="B.json")
    p.add_argument("--force", action="store_true", help="compare runs even when their configs differ")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from bench.report.compare import compare

    print(compare(args.a, args.b, force=args.force))
    return 0


def add_suite(sub) -> None:
    p = sub.add_parser("suite", help="the default suite (make bench): generate if missing, run, report")
    p.add_argument("--quick", action="store_true", help="smaller corpora and fewer epochs (make bench QUICK=1)")
    p.add_argument("--data", type=Path, default=Path("data"), help="corpus directory root (default data/)")
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory (default results/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true",
                   help="also print the summary table, the floors and the notes at the end (all in report.md)")
    p.add_argument("--generate-only", action="store_true",
                   help="make the suite's corpora (those missing) and stop: what `make generate` runs")
    p.add_argument("--capped-only", action="store_true",
                   help="only the suite's capped jobs (and their corpora): to check the capped regime on this machine")
    p.set_defaults(func=cmd_suite)


def cmd_suite(args) -> int:
    from .suite import run_suite

    return run_suite(args.data, args.out, quick=args.quick, progress=not args.quiet and sys.stderr.isatty(),
                     generate_only=args.generate_only, verbose=args.verbose, capped_only=args.capped_only)


def add_plan(sub) -> None:
    from . import plan

    plan.add_parser(sub)


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.strip().splitlines()[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.strip().splitlines()[2:]))
    sub = p.add_subparsers(dest="command", metavar="{run,report,compare,suite,plan}", parser_class=Parser)
    sub.required = True
    for add in (add_run, add_report, add_compare, add_suite, add_plan):
        add(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


# What an interrupted command leaves, and what to do: run and report write their outputs only at
# the end (nothing is resumed); suite's corpora resume, its measurements start over.
INTERRUPTED = {
    "run": "no results were written (bench run does not resume): rerun the command to measure from the start",
    "report": "the report may be incomplete: rerun the command to write it again",
    "suite": "corpora already generated are kept; rerun the command: generation resumes, the measurements "
             "start over",
}


def interrupted(argv: list[str]) -> str:
    """The line after `interrupted;` for this command line (see INTERRUPTED)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    return INTERRUPTED.get(command, "nothing was written: rerun the command")


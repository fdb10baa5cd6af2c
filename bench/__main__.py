"""python -m bench: run | report | compare | suite | plan.

    python -m bench run --corpus DIR --output FILE.json [--layouts L,...] [--cache cold,warm]
                        [--epochs E] [--repeats R] [--batch-size B] [--workers K[,K...]] [--worker-kind KIND]
                        [--shuffle MODE] [--no-decode] [--checkpoint-mb M --checkpoint-every N]
    python -m bench report FILE.json ... [--out results/]
    python -m bench compare A.json B.json [--force]
    python -m bench suite [--quick]            # what `make bench` runs
    python -m bench plan ...                   # storage demands of a training run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generator.cli import Parser, nonneg_int, positive_int, run_main
from generator.errors import UsageError
from generator.layouts import layout_ids

PROG = "python -m bench"
SHUFFLES = ("shuffle", "sequential", "block", "buffer")
WORKER_KINDS = ("thread", "process", "fork", "spawn")


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


def nonneg_list(text: str):
    try:
        return comma_list(kind=nonneg_int)(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise argparse.ArgumentTypeError(f"--workers takes integers >= 0 separated by commas ({exc})") from None


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_run(sub) -> None:
    from .config import CACHES

    p = sub.add_parser("run", help="measure layouts of one corpus against the machine's floors",
                       description="Read every layout of one corpus the way training does (a new order each "
                                   "epoch, in batches, from workers), cold and warm, next to the floors of "
                                   "the same files; write versioned JSON.")
    p.add_argument("--corpus", type=Path, required=True, help="corpus directory (made by python -m generator)")
    p.add_argument("--output", type=Path, required=True, help="results JSON (never inside the corpus)")
    p.add_argument("--layouts", type=comma_list(layout_ids()), default=None,
                   help=f"comma list of {','.join(layout_ids())} (default: every layout the corpus has)")
    p.add_argument("--cache", type=comma_list(CACHES), default=("cold", "warm"),
                   help="comma list of cold, warm, asis (default cold,warm); checked with mincore")
    p.add_argument("--epochs", type=positive_int, default=2, help="epochs per run; the first is reported apart (default 2)")
    p.add_argument("--repeats", type=positive_int, default=1, help="repeat every run R times (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="samples per batch (default 32)")
    p.add_argument("--workers", type=nonneg_list, default=(0,),
                   help="loader workers, a comma list to sweep, e.g. 1,2 (default 0: the calling thread)")
    p.add_argument("--worker-kind", choices=WORKER_KINDS, default="thread",
                   help="thread (default), process (= fork), fork or spawn")
    p.add_argument("--shuffle", choices=SHUFFLES, default="shuffle", help="epoch order (default shuffle)")
    p.add_argument("--prefetch", type=positive_int, default=2, help="batches in flight per worker (default 2)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="epoch order seed (default 0)")
    p.add_argument("--drop-last", action="store_true", help="drop the last partial batch")
    p.add_argument("--no-decode", action="store_true", help="deliver payloads only (no pixels)")
    p.add_argument("--no-sample-latency", action="store_true",
                   help="skip the extra per-sample timing epoch of each run")
    p.add_argument("--no-naive", action="store_true", help="skip the naive baselines (tifffile.imread, h5py)")
    p.add_argument("--checkpoint-mb", type=positive_number, help="emulate checkpoints of M MB (with --checkpoint-every)")
    p.add_argument("--checkpoint-every", type=positive_int, help="write a checkpoint every N epochs")
    p.add_argument("--checkpoint-dir", type=Path, help="where checkpoints go (default: beside --output)")
    p.add_argument("--evict", choices=("auto", "fadvise"), default="auto",
                   help="cold eviction: auto = drop_caches as root, else fadvise (default auto)")
    p.add_argument("--shard-shift", type=nonneg_int, default=0,
                   help="under MPI: rank r reads shard (r + epoch*S) %% ranks (default 0)")
    p.add_argument("--comm", choices=("auto", "single", "mpi"), default="auto",
                   help="auto (default): MPI when started by mpirun, else one process")
    p.add_argument("--loader", choices=("ours", "torch", "both"), default="ours",
                   help="ours (default), torch (the same runs through torch.utils.data.DataLoader, per-sample and "
                        "batch datasets) or both, side by side; torch needs make install-torch")
    p.add_argument("--pin-memory", action="store_true", help="DataLoader runs: pin_memory=True")
    p.add_argument("--device", metavar="cuda[:N]",
                   help="copy each batch to this GPU as training does, timed beside a pinned-copy floor "
                        "(skipped, with a note, where there is no CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from .comm import get_comm
    from .report import summary_table
    from .result import RunConfig
    from .config import BenchConfig
    from .runner import run_bench

    if (args.checkpoint_mb is None) != (args.checkpoint_every is None):
        raise UsageError("give --checkpoint-mb and --checkpoint-every together")
    if not args.corpus.is_dir():
        raise UsageError(f"--corpus {args.corpus}: no such directory (make a corpus with python -m generator)")
    comm = get_comm(args.comm)
    rc = RunConfig(batch_size=args.batch_size, worker_kind=args.worker_kind, shuffle=args.shuffle,
                   decode=not args.no_decode, prefetch=args.prefetch, seed=args.seed, epochs=args.epochs,
                   repeats=args.repeats, drop_last=args.drop_last, shard_shift=args.shard_shift,
                   sample_latency=not args.no_sample_latency)
    cfg = BenchConfig(corpus=args.corpus, output=args.output, layouts=args.layouts, caches=args.cache,
                      workers=args.workers, run=rc, naive=not args.no_naive,
                      checkpoint_mb=args.checkpoint_mb or 0.0, checkpoint_every=args.checkpoint_every or 0,
                      checkpoint_dir=args.checkpoint_dir, evict=args.evict,
                      progress=not args.quiet and sys.stderr.isatty(),
                      loader=args.loader, pin_memory=args.pin_memory, device=args.device)
    results = run_bench(cfg, comm)
    if results is not None:
        results.save(args.output)
        print(summary_table([results]))
        for note in results.notes:
            print(f"note: {note}")
        print(f"results: {args.output}")
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="report.md, CSV and PNG plots from results files")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE.json")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default results/)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from .report import write_report

    md = write_report(args.files, args.out)
    print(f"report: {md}")
    return 0


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="two results files side by side, as ratios")
    p.add_argument("a", type=Path, metavar="A.json")
    p.add_argument("b", type=Path, metavar="B.json")
    p.add_argument("--force", action="store_true", help="compare runs even when their configs differ")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from .compare import compare

    print(compare(args.a, args.b, force=args.force))
    return 0


def add_suite(sub) -> None:
    p = sub.add_parser("suite", help="the default suite (make bench): generate if missing, run, report")
    p.add_argument("--quick", action="store_true", help="smaller corpora and fewer epochs (make bench QUICK=1)")
    p.add_argument("--data", type=Path, default=Path("data"), help="corpus directory root (default data/)")
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory (default results/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_suite)


def cmd_suite(args) -> int:
    from .suite import run_suite

    return run_suite(args.data, args.out, quick=args.quick, progress=not args.quiet and sys.stderr.isatty())


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


if __name__ == "__main__":
    sys.exit(run_main(PROG, main))

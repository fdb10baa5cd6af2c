"""python -m bench plan: what a training run asks of storage, and (given measurements) what it takes.

From the corpus size, sample size, epochs, batch size and checkpoints it prints the bytes per
epoch and in all, the file opens a loose-file layout pays, the checkpoint writes, the batches
(host-to-device transfers) per epoch and the read:write ratio. With --from RESULTS.json (from
`python -m bench run`) it projects each measured layout's epoch time on one node and, with
--target-epoch-hours, the aggregate bandwidth and the node count that target needs. Units are
decimal (1 PB = 1e15 B), as storage vendors and the seed article count.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from generator.cli import Parser, int_in, run_main
from generator.errors import UsageError
from generator.spec import PRESETS, preset_spec

PROG = "python -m bench plan"
UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def positive_float(text: str, lo: float = 0.0, hi: float = 1e12) -> float:
    """A positive number in [lo, hi] (the default bound, 10^12, keeps every product the plan prints finite)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"must be in [{lo:g}, {hi:g}], got {text}")
    return value


def float_in(lo: float, hi: float):
    return lambda text: positive_float(text, lo, hi)


@dataclass(frozen=True)
class Plan:
    images: int
    sample_bytes: int
    epochs: int
    batch_size: int
    checkpoint_bytes: int = 0
    checkpoint_every: int = 0  # 0: no checkpoints

    @property
    def bytes_per_epoch(self) -> int:
        return self.images * self.sample_bytes

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_epoch * self.epochs

    @property
    def file_opens(self) -> int:
        """Loose files: one open (and one metadata lookup) per image per epoch."""
        return self.images * self.epochs

    @property
    def checkpoint_writes(self) -> int:
        return self.epochs // self.checkpoint_every if self.checkpoint_every and self.checkpoint_bytes else 0

    @property
    def checkpoint_total_bytes(self) -> int:
        return self.checkpoint_writes * self.checkpoint_bytes

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.images // self.batch_size)  # the last, partial batch is a transfer too

    @property
    def read_write_ratio(self) -> float | None:
        return self.total_bytes / self.checkpoint_total_bytes if self.checkpoint_total_bytes else None


def human_bytes(n: float) -> str:
    """Decimal units with two decimals: 4592320000000000 -> '4.59 PB'."""
    value, unit = float(n), 0
    while abs(value) >= 1000 and unit < len(UNITS) - 1:
        value, unit = value / 1000, unit + 1
    return f"{value:.2f} {UNITS[unit]}" if unit else f"{int(value)} B"


def human_rate(bytes_per_s: float) -> str:
    return human_bytes(bytes_per_s) + "/s"


def human_seconds(s: float) -> str:
    for size, name in ((365.25 * 86400, "years"), (86400, "days"), (3600, "h"), (60, "min")):
        if s >= size:
            return f"{s / size:,.2f} {name}"
    return f"{s:.2f} s"


def sci(n: float) -> str:
    """5e11 -> '5x10^11' (the article's notation), 3125000 -> '3.125x10^6'."""
    if n == 0:
        return "0"
    exp = int(math.floor(math.log10(abs(n))))
    mant = f"{n / 10 ** exp:.4g}"
    return f"{mant}x10^{exp}"


def describe(plan: Plan, what: str) -> list[tuple[str, str]]:
    """The plan's figures as (name, value with units) rows."""
    rows = [
        ("sample", f"{what}, {plan.sample_bytes:,} B"),
        ("bytes per epoch", f"{human_bytes(plan.bytes_per_epoch)} ({plan.bytes_per_epoch:,} B)"),
        ("bytes read in all", f"{human_bytes(plan.total_bytes)} over {plan.epochs:,} epochs ({plan.total_bytes:,} B)"),
        ("file opens (loose files)", f"{sci(plan.file_opens)} ({plan.file_opens:,}; {plan.images:,} per epoch)"),
    ]
    if plan.checkpoint_writes:
        rows.append(("checkpoint writes", f"{plan.checkpoint_writes:,} (one per {plan.checkpoint_every:,} epochs, "
                     f"{human_bytes(plan.checkpoint_bytes)} each), {human_bytes(plan.checkpoint_total_bytes)} in all"))
    else:
        rows.append(("checkpoint writes", "none (give --checkpoint-mb and --checkpoint-every)"))
    rows.append(("batches per epoch", f"{plan.batches_per_epoch:,} host-to-device transfers of up to "
                 f"{plan.batch_size:,} samples ({human_bytes(plan.batch_size * plan.sample_bytes)} each)"))
    ratio = plan.read_write_ratio
    rows.append(("read:write ratio", f"{ratio:,.0f} : 1 (by bytes)" if ratio else "no writes"))
    return rows


@dataclass(frozen=True)
class Measured:
    """What a projection needs of one measured run (from a results file's typed runs)."""

    layout: str
    cache: str
    mb_per_s: float
    samples_per_s: float
    nodes: int = 1
    workers: int | None = None
    worker_kind: str = ""
    ranks: int = 1


@dataclass(frozen=True)
class Projection:
    layout: str
    cache: str
    setup: str  # workers and ranks of the measured run
    node_bytes_per_s: float  # one node's measured payload bandwidth
    measured_sample_bytes: float
    epoch_seconds: float  # the whole epoch on one node
    nodes: int | None  # nodes for the target epoch time (None without a target)


def project(plan: Plan, runs: list[Measured], target_hours: float | None) -> list[Projection]:
    """One node's measured MB/s -> epoch time; nodes = aggregate bandwidth needed / one node's.

    Assumes the storage behind the nodes scales with them (a parallel filesystem with enough
    servers): the node count is a lower bound when it does not.
    """
    out = []
    for run in runs:
        mb_s, sps = run.mb_per_s or 0.0, run.samples_per_s or 0.0
        if not (mb_s > 0 and sps > 0):
            continue  # a failed or empty run projects nothing
        per_node = mb_s * 1e6 / max(1, run.nodes)
        epoch_s = plan.bytes_per_epoch / per_node
        nodes = math.ceil(epoch_s / (target_hours * 3600)) if target_hours else None
        out.append(Projection(run.layout, run.cache, _setup(run), per_node, mb_s * 1e6 / sps, epoch_s, nodes))
    return out


def _setup(run: Measured) -> str:
    w = ("in-thread" if run.workers == 0 else f"{run.workers} {run.worker_kind} workers" if run.workers
         else "?")
    return f"{w}, {run.ranks} rank{'s' if run.ranks != 1 else ''}"


def load_runs(path: str) -> tuple[list[Measured], str]:
    """The measured runs of a bench results file, from its typed records (bench.results.result checks the
    format and version and recomputes every summary from the raw epochs)."""
    from bench.results.result import Results, summarize  # only --from needs the results module

    res = Results.load(path)
    runs = []
    for run in res.runs:
        s = summarize(run, res.floors, res.corpus)
        runs.append(Measured(run.layout, run.cache, s["mb_per_s"] or 0.0, s["samples_per_s"] or 0.0, s["nodes"],
                             run.config.workers, run.config.worker_kind, run.config.world))
    return runs, str(res.metadata.get("host", {}).get("name", ""))


def format_rows(rows: list[tuple[str, str]], indent: str = "  ") -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{indent}{name:<{width}}  {value}" for name, value in rows)


def format_projections(plan: Plan, projections: list[Projection], target_hours: float | None) -> str:
    head = ["layout", "cache", "setup", "one node", "sample", "epoch on one node", f"all {plan.epochs:,} epochs"]
    if target_hours:
        head += [f"nodes for {target_hours:g} h epochs"]
    table = [head]
    for p in projections:
        row = [p.layout, p.cache, p.setup, human_rate(p.node_bytes_per_s), human_bytes(p.measured_sample_bytes),
               human_seconds(p.epoch_seconds), human_seconds(p.epoch_seconds * plan.epochs)]
        if target_hours:
            row.append(f"{p.nodes:,}")
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    notes = []
    if any(abs(p.measured_sample_bytes / plan.sample_bytes - 1) > 0.5 for p in projections):
        notes.append("  note: some runs measured another sample size (column 'sample'); per-sample costs "
                     "(opens, decode, batching) do not scale with bytes, so measure the planned size to be sure")
    notes.append("  nodes assume the shared storage scales with them (enough servers): a lower bound otherwise")
    return "\n".join(lines + notes)


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--images", type=int_in(1, 10**15), required=True, help="images in the corpus, e.g. 1e8")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--preset", choices=list(PRESETS), help="sample size from a generator preset")
    size.add_argument("--image-mb", type=float_in(0, 1e6), help="sample size in decimal MB instead (45.9 = 45,900,000 B)")
    p.add_argument("--epochs", type=int_in(1, 10**9), required=True, help="training epochs")
    p.add_argument("--batch-size", type=int_in(1, 10**9), default=32, help="samples per batch (default 32)")
    p.add_argument("--checkpoint-mb", type=float_in(0, 1e9), help="checkpoint size in decimal MB")
    p.add_argument("--checkpoint-every", type=int_in(1, 10**9), help="epochs between checkpoints")
    p.add_argument("--from", dest="results", metavar="RESULTS.json",
                   help="measured results (python -m bench run --output): project each layout")
    p.add_argument("--target-epoch-hours", type=float_in(1e-3, 1e6), metavar="H",
                   help="wanted epoch time: prints the aggregate bandwidth and (with --from) the nodes it needs")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Hook for `python -m bench`: subparsers.add_parser('plan') wired to run(args)."""
    p = subparsers.add_parser("plan", help="storage demands of a training run, projected from measurements",
                              description=__doc__.strip())
    build_parser(p)
    p.set_defaults(func=run)
    return p


def plan_from_args(args) -> tuple[Plan, str]:
    if (args.checkpoint_mb is None) != (args.checkpoint_every is None):
        raise UsageError("give --checkpoint-mb and --checkpoint-every together (or neither)")
    if args.preset:
        spec = preset_spec(args.preset)
        sample, what = spec.pixel_bytes, f"{args.preset} ({spec.width}x{spec.height}x{spec.channels} {spec.dtype})"
    else:
        sample, what = round(args.image_mb * 1e6), f"{args.image_mb:g} MB"
    ckpt = round(args.checkpoint_mb * 1e6) if args.checkpoint_mb else 0
    return Plan(args.images, sample, args.epochs, args.batch_size, ckpt, args.checkpoint_every or 0), what


def render(args) -> str:
    plan, what = plan_from_args(args)
    rows = describe(plan, what)
    target = args.target_epoch_hours
    if target:
        need = plan.bytes_per_epoch / (target * 3600)
        rows.append((f"for {target:g} h epochs", f"{human_rate(need)} aggregate ({need:,.0f} B/s), "
                     f"{plan.images / (target * 3600):,.0f} samples/s"))
    out = [f"plan: {plan.images:,} images x {plan.epochs:,} epochs, batch {plan.batch_size:,}", format_rows(rows)]
    if args.results:
        runs, host = load_runs(args.results)
        projections = project(plan, runs, target)
        if not projections:
            raise UsageError(f"{args.results} holds no run with a positive mb_per_s and samples_per_s to project from")
        out.append(f"projected from {args.results}" + (f" (measured on {host})" if host else "") + ":")
        out.append(format_projections(plan, projections, target))
    return "\n".join(out)


def run(args) -> int:
    print(render(args))
    return 0


def main(argv=None) -> int:
    args = build_parser(Parser(prog=PROG, description=__doc__.strip())).parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(run_main(PROG, main, interrupted="nothing was written: rerun the command"))

"""python -m bench.goals RESULTS...: this project's own speed goals, measured in results files
(the developers' check; `make bench` does not run it). RESULTS are results files or directories
of them (every *.json in a directory, e.g. results/ after `make bench`). Prints one `goal:` line
per goal measured, each `met` or `NOT met`: the goals are reported, never asserted (exit 0).

    python -m bench.goals results/
    python -m bench.goals results/mnist-20000.json results/mnist-20000-workers.json

The goals: the harness under 0.2 us a sample; 4K runs at least 0.8x one stream's sequential read
of the same bytes; LMDB at least 0.8x HDF5 at MNIST size and loose files at ImageNet size, cold
and capped; capped reads at most 1.2x the pages missed; cold loose MNIST files 1.6x faster with 2
worker processes than 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generator.cli import Parser, run_main
from generator.errors import UsageError

from bench.report.analysis import corpus_name
from bench.results.result import Results, floor_cache, summarize

PROG = "python -m bench.goals"


def goals(results: list[Results]) -> list[str]:
    """The speed goals measured in `results`, one line each ending `met` or `NOT met`; a goal
    whose runs are not in `results` has no line."""
    lines = []
    harness = [r.floors.null_us_per_sample for r in results if r.floors.null_us_per_sample is not None]
    if harness:
        lines.append(f"harness cost: {max(harness):.4f} us/sample at most (goal <= 0.2): "
                     f"{'met' if max(harness) <= 0.2 else 'NOT met'}")
    for res in results:
        spec = res.corpus.get("spec", {})
        name = corpus_name(res)
        if str(spec.get("preset", "")).startswith("4k"):
            for run in res.runs:
                if run.kind != "loader":
                    continue
                # against one stream reading the same bytes in order (the goal's floor), not the
                # floor at the run's own concurrency (its x floor, which bounds it)
                seq = res.floors.seq_for(run.reads, fc) if (fc := floor_cache(run)) else None
                if seq is not None and seq.mb_per_s:
                    ratio = summarize(run, res.floors, res.corpus)["mb_per_s"] / seq.mb_per_s
                    lines.append(f"{name} {run.layout} {run.cache}: {ratio:.3f}x one stream's sequential read of the "
                                 f"same bytes (goal >= 0.8): {'met' if ratio >= 0.8 else 'NOT met'}")
        ref = {"imagenet": "files", "mnist": "hdf5"}.get(str(spec.get("preset")))
        for cache in ("cold", "capped") if ref else ():
            got = {run.layout: summarize(run, res.floors, res.corpus) for run in res.runs
                   if run.cache == cache and run.kind == "loader"}
            if "lmdb" in got and ref in got and got[ref]["mb_per_s"]:
                x = got["lmdb"]["mb_per_s"] / got[ref]["mb_per_s"]
                lines.append(f"{name} {cache}: lmdb {got['lmdb']['mb_per_s']:,.1f} MB/s = {x:.2f}x {ref} "
                             f"{got[ref]['mb_per_s']:,.1f} MB/s, same run (goal >= 0.8): {'met' if x >= 0.8 else 'NOT met'}")
        for run in res.runs:
            if run.cache == "capped":
                s = summarize(run, res.floors, res.corpus)
                amp = s["read_amplification_pages"]
                if amp is not None:
                    lines.append(f"{name} {run.layout} capped: device bytes {amp:.3f}x the pages it had to fetch, "
                                 f"{s['read_amplification']:.3f}x the payload it missed (goal <= 1.2 per steady "
                                 f"epoch): {'met' if amp <= 1.2 else 'NOT met'}")
        by_workers = {run.config.workers: summarize(run, res.floors, res.corpus)["samples_per_s"]
                      for run in res.runs if run.layout == "files" and run.cache == "cold" and run.kind == "loader"}
        if 1 in by_workers and 2 in by_workers and by_workers[1]:
            speedup = by_workers[2] / by_workers[1]
            lines.append(f"{name} cold files: 2 workers = {speedup:.3f}x one worker (goal >= 1.6): "
                         f"{'met' if speedup >= 1.6 else 'NOT met'}")
    return lines


def results_files(paths: list[Path]) -> list[Path]:
    """The results files named: each file as given, each directory's *.json in name order."""
    files = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            if not found:
                raise UsageError(f"{p} holds no *.json results files; give results files or the directory "
                                 f"`make bench` wrote (results/)")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise UsageError(f"{p}: no such file or directory; give results files or a directory of them")
    return files


def main(argv=None) -> int:
    p = Parser(prog=PROG, description=__doc__.strip().splitlines()[0],
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="\n".join(__doc__.strip().splitlines()[1:]))
    p.add_argument("paths", nargs="+", type=Path, metavar="RESULTS", help="results files or directories of them")
    args = p.parse_args(argv)
    results = [Results.load(f) for f in results_files(args.paths)]
    lines = goals(results)
    for line in lines:
        print(f"goal: {line}")
    if not lines:
        print("goal: none measured in these results (the goals read make bench's runs: 4K, MNIST, ImageNet-size, "
              "capped, and the MNIST worker sweep)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(PROG, main, interrupted="nothing was written: rerun the command"))

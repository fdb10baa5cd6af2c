"""How the ranks of one benchmark talk: rank, size, barrier, gather to rank 0, broadcast from it.

Every rank runs the same runner with its own shard (the loaders' Loader takes rank and world);
rank 0 gathers each epoch's records and aggregates them. A single process is a world of one.
`bench/run/mpi.py` (optional, mpi4py) provides the same four calls across MPI ranks; `get_comm`
picks it when asked for, so single-process use never imports MPI.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from generator.errors import UsageError


class Comm(Protocol):
    rank: int
    size: int

    def barrier(self) -> None: ...

    def gather(self, obj: Any) -> list | None:
        """Every rank's obj, in rank order, on rank 0; None on the other ranks."""

    def bcast(self, obj: Any) -> Any:
        """Rank 0's obj on every rank."""


class SingleProcessComm:
    """A world of one: every collective is immediate."""

    rank = 0
    size = 1

    def barrier(self) -> None:
        pass

    def gather(self, obj: Any) -> list:
        return [obj]

    def bcast(self, obj: Any) -> Any:
        return obj


# Set in every rank by the MPI launchers (Open MPI / PMIx, MPICH / Hydra, Intel MPI, MVAPICH).
LAUNCHER_ENV = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MV2_COMM_WORLD_SIZE")


def get_comm(kind: str = "auto") -> Comm:
    """'single'; 'mpi' (bench/run/mpi.py's MPIComm, needs mpi4py); 'auto' = mpi under an MPI launcher."""
    if kind not in ("auto", "single", "mpi"):
        raise UsageError(f"unknown --comm {kind!r}; choose auto, single or mpi")
    found = [v for v in LAUNCHER_ENV if v in os.environ]
    if kind == "single" or (kind == "auto" and not found):
        return SingleProcessComm()
    from .mpi import MPIComm

    try:
        return MPIComm()
    except UsageError as exc:
        if kind == "auto":  # an MPI launcher's variable, perhaps left in the environment: say how to run single
            raise UsageError(f"{exc}; this looks like a run started by an MPI launcher ({', '.join(found)} "
                             f"set): to run in one process, unset {' '.join(found)} or give --comm single") from None
        raise

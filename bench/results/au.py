"""Accelerator utilization (AU): how much of a training job's time its accelerator computes,
measured under emulated compute (`bench run --compute-ms X`) and predicted from a run without.

AU (MLPerf Storage / DLIO): total compute time / total running time of an epoch. Here the
running time is the whole epoch, from asking the loader for it (a fresh loader's start-up
included) to the end of the last step's compute; compute time is what the consumer spent in
its steps, measured around them. MLPerf leaves the first step out of epochs of >= 500 steps; an
epoch here may be a few batches (4K images), where leaving the first wait out would leave out
nearly all the waiting, so it is kept in (the conservative choice). A run keeps up with its accelerator
when AU >= AU_TARGET (MLPerf's 90 % for ResNet-50 and 3D U-Net).

Prediction: a run without compute records when each batch arrived (EpochRecord.batch_ns, the
consumer's waits). From those arrival times `fetch_times` estimates each batch's fetch time in
its worker (batch k is fetched by worker k % W after that worker's batch k - W: the gap
between their arrivals), and `simulate` replays the loader with a step of c seconds after each
batch: a batch is handed to a worker once the consumer has asked for the batch `window` =
workers x prefetch before it, a worker fetches one batch at a time, batches arrive in order,
and the consumer computes each for c. With no workers the consumer fetches each batch itself,
after the previous step. The model ignores what the steps would take from the workers (a sleep
takes nothing; a CPU-bound step on a machine with few cores would).
"""

from __future__ import annotations

import heapq

import numpy as np

AU_TARGET = 0.90


def au(compute_s: float, running_s: float) -> float | None:
    """compute / running time, at most 1; None when nothing was computed or no time ran."""
    if not compute_s or running_s <= 0:
        return None
    return min(1.0, compute_s / running_s)


def fetch_times(waits_s, workers: int) -> np.ndarray:
    """Per-batch fetch seconds estimated from one epoch's consumer waits without compute (see the
    module docstring): with W workers, arrival[k] - arrival[k - W] (the first W: their arrival
    times, since all start at once); without workers, the waits themselves."""
    w = np.asarray(waits_s, np.float64)
    if workers <= 0:
        return w.copy()
    arrival = np.cumsum(w)
    f = arrival.copy()
    f[workers:] = arrival[workers:] - arrival[:-workers]
    return np.maximum(f, 0.0)


def simulate(fetch_s, workers: int, window: int, compute_s: float, round_robin: bool = False) -> tuple[float, float]:
    """(epoch seconds, AU) of a loader whose batches take `fetch_s` each, with a step of
    `compute_s` after each batch. `round_robin`: batch k goes to worker k % W (process workers);
    else to the first free one (a thread pool's queue)."""
    f = np.asarray(fetch_s, np.float64)
    n = len(f)
    if n == 0:
        return 0.0, None
    ends = np.empty(n)
    arrivals = np.empty(n)
    if workers <= 0:
        t = 0.0
        for k in range(n):
            arrivals[k] = t + f[k]
            t = ends[k] = arrivals[k] + compute_s
    else:
        window = max(window, workers)
        free = [0.0] * workers
        prev_end = 0.0
        done = np.empty(n)
        for k in range(n):
            submit = ends[k - window] if k >= window else 0.0
            if round_robin:
                w = k % workers
                start = max(submit, free[w])
                free[w] = done[k] = start + f[k]
            else:
                start = max(submit, heapq.heappop(free))
                done[k] = start + f[k]
                heapq.heappush(free, done[k])
            arrivals[k] = max(done[k], prev_end)
            prev_end = ends[k] = arrivals[k] + compute_s
    return float(ends[-1]), au(n * compute_s, float(ends[-1]))


def run_model(run) -> tuple[int, int, bool]:
    """(workers, window, round_robin) of a Run's loader, as loaders/workers.py runs it."""
    c = run.config
    workers = 0 if run.kind == "naive" else c.workers
    return workers, workers * c.prefetch, c.worker_kind != "thread"


def epochs_for_prediction(run) -> list:
    """The steady throughput epochs without compute (all throughput epochs if none are steady)."""
    counted = [e for e in run.epochs if not e.timing and not e.compute_s]
    steady = [e for e in counted if not e.first]
    return steady or counted


def predict(run, compute_s: float) -> float | None:
    """Predicted AU of `run` with a step of `compute_s` per batch: the median over its epochs."""
    workers, window, rr = run_model(run)
    out = [simulate(fetch_times(np.asarray(e.batch_ns) / 1e9, workers), workers, window, compute_s, rr)[1]
           for e in epochs_for_prediction(run) if e.batch_ns]
    out = [x for x in out if x is not None]
    return float(np.median(out)) if out else None


def predict_curve(run, grid_s) -> list[tuple[float, float | None]]:
    return [(c, predict(run, c)) for c in grid_s]


def min_compute(run, target: float = AU_TARGET, hi: float = 60.0) -> float | None:
    """The smallest compute per batch (seconds, within 1 %) at which `run` is predicted to keep
    AU >= target; None when it has no epochs to predict from or needs more than `hi`."""
    if not epochs_for_prediction(run):
        return None
    lo_s, hi_s = 0.0, 1e-6
    while (predict(run, hi_s) or 0.0) < target:
        lo_s, hi_s = hi_s, hi_s * 2
        if hi_s > hi:
            return None
    while hi_s - lo_s > 0.01 * hi_s:
        mid = (lo_s + hi_s) / 2
        lo_s, hi_s = (lo_s, mid) if (predict(run, mid) or 0.0) >= target else (mid, hi_s)
    return hi_s


def compute_grid(lo_s: float = 1e-5, hi_s: float = 10.0, points: int = 40) -> np.ndarray:
    return np.geomspace(lo_s, hi_s, points)

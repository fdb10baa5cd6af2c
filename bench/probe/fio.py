"""fio beside our floors: the same files, the same random reads, the same concurrency and cache
state, measured by an independent tool (`bench run --fio`).

    fio_floor(layout, paths, "cold", jobs=W, iodepth=B, block=sample size, ...) -> FioFloor

One fio job per stream (numjobs = the run's streams), each its own share of the bytes, so every
sample-sized block is read once, as our `rand` floor and an epoch read them: a file packed with
samples is cut into `jobs` ranges (offset, size); loose files are dealt to the jobs as file
lists (as many, relative to their common directory, as fio's 4096-character option value
holds: an even sample of a large corpus). rw=randread, bs = the sample size, iodepth = the batch size, direct=0 and invalidate=0
(fio must not drop the page cache itself: the cache state is set and checked here, before fio
starts). The engine is io_uring where fio has it (buffered reads really are asynchronous there;
libaio completes buffered reads inside the submit call, so its iodepth would be 1), else libaio
for iodepth > 1, psync for iodepth 1. fio's own IOPS and MB/s (bw_bytes) are recorded as it
reports them (runtime in whole milliseconds).

fio is optional: without it `--fio` is one line naming the Debian package, exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from generator.errors import LayoutbenchError, UsageError

from bench.results.result import FioFloor

from .regimes import settle

PACKAGE_HINT = "--fio needs fio: install the Debian package fio (make install-fio, or apt-get install -y fio)"
OPTION_MAX = 4000  # fio refuses an option value over 4096 characters: loose files beyond that are sampled evenly


def fio_path() -> str | None:
    return shutil.which("fio")


def require_fio() -> str:
    """fio's path, or UsageError (exit 2) naming the package."""
    path = fio_path()
    if path is None:
        raise UsageError(PACKAGE_HINT)
    return path


def engine(fio: str, iodepth: int) -> str:
    if iodepth <= 1:
        return "psync"
    engines = subprocess.run([fio, "--enghelp"], capture_output=True, text=True).stdout
    return "io_uring" if "io_uring" in engines.split() else "libaio"


def jobfile(paths, jobs: int, iodepth: int, block: int, samples: int, ioengine: str) -> str:
    """fio's job file for `jobs` streams over `paths` (see the module docstring)."""
    lines = ["[global]", "rw=randread", f"bs={block}", f"ioengine={ioengine}", f"iodepth={iodepth}", "direct=0",
             "invalidate=0", "randrepeat=0", "group_reporting=1", "thread=0", ""]
    paths = [str(p) for p in paths]
    if len(paths) >= samples:  # loose files: each job its own files, each file read whole
        top = os.path.commonpath(paths)
        names = [os.path.relpath(p, top).replace(":", "\\:") for p in paths]
        per_job = max(1, OPTION_MAX // (max(map(len, names)) + 1) - 1)
        step = max(1, -(-len(names) // (per_job * jobs)))  # an even sample when the names do not fit
        for j in range(jobs):
            mine = names[j * step::jobs * step][:per_job]
            lines += [f"[s{j}]", f"directory={top}", "filename=" + ":".join(mine),
                      f"openfiles={max(1, iodepth)}", "file_service_type=random", ""]
    else:
        for p in paths:
            size = os.path.getsize(p)
            share = size // jobs // block * block
            if share < block:
                continue
            for j in range(jobs):
                lines += [f"[s{j}-{len(lines)}]", f"filename={p.replace(':', chr(92) + ':')}", f"offset={j * share}",
                          f"size={share}", ""]
    return "\n".join(lines)


def fio_floor(layout: str, paths, cache: str, jobs: int, iodepth: int, block: int, samples: int,
              evict: str) -> FioFloor:
    """Run fio's random reads of `paths` at `jobs` x `iodepth` in the `cache` state (set and
    checked here first) and return its figures."""
    fio = require_fio()
    ioengine = engine(fio, iodepth)
    with tempfile.NamedTemporaryFile("w", suffix=".fio", delete=False) as f:
        f.write(jobfile(paths, jobs, iodepth, max(1, block), samples, ioengine))
    try:
        state = settle(cache, paths, evict)
        p = subprocess.run([fio, "--output-format=json", f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    try:
        data = json.loads(p.stdout[p.stdout.find("{"):])
        job = data["jobs"][0]
        read = job["read"]
    except (ValueError, KeyError, IndexError):
        raise LayoutbenchError(f"fio failed on {layout} ({cache}): {(p.stderr or p.stdout).strip()[:300]}") from None
    if job.get("error"):
        raise LayoutbenchError(f"fio reported error {job['error']} on {layout} ({cache}): {p.stderr.strip()[:300]}")
    seconds = read["runtime"] / 1e3
    return FioFloor(layout, cache, jobs, iodepth, ioengine, block, int(read["total_ios"]), int(read["io_bytes"]),
                    seconds, float(read["iops"]), float(read["bw_bytes"]) / 1e6, state.residency,
                    str(data.get("fio version", "")))

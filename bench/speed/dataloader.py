"""Our Loader against torch's DataLoader and its ceilings, warm page cache, alternated in one process.

    .venv/bin/python -m bench.speed.dataloader --corpus /tmp/mnist-60000 [--layout hdf5] [--workers 2]
        [--rounds 3] [--batch-size 32] [--group auto[,K...]] [--no-tensor-ceilings]

Needs torch (make install-torch). Each round runs every row once, in turn (the row order rotates
from round to round), each on a fresh loader: one untimed epoch that starts its workers, then one
timed epoch over the whole corpus in a shuffled order, re-warmed before and its residency checked
after (reading rows below 99% resident before or after are marked NOT WARM). Rows:

- ours: loaders.pipeline.Loader, process workers (fork).
- torch-batch group=1: DataLoaderPipeline's batch dataset, one batch per DataLoader item.
- torch-batch group=K: the same with K batches per item (each still one read_batch), what `bench
  run --loader torch` uses ("auto": loaders.torch.auto_group).
- ceiling packed, group=1 / K: a DataLoader whose dataset hands back one preallocated packed
  item of the same shape (no reading): what DataLoader's machinery and this transport cost alone.
- ceiling tensor, file_descriptor / file_system: a dataset returning one preallocated uint8
  images tensor and one int64 targets tensor per batch, torch's default transport (each tensor
  a shared-memory segment; file_descriptor passes a descriptor per tensor, file_system a name).

Printed per row: the median samples/s of the rounds with min..max, x ours (the ratio of the
medians, and paired: the median of each round's ratio to ours' epoch of that round), the CPU
spent per batch by the main process (every thread) and by the workers (/proc, clock ticks), and
ours' CPU per batch over the row's (what the rates' ratio tends to where every core is busy).
The machine is shared and noisy: compare the rows of one run, never runs of different times.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from generator.cli import Parser, positive_int, run_main
from generator.errors import UsageError

WARM = 0.99


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far, every thread."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rows(args, reader_of):
    """(name, make) per row; make() -> (epoch(e) -> iterable of batches, worker pids(), close())."""
    import torch
    import loaders.torch as lt
    from loaders.pipeline import Loader

    B, W = args.batch_size, args.workers
    probe = lt.BatchDataset(reader_of())
    groups = []
    for g in args.group.split(","):
        k = lt.auto_group(probe, B) if g == "auto" else int(g)
        if k > 1 and k not in groups:
            groups.append(k)

    def ours():
        ld = Loader(reader_of(), batch_size=B, workers=W, worker_kind="fork")
        return ld.epoch, lambda: ld.worker_pids, ld.close

    def torch_batch(k):
        def make():
            p = lt.DataLoaderPipeline(reader_of(), "batch", batch_size=B, workers=W, group=k)
            return p.epoch, lambda: p.worker_pids, p.close
        return make

    def dataloader(ds, sampler, loader_cls, strategy="file_descriptor"):
        torch.multiprocessing.set_sharing_strategy(strategy)  # inherited by the forked workers
        dl = loader_cls(ds, sampler=sampler, num_workers=W, persistent_workers=True, prefetch_factor=2,
                        multiprocessing_context="fork", **({} if loader_cls is lt.BatchLoader
                                                           else dict(batch_size=None, collate_fn=lt._keep)))

        def epoch(e):
            sampler.set_epoch(e)
            return iter(dl)

        def close():
            it = getattr(dl, "_iterator", None)
            if it is not None:
                it._shutdown_workers()
            torch.multiprocessing.set_sharing_strategy("file_descriptor")

        return epoch, lambda: [w.pid for w in getattr(getattr(dl, "_iterator", None), "_workers", [])], close

    def ceiling_packed(k):
        def make():
            reader = reader_of()
            return dataloader(_FixedPacked(reader), lt.EpochBatchSampler(len(reader), B, group=k), lt.BatchLoader)
        return make

    def ceiling_tensor(strategy):
        def make():
            reader = reader_of()
            ds = _FixedTensors(len(reader), (B, *reader.spec.shape))
            return dataloader(ds, lt.EpochBatchSampler(len(reader), B), torch.utils.data.DataLoader, strategy)
        return make

    out = [("ours", ours), ("torch-batch group=1", torch_batch(1))]
    out += [(f"torch-batch group={k}", torch_batch(k)) for k in groups]
    out.append(("ceiling packed group=1", ceiling_packed(1)))
    out += [(f"ceiling packed group={k}", ceiling_packed(k)) for k in groups]
    if args.tensor_ceilings:
        out += [("ceiling tensor file_descriptor", ceiling_tensor("file_descriptor")),
                ("ceiling tensor file_system", ceiling_tensor("file_system"))]
    return out, lt.auto_group(probe, B)


def _dataset_classes():
    import loaders.torch as lt
    from torch.utils.data import Dataset

    class FixedPacked(lt.BatchDataset):
        """A BatchDataset that reads nothing: every item is one packed item prepared once per
        shape (the first batches of the corpus), so only the DataLoader and the transport cost."""

        def __init__(self, reader):
            super().__init__(reader, with_index=True)
            self.numpy_transport = True
            self._made = {}

        def __getitem__(self, indices):
            groups = indices if isinstance(indices, lt.BatchGroup) else [indices]
            key = tuple(len(b) for b in groups)
            if key not in self._made:
                a, batches = 0, []
                for n in key:
                    batches.append(np.arange(a, a + n))
                    a += n
                self._made[key] = lt._PackedBatch(self.reader, batches, self._label_np, True)
            return self._made[key]

    class FixedTensors(Dataset):
        """One preallocated uint8 images tensor and int64 targets tensor, whatever the indices."""

        def __init__(self, n, shape):
            import torch

            self.n = n
            self.images = torch.zeros(shape, dtype=torch.uint8)
            self.targets = torch.zeros(shape[0], dtype=torch.int64)

        def __len__(self):
            return self.n

        def __getitem__(self, indices):
            return self.images[:len(indices)], self.targets[:len(indices)]

    return FixedPacked, FixedTensors


def main(argv=None) -> int:
    p = Parser(prog="python -m bench.speed.dataloader", description=__doc__.strip().splitlines()[0])
    p.add_argument("--corpus", required=True, help="corpus directory (e.g. python -m generator --preset mnist)")
    p.add_argument("--layout", default="hdf5", help="layout to read (default hdf5)")
    p.add_argument("--workers", type=positive_int, default=2, help="worker processes (default 2)")
    p.add_argument("--rounds", type=positive_int, default=3, help="rounds of every row (default 3)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="samples per batch (default 32)")
    p.add_argument("--group", default="auto",
                   help="batches per DataLoader item of the grouped rows: a comma list of auto or integers "
                        "(default auto)")
    p.add_argument("--no-tensor-ceilings", dest="tensor_ceilings", action="store_false",
                   help="leave out the two tensor-transport ceilings (the slowest rows)")
    args = p.parse_args(argv)
    if not all(g == "auto" or (g.isdigit() and int(g) >= 1) for g in args.group.split(",")):
        raise UsageError(f"--group takes a comma list of auto or integers >= 1, got {args.group!r}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("python -m bench.speed.dataloader needs PyTorch, which is not installed: make install-torch")
    import loaders
    from bench.probe import probes

    global _FixedPacked, _FixedTensors
    _FixedPacked, _FixedTensors = _dataset_classes()
    corpus = Path(args.corpus)

    def reader_of():
        return loaders.open_corpus(corpus, args.layout)

    table, group = rows(args, reader_of)
    n = len(reader_of())
    paths = reader_of().paths()
    print(f"{corpus} ({args.layout}, {n:,} samples of {reader_of().spec.pixel_bytes} B), warm, {args.workers} workers, "
          f"batches of {args.batch_size}, {args.rounds} rounds; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores", flush=True)
    rates = {name: [] for name, _ in table}
    cpu_main = {name: [] for name, _ in table}
    cpu_workers = {name: [] for name, _ in table}
    cold = set()
    for r in range(args.rounds):
        for name, make in table[r % len(table):] + table[:r % len(table)]:
            epoch, pids, close = make()
            try:
                for _ in epoch(1000 + r):  # starts the workers; first-use costs out of the timing
                    pass
                before = probes.warm(paths).fraction
                workers = pids()
                w0, m0 = sum(proc_cpu(p) for p in workers), time.process_time()
                t0 = time.perf_counter()
                batches = samples = 0
                for b in epoch(r):
                    batches += 1
                    samples += len(b.indices) if hasattr(b, "indices") else len(b[1])
                seconds = time.perf_counter() - t0
                m1, w1 = time.process_time(), sum(proc_cpu(p) for p in workers)
            finally:
                close()
            if samples != n:
                raise UsageError(f"{name}: read {samples} samples of {n}")
            if not name.startswith("ceiling") and min(before, probes.residency(paths).fraction) < WARM:
                cold.add(name)  # the ceilings read nothing: their residency does not matter
            rates[name].append(n / seconds)
            cpu_main[name].append((m1 - m0) / batches * 1e6)
            cpu_workers[name].append((w1 - w0) / batches * 1e6)
            print(f"round {r}  {name:32s} {n / seconds:10,.0f} samples/s  main {cpu_main[name][-1]:6.1f} us/batch  "
                  f"workers {cpu_workers[name][-1]:6.1f} us/batch", flush=True)
    ours = statistics.median(rates["ours"])
    print(f"\n{'row':32s} {'samples/s':>10s}  {'min..max':>19s}  {'x ours':>6s}  {'paired':>6s}  {'main us/b':>9s}  "
          f"{'workers us/b':>12s}  {'CPU x ours':>10s}")
    ours_cpu = statistics.median(cpu_main["ours"]) + statistics.median(cpu_workers["ours"])
    for name, _ in table:
        med = statistics.median(rates[name])
        paired = statistics.median(a / b for a, b in zip(rates[name], rates["ours"]))
        cpu = statistics.median(cpu_main[name]) + statistics.median(cpu_workers[name])
        print(f"{name:32s} {med:10,.0f}  {min(rates[name]):>8,.0f}..{max(rates[name]):<9,.0f}  {med / ours:6.2f}  "
              f"{paired:6.2f}  {statistics.median(cpu_main[name]):9.1f}  {statistics.median(cpu_workers[name]):12.1f}  "
              f"{ours_cpu / cpu:10.2f}" + ("  NOT WARM in a round" if name in cold else ""))
    print("x ours: the ratio of the medians; paired: the median of the rounds' ratios (each against ours' epoch "
          "of the same round); CPU x ours: ours' CPU per batch (main + workers) over the row's, the rate ratio "
          "where every core is busy")
    print(f"auto group here: {group} batches per DataLoader item (loaders.torch.auto_group); load average now "
          f"{os.getloadavg()[0]:.2f}")
    return 0


_FixedPacked = _FixedTensors = None

if __name__ == "__main__":
    sys.exit(run_main("python -m bench.speed.dataloader", main, interrupted="rerun the command to measure again"))

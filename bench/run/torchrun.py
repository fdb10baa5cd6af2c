"""The PyTorch side of `bench run`: `--loader torch|both` (the same runs through
torch.utils.data.DataLoader) and `--device cuda[:N]` (each batch copied to the GPU).

A DataLoader run is a RunSpec with loader torch-sample (TorchDataset: one __getitem__ per sample,
default_collate) or torch-batch (BatchDataset: one read_batch per batch, not re-collated), kind
"torch", reading its layout's files (its floor). The batch run groups small batches K to a
DataLoader item (loaders.torch's group="auto"; each batch still one read_batch, handed out one by
one, in the same order), since one DataLoader item costs its main process about the same whatever
its size (docs/lab/2026-12-01-pytorch-dataloader.md); the run's "dataloader" settings record K as
batches_per_item. torch is imported only when one of these is asked for; without it `--loader
torch` is one line naming `make install-torch` (exit 2), and `--device cuda` without CUDA is one
line and the copy stage is skipped.
"""

from __future__ import annotations

from generator.errors import UsageError
from generator.libraries import missing, problem

from bench.results.spec import LOADER_OPTIONS as _OPTIONS

LOADER_OPTIONS = tuple(_OPTIONS)  # --loader: ours, torch's DataLoader, both, the ecosystem's, or all
INSTALL = "make install-torch (or pip install -e '.[torch]')"


def check_torch(loader: str, worker_kind: str, workers) -> None:
    """Refuse, before reading anything, what a DataLoader run cannot do: torch's DataLoader runs
    (torch, both) and the ecosystem's loaders (ecosystem, all: each runs in a DataLoader) need
    torch, and their workers are processes. Which layouts' ecosystem loaders can run here is
    checked per layout once the layouts are known (bench.run.ecosystem.leave_out)."""
    if loader not in LOADER_OPTIONS:
        raise UsageError(f"unknown loader {loader!r}; choose from {', '.join(LOADER_OPTIONS)}")
    if loader == "ours":
        return
    if (why := missing(f"--loader {loader}", ("torch",))) is not None:
        raise UsageError(why)
    if worker_kind == "thread" and any(workers):
        raise UsageError(f"--loader {loader}: DataLoader workers are processes; give --worker-kind process, fork "
                         f"or spawn")


PROCESS_MAX_SAMPLE = 1 << 20  # uncompressed samples up to this size get process workers by default


def default_worker_kind(loader: str, workers, spec=None) -> str:
    """The worker kind when none is given. Processes where a DataLoader runs with workers (its
    workers are processes, and ours then run as the same kind beside it). For our loader, by
    what was measured (docs/lab/2026-12-08-worker-kind.md): processes for uncompressed payloads
    (TIFF without compression, raw) of up to PROCESS_MAX_SAMPLE bytes, whose per-sample Python
    work holds the GIL; threads for encoded payloads (JPEG, PNG, WebP, compressed TIFF), whose
    decoders let go of it, for larger samples (not measured: threads need no copy between
    processes), and where the corpus's spec is not known (`spec` None: a corpus in S3)."""
    if not any(workers):
        return "thread"
    if loader != "ours":
        return "process"
    if spec is not None and not spec.variable and spec.compression == "none" and spec.payload in ("tiff", "raw") \
            and spec.pixel_bytes <= PROCESS_MAX_SAMPLE:
        return "process"
    return "thread"


def open_torch_loader(reader, rc, dataset: str, workers: int, rank: int, pin_memory: bool):
    from loaders.torch import DataLoaderPipeline

    kind = "fork" if rc.worker_kind in ("process", "thread") else rc.worker_kind
    return DataLoaderPipeline(reader, dataset, batch_size=rc.batch_size, workers=workers, worker_kind=kind,
                              shuffle=rc.shuffle, seed=rc.seed, prefetch=rc.prefetch, drop_last=rc.drop_last,
                              rank=rank, world=rc.world, pin_memory=pin_memory)


def device_stage(device: str | None):
    """(the copy stage or None, a note saying why it is skipped or None)."""
    if not device:
        return None, None
    if not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise UsageError(f"--device takes cuda or cuda:N, got {device!r}")
    if (why := problem("torch")) is not None:
        return None, f"--device {device}: {why} ({INSTALL}); the GPU copy stage is skipped"
    import torch

    if not torch.cuda.is_available():
        return None, (f"--device {device}: no CUDA device here (torch {torch.__version__}, torch.cuda.is_available() "
                      f"is False); the GPU copy stage is skipped")
    index = int(device[5:]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    from loaders.torch import DeviceStage

    return DeviceStage(device), None

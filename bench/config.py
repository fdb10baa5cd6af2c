"""What one `python -m bench run` measures (BenchConfig), and the checks made before any reading."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import UsageError

from .result import RunConfig

CACHES = ("cold", "warm", "asis")


@dataclass(frozen=True)
class BenchConfig:
    """One `python -m bench run` command."""

    corpus: Path
    output: Path
    layouts: tuple[str, ...] | None = None  # None: every layout the corpus has
    caches: tuple[str, ...] = ("cold", "warm")
    workers: tuple[int, ...] = (0,)
    run: RunConfig = field(default_factory=RunConfig)
    naive: bool = True
    checkpoint_mb: float = 0.0
    checkpoint_every: int = 0
    checkpoint_dir: Path | None = None
    evict: str = "auto"
    progress: bool = False
    loader: str = "ours"  # ours, torch (torch.utils.data.DataLoader) or both, side by side (bench.torchrun)
    pin_memory: bool = False  # DataLoader runs: pin_memory=True
    device: str | None = None  # cuda or cuda:N: copy each batch to that GPU (skipped, with a note, without CUDA)


def inside(path: Path, root: Path) -> bool:
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def check_config(cfg: BenchConfig, manifest) -> None:
    """Refuse what would make the numbers untrue or damage the corpus, before any reading."""
    for what, path in (("--output", cfg.output), ("--checkpoint-dir", cfg.checkpoint_dir)):
        if path is not None and inside(path, cfg.corpus):
            raise UsageError(f"{what} {path} is inside the corpus directory {cfg.corpus}: results and "
                             f"checkpoints are never written onto the directory under test; choose another")
    from generator.layouts import get_layout

    for name in cfg.layouts or ():
        if (why := get_layout(name).missing()) is not None:
            raise UsageError(why)
    missing = [name for name in (cfg.layouts or ()) if name not in manifest.layouts]
    if missing:
        raise UsageError(f"layout {missing[0]!r} is not in the corpus {cfg.corpus} (it has "
                         f"{', '.join(manifest.layouts) or 'none'}); generate it or drop it from --layouts")
    from .torchrun import check_torch

    check_torch(cfg.loader, cfg.run.worker_kind, cfg.workers)
    for cache in cfg.caches:
        if cache not in CACHES:
            raise UsageError(f"unknown cache setting {cache!r}; choose from {', '.join(CACHES)}")
    if (cfg.checkpoint_mb > 0) != (cfg.checkpoint_every > 0):
        raise UsageError("give --checkpoint-mb and --checkpoint-every together")
    if Path(cfg.output).is_dir():
        raise UsageError(f"--output {cfg.output} is a directory; give a file name, e.g. {Path(cfg.output) / 'results.json'}")
    # Last: these make the directories if missing (as saving would), so only for a run that will go ahead.
    check_writable("--output", Path(cfg.output).parent)
    if cfg.checkpoint_mb > 0:
        check_writable("--checkpoint-dir", Path(cfg.checkpoint_dir or Path(cfg.output).parent))


def check_writable(what: str, directory: Path) -> None:
    """Refuse, before minutes of measuring, a directory the results or checkpoints cannot be
    written to (made if missing, as saving would; probed with a file created and removed)."""
    probe = directory / f".layoutbench-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{what}: cannot write in {directory} ({exc.strerror}); choose another place") from None

"""What a results file records about the machine and the command: host, CPU, RAM, kernel, the
filesystem and device of the corpus (with its read-ahead), library versions, the exact command."""

from __future__ import annotations

from generator.objectstore.store import is_s3_url
import importlib
import os
import platform
import socket
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from loaders.pagecache import readahead_window

from . import probes


def metadata(cfg, comm) -> dict:
    from generator.codec import codec_libraries
    from generator.layouts import get_layout

    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    ram = next((int(line.split()[1]) * 1024 for line in _read_lines("/proc/meminfo")
                if line.startswith("MemTotal:")), None)
    fs = storage_facts(cfg)
    return {
        "host": {"name": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "ram_bytes": ram,
                 "kernel": platform.release(), "platform": platform.platform(), "root": os.geteuid() == 0},
        "filesystem": fs,
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     **{name: str(importlib.import_module(name).__version__) for name in codec_libraries()},
                     **{k: v for layout in cfg.layouts for k, v in get_layout(layout).versions().items()}},
        "command": (["python", "-m", "bench"] if sys.argv[0].endswith("__main__.py") else sys.argv[:1]) + sys.argv[1:],
        "config": {"corpus": str(cfg.corpus), "output": str(cfg.output), "layouts": list(cfg.layouts),
                   "caches": list(cfg.caches), "workers": list(cfg.workers), "naive": cfg.naive,
                   "checkpoint_mb": cfg.checkpoint_mb, "checkpoint_every": cfg.checkpoint_every,
                   "evict": cfg.evict, "run": asdict(cfg.run)},
        "ranks": comm.size,
    }


def storage_facts(cfg) -> dict:
    """The filesystem and device of the corpus: a directory's; for a corpus in S3 the store's
    endpoint, and where the bundled server on this host keeps its files, theirs (None: remote)."""
    where = cfg.corpus
    facts = {}
    if is_s3_url(cfg.corpus):
        from generator.objectstore.store import S3Config
        from loaders.s3.server import bundled_data_dir

        config = S3Config.from_env()
        where = getattr(cfg, "s3_data_dir", None) or bundled_data_dir(config.endpoint)
        facts = {"storage": "s3", "endpoint": config.where, "server_dir": None if where is None else str(where)}
        if where is None:
            return facts | {"device": None, "read_ahead_kb": None}
    dev = probes.block_device(where)
    fs = probes.filesystem(where) | {"device": dev.name if dev else None} | facts
    window = readahead_window(where, default=None)
    fs["read_ahead_kb"] = None if window is None else window >> 10
    return fs


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []

"""What the tar and tfrecord tests share: finding a sample's bytes on disk independently of the
readers, writing corpora part by part (an interrupted run), comparing directory trees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from generator.build import Generation, write_parts


def facts(root, layout: str) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())["layouts"][layout]


def shard_of(root, layout: str, index: int) -> tuple[int, int]:
    """(shard number, position in the shard) of sample `index`."""
    per = facts(root, layout)["samples_per_shard"]
    return index // per, index % per


def pwrite(path, at: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, at)
    finally:
        os.close(fd)


def tree_bytes(top) -> dict[str, bytes]:
    top = Path(top)
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def write_some_parts(root, spec, layout: str, parts: int, settings=None) -> None:
    """Begin `layout` and write only its first `parts` parts, as a run killed after them would."""
    with Generation(root, spec, settings=settings) as gen:
        assert layout in gen.todo([layout])
        writer = gen.begin(layout)
        for r, *_ in write_parts(writer, writer.parts(1)[:parts]):
            pass


def as_int64(values) -> np.ndarray:
    return np.asarray(values, np.int64)

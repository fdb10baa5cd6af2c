"""`files`: one baseline TIFF per image in an ImageFolder tree, files/<label>/<index>.tif.

Each file is written under a temporary name and renamed into place, so a file under its
final name is always complete; a rerun keeps those and writes the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..spec import Spec
from . import LayoutWriter, payload_estimate

TMP_MARK = ".tmp-"


def index_width(spec: Spec) -> int:
    return len(str(spec.count - 1))


def sample_relpath(spec: Spec, index: int, label: int) -> str:
    ext = "tif" if spec.payload == "tiff" else "raw"
    return f"files/{label}/{index:0{index_width(spec)}d}.{ext}"


def write_file(root: Path, relpath: str, payload) -> bool:
    """Write one sample file atomically; False if a complete one is already there."""
    final = os.path.join(root, relpath)
    try:
        if os.stat(final).st_size == len(payload):
            return False
    except FileNotFoundError:
        pass
    tmp = f"{final}{TMP_MARK}{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, final)
    return True


class FilesWriter(LayoutWriter):
    name = "files"
    target = "files"
    writes_in_workers = True

    def begin(self) -> int:
        top = self.root / self.target
        for label in range(self.spec.num_classes):
            d = top / str(label)
            d.mkdir(parents=True, exist_ok=True)
            for stale in d.glob(f"*{TMP_MARK}*"):  # left by an interrupted run
                stale.unlink()
        return 0  # every index is visited; complete files are skipped in write_file

    def end(self, labels) -> None:
        os.sync()  # durability for tens of thousands of files: one sync beats one fsync each

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        per_file = -(-payload_estimate(spec, codec) // 4096) * 4096
        return spec.count * per_file + spec.num_classes * 4096

"""manifest.json: the corpus's contract, written last (its presence marks a layout complete).

{
  "format": "layoutbench-corpus", "version": 1,
  "spec": {...},                      # generator.spec.Spec fields
  "codec": {"kind": "tiff", "header_bytes": 192},
  "samples": {"checksum": "crc32", "crc32": [...], "size": [...], "label": [...]},
  "layouts": {"files": {"path": "files", "bytes_on_disk": ..., "files": ..., "write_seconds": ...,
                        "mb_per_s": ..., "written_at": "..."}, ...}
}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CorpusError
from .spec import Spec

FORMAT = "layoutbench-corpus"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Manifest:
    spec: Spec
    crc32: list[int]
    sizes: list[int]
    labels: list[int]
    layouts: dict[str, dict] = field(default_factory=dict)
    header_bytes: int = 0

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "spec": self.spec.to_dict(),
            "codec": {"kind": self.spec.payload, "compression": self.spec.compression,
                      "header_bytes": self.header_bytes},
            "samples": {"checksum": "crc32", "crc32": self.crc32, "size": self.sizes, "label": self.labels},
            "layouts": self.layouts,
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = MANIFEST) -> "Manifest":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CorpusError(f"{where} is not a layoutbench corpus manifest")
        if data.get("version") != VERSION:
            raise CorpusError(
                f"{where} has manifest version {data.get('version')!r}; this layoutbench reads version "
                f"{VERSION}: regenerate the corpus with this version (python -m generator ... --force)")
        try:
            spec = Spec.from_dict(data["spec"])
            samples = data["samples"]
            crc, sizes, labels = samples["crc32"], samples["size"], samples["label"]
            layouts = data["layouts"]
            header = int(data["codec"]["header_bytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorpusError(f"{where} is damaged ({exc}); regenerate the corpus with --force") from None
        if not (len(crc) == len(sizes) == len(labels) == spec.count):
            raise CorpusError(f"{where} lists {len(crc)} checksums, {len(sizes)} sizes and {len(labels)} "
                              f"labels for {spec.count} samples; regenerate the corpus with --force")
        if not isinstance(layouts, dict):
            raise CorpusError(f"{where} is damaged (layouts is not a mapping); regenerate with --force")
        for name, facts in layouts.items():
            if not isinstance(facts, dict) or not isinstance(facts.get("path"), str):
                raise CorpusError(f"{where} is damaged (layout {name!r} has no path); regenerate with --force")
            check_inside(facts["path"], where, name)
        return cls(spec, list(crc), list(sizes), list(labels), dict(layouts), header)


def check_inside(rel: str, where: str, layout: str) -> None:
    """Manifest paths are relative names inside the corpus root, never absolute or with '..'."""
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise CorpusError(f"{where}: layout {layout!r} has path {rel!r}, which is not inside the corpus "
                          f"directory; the manifest was edited or is hostile: regenerate the corpus")


def read_manifest(root: str | os.PathLike) -> Manifest:
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise CorpusError(f"{root}: no such corpus directory (make one with python -m generator)")
    if not path.exists():
        raise CorpusError(f"{path} is missing: the corpus is incomplete or still being generated; "
                          f"rerun the generator command to finish it")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{path} cannot be read ({exc}); rerun the generator with --force") from None
    return Manifest.from_dict(data, str(path))


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON under a temporary name, fsync, then rename: never a half-written file."""
    tmp = path.with_name(f"{tmp_prefix(path.name)}{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk: leave no stray temporary behind
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def tmp_prefix(name: str) -> str:
    """Temporary files of write_json_atomic(name) start with this (a kill -9 may leave one)."""
    return f".{name}.tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(root: str | os.PathLike, manifest: Manifest) -> None:
    write_json_atomic(Path(root) / MANIFEST, manifest.to_dict())

"""manifest.json: the corpus's contract, written last (its presence marks a layout complete).

{
  "format": "layoutbench-corpus", "version": 4,
  "spec": {...},                      # generator.spec.Spec fields
  "codec": {"kind": "tiff", "header_bytes": 192},
  "samples": {"checksum": "crc32", "crc32": [...], "size": [...], "label": [...],
              "shape": [[h, w, c], ...],  # version 3, only when samples' shapes vary
              "format": ["jpeg", ...]},   # version 4, ingested corpora of mixed formats only
  "layouts": {"files": {"path": "files", "bytes_on_disk": ..., "files": ..., "write_seconds": ...,
                        "mb_per_s": ..., "written_at": "..."}, ...}
}

Format versions (the generator writes VERSION; readers read every version in READS):
- 1: the first format.
- 2: the files layout is ImageFolder-exact: class directories zero-padded to the width of the
  largest label, one for every class (generator.layouts.files). Nothing else changed, so a
  version-1 manifest is read as it is and only the files reader looks at the version (it names
  version-1 directories by the bare label). The generator refuses to add layouts to a version-1
  corpus (regenerate it with --force).
- 3: samples may have shapes of their own (a size distribution, spec field `sizes`): then
  `samples.shape` lists every sample's [height, width, channels], each within the spec's
  bounding shape (height, width, channels). A corpus of one fixed shape is written as before
  with version 3; versions 2 and 3 mean the same for it, so layouts are added to a version-2
  corpus without regenerating it. A manifest of a version newer than this code knows is refused
  in one line (upgrade layoutbench), never guessed at. An ingested corpus (spec content
  "ingest") also lists each sample's `dtype` and `source` (its file, relative to the source),
  and a top-level "source": {"kind": "folder"|"list", "path", "classes", "skipped": [[path, why]]}.
- 4: a tar member holding a payload takes its format's extension, as the files layout's files do
  (`<key>.jpg`, `.png`, `.webp`, `.tif`, `.raw`), so webdataset's decoders find it; versions 1-3
  named every payload `<key>.tif` (`<key>.raw` for raw). An ingested corpus of mixed formats
  (codec "mixed") lists each sample's `format` (tiff, png, jpeg or webp: its bytes', as the scan
  found it), and both its files and its tar members take that format's extension (versions 1-3
  named its files `<index>.img`, which torchvision's ImageFolder skips, and its tar members
  `.tif`). Nothing else changed: the files and tar readers name samples by the manifest's
  version, and a files or tar layout added to a version-2 or -3 corpus is written with that
  version's names (generator.layouts.files, generator.layouts.tar), so a corpus never mixes the
  two.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CorpusError
from .safeio import FileRefused, read_regular
from .spec import MAX_SAMPLE_BYTES, Spec

FORMAT = "layoutbench-corpus"
VERSION = 4
READS = (1, 2, 3, 4)  # manifest versions this layoutbench reads
FORMATS_RECORDED = 4  # from this version a corpus of mixed formats lists each sample's (samples.format)
EXTENDS = (2, 3, 4)  # versions the generator adds layouts to (version 1 needs --force)
MANIFEST = "manifest.json"
# 28 B a sample at most (crc32, size and label as decimal digits, commas) x MAX_COUNT, and the rest
MANIFEST_MAX_BYTES = 1 << 30


@dataclass
class Manifest:
    spec: Spec
    crc32: list[int]
    sizes: list[int]
    labels: list[int]
    layouts: dict[str, dict] = field(default_factory=dict)
    header_bytes: int = 0
    version: int = VERSION  # the format version the corpus was written in (readers of old ones look)
    shapes: list | None = None  # every sample's [h, w, c] when shapes vary (spec.variable), else None
    dtypes: list | None = None  # ingested corpora: every sample's dtype
    sources: list | None = None  # ingested corpora: every sample's file, relative to the source
    source_info: dict | None = None  # ingested corpora: kind, path, classes, skipped
    formats: list | None = None  # ingested corpora of mixed formats (version 4 on): every sample's format

    def dtype(self, index: int) -> str:
        return self.dtypes[index] if self.dtypes is not None else self.spec.dtype

    def shape(self, index: int) -> tuple[int, int, int]:
        """(H, W, C) of sample `index` as the manifest records it."""
        return tuple(self.shapes[index]) if self.shapes is not None else self.spec.shape

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": self.version,
            "spec": self.spec.to_dict(),
            "codec": {"kind": self.spec.payload, "compression": self.spec.compression,
                      "header_bytes": self.header_bytes},
            "samples": {"checksum": "crc32", "crc32": self.crc32, "size": self.sizes, "label": self.labels,
                        **({"shape": self.shapes} if self.shapes is not None else {}),
                        **({"dtype": self.dtypes, "source": self.sources} if self.sources is not None else {}),
                        **({"format": self.formats} if self.formats is not None else {})},
            "layouts": self.layouts,
            **({"source": self.source_info} if self.source_info is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = MANIFEST) -> "Manifest":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CorpusError(f"{where} is not a layoutbench corpus manifest; point at a corpus made by python -m "
                              f"generator, or regenerate this one with --force")
        version = data.get("version")
        if type(version) is int and version > max(READS):
            raise CorpusError(f"{where} has manifest version {version}, newer than this layoutbench reads (up to "
                              f"{max(READS)}): upgrade layoutbench, or regenerate the corpus with this one (--force)")
        if type(version) is not int or version not in READS:
            raise CorpusError(
                f"{where} has manifest version {version!r}; this layoutbench reads versions "
                f"{', '.join(map(str, READS))}: regenerate the corpus with this version (python -m generator ... --force)")
        try:
            spec = Spec.from_dict(data["spec"])
            samples = data["samples"]
            crc, sizes, labels = samples["crc32"], samples["size"], samples["label"]
            layouts = data["layouts"]
            header = int(data["codec"]["header_bytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorpusError(f"{where} is damaged ({exc}); regenerate the corpus with --force") from None
        if not all(isinstance(v, list) for v in (crc, sizes, labels)):
            raise CorpusError(f"{where} is damaged (the samples' crc32, size and label must be lists); "
                              f"regenerate the corpus with --force")
        if not (len(crc) == len(sizes) == len(labels) == spec.count):
            raise CorpusError(f"{where} lists {len(crc)} checksums, {len(sizes)} sizes and {len(labels)} "
                              f"labels for {spec.count} samples; regenerate the corpus with --force")
        # Every value a reader indexes with or trusts is checked here, once: a hand-edited or hostile
        # manifest fails with this message, never deep inside a reader (or by reading elsewhere).
        crc = _int_list(crc, "crc32", 0, 2**32 - 1, where)
        ingested = spec.source is not None  # a file's bytes: metadata may make it larger than its pixels
        sizes = _int_list(sizes, "size", 1, MAX_SAMPLE_BYTES if ingested else 2 * spec.pixel_bytes + (1 << 16), where)
        labels = _int_list(labels, "label", 0, spec.num_classes - 1, where)
        shapes = _shapes(samples.get("shape"), spec, version, where)
        dtypes = sources = info = None
        if ingested:
            dtypes, sources, info = samples.get("dtype"), samples.get("source"), data.get("source")
            if not (isinstance(dtypes, list) and isinstance(sources, list) and isinstance(info, dict)
                    and len(dtypes) == len(sources) == spec.count and set(dtypes) <= {"uint8", "uint16"}
                    and all(isinstance(p, str) for p in sources)):
                raise CorpusError(f"{where} is damaged (an ingested corpus lists every sample's dtype and source "
                                  f"file); ingest the source again with --force")
        formats = _formats(samples.get("format"), spec, version, where)
        if not isinstance(layouts, dict):
            raise CorpusError(f"{where} is damaged (layouts is not a mapping); regenerate with --force")
        from .layouts import writer_classes  # here: the layouts import this module's neighbours

        targets = {name: writer.target for name, writer in writer_classes().items()}
        for name, facts in layouts.items():
            if name not in targets:
                raise CorpusError(f"{where} lists a layout {name!r} this layoutbench does not know (it knows "
                                  f"{', '.join(targets)}); regenerate the corpus with --force")
            if not isinstance(facts, dict) or not isinstance(facts.get("path"), str):
                raise CorpusError(f"{where} is damaged (layout {name!r} has no path); regenerate with --force")
            check_inside(facts["path"], where, name)
            if facts["path"] != targets[name]:
                raise CorpusError(f"{where}: layout {name!r} has path {facts['path']!r} where the generator "
                                  f"writes {targets[name]!r}; the manifest was edited: regenerate with --force")
        return cls(spec, crc, sizes, labels, dict(layouts), header, version, shapes, dtypes, sources, info, formats)


def records_formats(spec: Spec, version: int) -> bool:
    """True when a manifest of `version` for `spec` lists every sample's format (samples.format):
    an ingested corpus of mixed formats, version 4 on."""
    return spec.payload == "mixed" and version >= FORMATS_RECORDED


def _formats(formats, spec: Spec, version: int, where: str) -> list | None:
    """The manifest's per-sample formats, checked: present exactly when records_formats, one of
    generator.codecs.FORMATS per sample."""
    from .codecs import FORMATS

    if not records_formats(spec, version):
        if formats is not None:
            raise CorpusError(f"{where} lists per-sample formats for a corpus that is not an ingested one of mixed "
                              f"formats of version {FORMATS_RECORDED} or later (version {version}, codec "
                              f"{spec.payload}); the manifest was edited: regenerate the corpus with --force")
        return None
    if formats is None:
        raise CorpusError(f"{where} is damaged (an ingested corpus of mixed formats lists every sample's format, "
                          f"samples.format, and it is missing); ingest the source again with --force")
    if not isinstance(formats, list) or len(formats) != spec.count:
        raise CorpusError(f"{where} is damaged (samples.format must list one format per sample, {spec.count} in "
                          f"all); ingest the source again with --force")
    bad = next((i for i, f in enumerate(formats) if not isinstance(f, str) or f not in FORMATS), None)
    if bad is not None:
        raise CorpusError(f"{where}: sample {bad} has format {formats[bad]!r}, not one of {', '.join(FORMATS)}; the "
                          f"manifest was edited or is damaged: ingest the source again with --force")
    return list(formats)


def _shapes(shapes, spec: Spec, version: int, where: str) -> list | None:
    """The manifest's per-sample shapes, checked: present exactly when the spec's shapes vary
    (version 3), one [h, w, c] per sample inside the spec's bounding shape."""
    if shapes is None:
        if spec.variable:
            raise CorpusError(f"{where} is damaged (its spec has a size distribution but samples.shape is missing); "
                              f"regenerate the corpus with --force")
        return None
    if version < 3 or not spec.variable:
        raise CorpusError(f"{where} lists per-sample shapes for a corpus of one shape (version {version}); the "
                          f"manifest was edited: regenerate the corpus with --force")
    try:
        arr = np.asarray(shapes)
        ok = arr.shape == (spec.count, 3) and arr.dtype.kind in "iu"
    except (ValueError, TypeError, OverflowError):
        ok = False
    if ok:
        wrong_c = (arr[:, 2] < 1) | (arr[:, 2] > spec.channels) if spec.source else arr[:, 2] != spec.channels
        bad = np.flatnonzero((arr[:, 0] < 1) | (arr[:, 0] > spec.height) | (arr[:, 1] < 1)
                             | (arr[:, 1] > spec.width) | wrong_c)
        if not bad.size:
            return arr.tolist()
        raise CorpusError(f"{where}: sample {int(bad[0])} has shape {arr[bad[0]].tolist()}, outside the corpus's "
                          f"bounding shape {list(spec.shape)}; the manifest was edited or is damaged: regenerate "
                          f"the corpus with --force")
    raise CorpusError(f"{where} is damaged (samples.shape must list one [height, width, channels] of integers per "
                      f"sample, {spec.count} in all); regenerate the corpus with --force")


def _int_list(values: list, name: str, lo: int, hi: int, where: str) -> list[int]:
    """`values` as plain ints, each in [lo, hi], or CorpusError naming the first bad one (numpy makes
    the pass in C; Python looks only for the first bad value)."""
    try:
        arr = np.asarray(values)
        ok = arr.ndim == 1 and arr.dtype.kind in "iu" and lo <= arr.min() and arr.max() <= hi
    except (ValueError, TypeError, OverflowError):  # ragged or mixed lists
        ok = False
    if not ok:
        bad = next((i for i, v in enumerate(values) if type(v) is not int or not lo <= v <= hi), 0)
        raise CorpusError(f"{where}: sample {bad} has {name} {values[bad]!r}, not an integer in [{lo}, {hi}]; "
                          f"the manifest was edited or is damaged: regenerate the corpus with --force")
    return arr.tolist()


def check_inside(rel: str, where: str, layout: str) -> None:
    """Manifest paths are relative names inside the corpus root, never absolute or with '..'."""
    p = Path(rel)
    if not rel or "\0" in rel or p.is_absolute() or ".." in p.parts:
        raise CorpusError(f"{where}: layout {layout!r} has path {rel!r}, which is not inside the corpus "
                          f"directory; the manifest was edited or is hostile: regenerate the corpus")


def stored_spec(raw, where: str) -> Spec:
    """The spec a layout stores itself (HDF5 attribute, LMDB meta key): JSON, never pickle.
    Anything unreadable is CorpusError naming where it is."""
    try:
        return Spec.from_dict(json.loads(raw))
    except (ValueError, TypeError, RecursionError) as exc:  # UsageError and JSON/Unicode errors are ValueErrors
        raise CorpusError(f"{where} stores an unreadable spec ({_short(exc)}); the layout is damaged or not "
                          f"ours: regenerate the corpus with --force") from None


def _short(exc: Exception, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def read_manifest(root: str | os.PathLike) -> Manifest:
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise CorpusError(f"{root}: no such corpus directory (make one with python -m generator)")
    if not path.exists():
        raise CorpusError(f"{path} is missing: the corpus is incomplete or still being generated; "
                          f"rerun the generator command to finish it")
    try:  # a regular file of bounded size: a FIFO must not hang us, nor a link to /dev/zero fill memory
        data = json.loads(read_regular(path, MANIFEST_MAX_BYTES))
    except FileRefused as exc:
        raise CorpusError(f"{exc}: a manifest is a regular file the generator writes; remove it and rerun the "
                          f"generator (with --force)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorpusError(f"{path} cannot be read ({_short(exc)}); rerun the generator with --force") from None
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

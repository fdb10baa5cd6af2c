"""python -m generator ingest SRC --out DIR: a corpus of existing image files, stored unchanged.

SRC is either
- an ImageFolder tree: SRC/<class>/.../<file>; classes are the sorted names of SRC's
  subdirectories and a file's label is its class's position among them (torchvision's
  ImageFolder numbering); files are taken in ImageFolder's order (class, then sorted walk), and
  files directly in SRC and hidden ones (.name) are ignored, as ImageFolder ignores them; or
- a file list: a text file of `path label` lines (path relative to the list's directory or
  absolute; label a non-negative integer; `#` comments and blank lines ignored), in that order.

Every file's bytes are the sample's payload, unchanged; its format (TIFF, PNG, JPEG, WebP) is
told from its bytes, not its name, and its shape, dtype, size and crc32 go into the manifest
(each sample its own: a folder of mixed modes or bit depths is held, each sample decoding to its
own (H, W, C) and dtype). Every file is decoded once during the scan, so a corrupt one is named
before anything is written.

Refused by name (exit 2): an empty SRC; a symbolic link that resolves outside SRC; a FIFO, device
or socket; unreadable or corrupt images (each listed with why) unless `--skip-bad`, which leaves
them out and lists them at the end (and in the manifest's source.skipped).

The corpus is written by the generator's own driver (generator.build.generate): the same lock,
resume, disk checks, and interruption handling (Ctrl-C / SIGTERM unwind and remove temporaries;
a rerun of the same command resumes, --force starts again).
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import zlib
from dataclasses import dataclass

import numpy as np

from . import codecs as formats
from .errors import UsageError
from .pool import bounded_map
from .safeio import FileRefused, kind_of, read_regular
from .spec import INGEST, MAX_COUNT, MAX_SAMPLE_BYTES, Spec

SCAN_SHOWN = 20  # bad files listed one per line; the rest counted


@dataclass(frozen=True)
class Entry:
    """One source file that became sample `index` (in list order)."""

    rel: str  # its path relative to SRC's directory (as the manifest lists it)
    path: str  # where it was read
    label: int
    fmt: str
    shape: tuple
    dtype: str
    size: int
    crc: int


class Entries(list):
    """The scan's entries, in sample order, with `info` (the manifest's top-level source)."""

    info: dict


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _refuse_special(path: str) -> None:
    st = os.lstat(path)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise UsageError(f"{path} is {kind_of(st.st_mode)}: an ingest source holds image files only; remove it "
                         f"from SRC")


def folder_files(src: str) -> tuple[list[tuple[str, str, int]], list[str]]:
    """((path, rel, label) in ImageFolder's order, class names) of an ImageFolder tree."""
    root = os.path.realpath(src)
    classes = []
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        _refuse_special(entry.path)
        if entry.is_symlink() and not _inside(entry.path, root):
            raise UsageError(f"{entry.path} is a symbolic link to {os.path.realpath(entry.path)}, outside the source "
                             f"{src}: ingest reads only inside SRC; copy the data in, or remove the link")
        if entry.is_dir():
            classes.append(entry.name)
    files = []
    for label, name in enumerate(classes):
        seen = set()  # per class: a directory linked into two classes is in both, as ImageFolder has it
        walked = []  # pruned as it goes (a loop is entered once), then in ImageFolder's order: sorted by path
        for dirpath, dirnames, filenames in os.walk(os.path.join(src, name), followlinks=True):
            if not _inside(dirpath, root):  # before os.walk descends into it
                raise UsageError(f"{dirpath} is a symbolic link to {os.path.realpath(dirpath)}, outside the source "
                                 f"{src}: ingest reads only inside SRC; copy the data in, or remove the link")
            real = os.path.realpath(dirpath)
            dirnames[:] = [] if real in seen else [d for d in dirnames if not d.startswith(".")]
            if real not in seen:  # a directory reached again through a link (a loop) is taken once
                walked.append((dirpath, filenames))
            seen.add(real)
        for dirpath, filenames in sorted(walked):
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                path = os.path.join(dirpath, fname)
                _refuse_special(path)
                if os.path.islink(path) and not _inside(path, root):
                    raise UsageError(f"{path} is a symbolic link to {os.path.realpath(path)}, outside the source "
                                     f"{src}: ingest reads only inside SRC; copy the file in, or remove the link")
                files.append((path, os.path.relpath(path, src), label))
    return files, classes


def list_files(src: str) -> tuple[list[tuple[str, str, int]], list[str]]:
    """((path, rel, label) in line order, class names "0".."max") of a `path label` list."""
    try:
        text = read_regular(src, 1 << 30).decode("utf-8")
    except (FileRefused, OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"ingest source {src} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    base = os.path.dirname(os.path.abspath(src))
    files = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) > 65534:
            raise UsageError(f"{src} line {n}: {line!r} is not `path label` (a label in 0..65534)")
        path = parts[0] if os.path.isabs(parts[0]) else os.path.join(base, parts[0])
        if os.path.lexists(path):
            _refuse_special(path)
        files.append((path, parts[0], int(parts[1])))
    top = max((label for _, _, label in files), default=-1)
    return files, [str(c) for c in range(top + 1)]


def examine(path: str) -> tuple[bytes, str, tuple, str]:
    """(bytes, format, shape, dtype) of one source file, decoded once to prove it whole; ValueError
    (why, one line) for a file that cannot be a sample."""
    try:
        data = read_regular(path, MAX_SAMPLE_BYTES)
    except FileNotFoundError:
        raise ValueError("missing (no such file)") from None
    except (FileRefused, OSError) as exc:
        raise ValueError(f"unreadable ({exc.strerror or exc})") from None
    if not data:
        raise ValueError("empty file")
    fmt, shape, dtype = formats.probe(data)
    img = formats.decode_image(data, shape[2], np.dtype(dtype))
    if img.shape != shape:
        raise ValueError(f"decodes to {img.shape}, its header says {shape}")
    return data, fmt, shape, dtype


def _examined(path: str):
    """(format, shape, dtype, size, crc32) of a file, or why it is bad (a string)."""
    try:
        data, fmt, shape, dtype = examine(path)
    except ValueError as exc:
        return " ".join(str(exc).split())
    return fmt, shape, dtype, len(data), zlib.crc32(data)


def scan(src, skip_bad: bool = False, workers: int = 1) -> Entries:
    """Every usable file of SRC as Entries (see the module docstring); UsageError on refusals.
    `workers` threads read and decode the files (the decoders release the GIL), in order."""
    src = os.fspath(src)
    if not os.path.lexists(src):
        raise UsageError(f"ingest source {src}: no such file or directory")
    if os.path.isdir(src):
        files, classes, kind = *folder_files(src), "folder"
    elif os.path.isfile(src):
        files, classes, kind = *list_files(src), "list"
    else:
        raise UsageError(f"ingest source {src} is {kind_of(os.stat(src).st_mode)}: give a directory of class "
                         f"folders or a `path label` list file")
    if not files:
        raise UsageError(f"ingest source {src} holds no image files (an ImageFolder tree is SRC/<class>/<image>, "
                         f"a list is `path label` lines): nothing to ingest")
    if len(files) > MAX_COUNT:
        raise UsageError(f"ingest source {src} holds {len(files):,} files; at most {MAX_COUNT:,} are supported")
    entries, bad = Entries(), []
    for (path, rel, label), got in zip(files, bounded_map(_examined, [f[0] for f in files], workers)):
        if isinstance(got, str):
            bad.append((rel, got))
            continue
        fmt, shape, dtype, size, crc = got
        entries.append(Entry(rel, path, label, fmt, tuple(shape), dtype, size, crc))
    if bad and not skip_bad:
        for rel, why in bad[:SCAN_SHOWN]:
            print(f"python -m generator ingest: bad source image {os.path.join(src, rel) if kind == 'folder' else rel}: "
                  f"{why}", file=sys.stderr)
        more = f" (the first {SCAN_SHOWN} listed above)" if len(bad) > SCAN_SHOWN else " (listed above)"
        first = bad[0]
        raise UsageError(f"{len(bad):,} source image(s) of {src} cannot be ingested{more}, e.g. {first[0]}: {first[1]}; "
                         f"fix or remove them, or rerun with --skip-bad to leave them out")
    if not entries:
        raise UsageError(f"no image of {src} can be ingested (all {len(bad):,} are bad); nothing to ingest")
    entries.info = {"kind": kind, "path": os.path.abspath(src), "classes": classes,
                    "skipped": [list(b) for b in bad]}
    return entries


def digest(entries) -> str:
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.rel}\t{e.size}\t{e.crc}\t{e.label}\t{e.fmt}\t{e.shape}\t{e.dtype}\n".encode())
    return "sha256:" + h.hexdigest()


def source_spec(entries: Entries) -> Spec:
    """The spec of an ingested corpus: the bounds of its samples, their one format (or mixed)."""
    fmts = {e.fmt for e in entries}
    return Spec(height=max(e.shape[0] for e in entries), width=max(e.shape[1] for e in entries),
                channels=max(e.shape[2] for e in entries),
                dtype="uint16" if any(e.dtype == "uint16" for e in entries) else "uint8",
                count=len(entries), content=INGEST, payload=fmts.pop() if len(fmts) == 1 else "mixed",
                num_classes=max(1, len(entries.info["classes"])), source=digest(entries))


def ingest(src, out, layouts=None, workers: int | None = None, force: bool = False, skip_bad: bool = False,
           progress: bool | None = None):
    """Scan SRC and write its corpus in `out` (every layout by default). Returns (manifest, reports,
    entries)."""
    from .build import generate
    from .pool import SOURCES

    entries = scan(src, skip_bad, workers or os.cpu_count() or 1)
    spec = source_spec(entries)
    SOURCES[spec] = entries
    try:
        manifest, reports = generate(out, spec, layouts, workers, force, progress=progress)
    finally:
        SOURCES.pop(spec, None)
    return manifest, reports, entries


def build_parser():
    from .cli import Parser, int_in
    from .layouts import layout_ids

    p = Parser(prog="python -m generator ingest", description=__doc__.strip().split("\n")[0])
    p.add_argument("src", metavar="SRC", help="an ImageFolder tree (SRC/<class>/<image>) or a `path label` list file")
    p.add_argument("--out", required=True, help="corpus directory")
    p.add_argument("--layouts", default=None, help=f"comma list (default: every installed layout, {','.join(layout_ids())})")
    p.add_argument("--workers", type=int_in(1, 1024), default=os.cpu_count() or 1, help="parallel workers")
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable or corrupt images (listed at the end)")
    p.add_argument("--force", action="store_true", help="replace a corpus of another source in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    return p


def main(argv=None) -> int:
    from .__main__ import format_table
    from .build import parse_layouts

    args = build_parser().parse_args(argv)
    chosen = parse_layouts(args.layouts) if args.layouts is not None else None
    manifest, reports, entries = ingest(args.src, args.out, chosen, args.workers, args.force, args.skip_bad,
                                        progress=False if args.quiet else None)
    spec = manifest.spec
    if not args.quiet:
        fmts = sorted({e.fmt for e in entries})
        print(f"corpus {args.out}: {spec.count:,} files of {args.src} ({', '.join(fmts)}; "
              f"{len(entries.info['classes'])} classes; up to {spec.height}x{spec.width}x{spec.channels} {spec.dtype}), "
              f"{sum(e.size for e in entries):,} B, stored unchanged")
        print(format_table(reports))
    for rel, why in entries.info["skipped"]:
        print(f"skipped {rel}: {why}")
    if entries.info["skipped"]:
        print(f"{len(entries.info['skipped']):,} bad source image(s) skipped (--skip-bad)")
    return 0


"""python -m generator ingest SRC --out DIR: a corpus of existing image files, stored unchanged.

SRC is either
- an ImageFolder tree: SRC/<class>/.../<file>, taken as torchvision's ImageFolder(SRC) takes it
  (torchvision 0.29, datasets/folder.py: find_classes, make_dataset), so that every sample's file
  and label are ImageFolder's sample and target:
  - classes: the sorted (Python string order) names of SRC's entries that are directories,
    symbolic links to directories included, hidden ones (.ipynb_checkpoints) included; a class's
    label is its position among them. Other entries directly in SRC (files, broken links) are
    ignored.
  - files: per class in label order, os.walk(SRC/<class>, followlinks=True) sorted by directory
    path (string order), then each directory's file names sorted; hidden files and directories
    are walked like any other. A file is taken when its path, lower-cased, ends with one of
    ImageFolder's IMG_EXTENSIONS (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp): `img001`,
    `x.jpeg.bak` and `.DS_Store` are ignored (counted, and named in one line), `A.JPG` and a
    hidden `._a.jpg` are taken. A directory reached through two links is walked twice (its
    files are two samples each), as ImageFolder walks it.
  - a class with no such file: refused by name, as ImageFolder(SRC) refuses it
    (FileNotFoundError), unless --allow-empty, which keeps it in the numbering as
    ImageFolder(SRC, allow_empty=True) does (a `.ipynb_checkpoints` folder is then class 0).
  Where ImageFolder would take a file that layoutbench cannot hold, the file is named, not
  renumbered around: .ppm, .bmp and .pgm files (layoutbench holds TIFF, PNG, JPEG and WebP) and
  any other taken file that is not a whole image of those (an AppleDouble `._a.jpg`) are bad
  files (below). Refused where ImageFolder would go on: a directory that cannot be listed
  (ImageFolder silently leaves out its files), a symbolic link that makes a loop (ImageFolder
  walks it until the system's limit on links, taking its files dozens of times), and a taken
  file or class directory that is a symbolic link resolving outside SRC; or
- a file list: a text file of `path label` lines (path relative to the list's directory or
  absolute; label a non-negative integer; `#` comments and blank lines ignored), in that order.

Every file's bytes are the sample's payload, unchanged; its format (TIFF, PNG, JPEG, WebP) is
told from its bytes, not its name, and its shape, dtype, size and crc32 go into the manifest
(each sample its own: a folder of mixed modes or bit depths is held, each sample decoding to its
own (H, W, C) and dtype). Every file is decoded once during the scan, so a corrupt one is named
before anything is written; one whose header says it decodes to more than MAX_SAMPLE_BYTES (1 GiB)
is a bad file refused from its header, never decoded.

Refused by name (exit 2): an empty SRC; a symbolic link that resolves outside SRC; a taken FIFO,
device or socket; unreadable, corrupt or unheld images (each listed with why) unless
`--skip-bad`, which leaves them out and lists them at the end (and in the manifest's
source.skipped): the only way an ingested folder's samples are fewer than ImageFolder's.
Refused the same way, at the scan and before anything is written, and named as such (not as
corrupt): a whole image that this install cannot decode, so that the corpus could not be read
back here (readable_here): a 16-bit RGB or RGBA PNG without pyspng or imagecodecs, a 16-bit
gray+alpha PNG without imagecodecs (Pillow holds neither), a TIFF whose compression tifffile
decodes only with imagecodecs (LZW, zstd, JPEG-in-TIFF, WebP-in-TIFF, JPEG 2000, ...; it
decodes none, deflate, PackBits and LZMA itself); the line names the extra that installs the
decoder (pip install -e '.[codecs]').

An ingested corpus of mixed formats lists each sample's format in its manifest
(samples.format), and the files and tar layouts name each sample by it (`0.jpg`, `1.png`), so
that torchvision's ImageFolder and webdataset's decoders, which go by extension, take them all.

The corpus is written by the generator's own driver (generator.build.generate): the same lock,
resume, disk checks, and interruption handling (Ctrl-C / SIGTERM unwind and remove temporaries;
a rerun of the same command resumes, --force starts again).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import zlib
from dataclasses import dataclass

import numpy as np

from . import codecs as formats
from .codec import TIFF_COMPRESSION
from .errors import UsageError, quote
from .libraries import install_hint, present
from .pool import bounded_map
from .safeio import FileRefused, kind_of, read_regular
from .spec import INGEST, MAX_COUNT, MAX_SAMPLE_BYTES, Spec

SCAN_SHOWN = 20  # bad files listed one per line; the rest counted
# torchvision.datasets.folder.IMG_EXTENSIONS (0.29): the files ImageFolder takes, by name
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
UNHELD = (".ppm", ".bmp", ".pgm")  # taken by ImageFolder; not a format layoutbench holds
# TIFF compression tag values -> the registry's codec of that compression (what decoding it needs)
TIFF_CODECS = {**{code: formats.codec_id("tiff", name) for name, code in TIFF_COMPRESSION.items()},
               32946: "tiff-deflate", 50013: "tiff-deflate", 34926: "tiff-zstd"}  # older and other tag values


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
    """The scan's entries, in sample order, with `info` (the manifest's top-level source), and
    what ImageFolder ignores (`ignored`: {why: [count, first]}) and the classes with no image
    file (`empty`), for the command's report."""

    info: dict
    ignored: dict
    empty: list


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _refuse_special(path: str) -> None:
    try:
        st = os.lstat(path)
    except OSError:  # gone (or unreadable): the scan's read names it
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise UsageError(f"{path} is {kind_of(st.st_mode)}: an ingest source holds image files only; remove it "
                         f"from SRC")


def _outside(path: str, src: str, what: str) -> UsageError:
    return UsageError(f"{path} is a symbolic link to {os.path.realpath(path)}, outside the source {src}: ingest "
                      f"reads only inside SRC; copy the {what} in, or remove the link")


def _unlistable(exc: OSError):
    raise UsageError(f"{exc.filename} cannot be listed ({exc.strerror or exc}): torchvision's ImageFolder would leave "
                     f"out its files without a word; make it readable, or remove it from SRC")


def folder_files(src: str, ignored: dict | None = None) -> tuple[list[tuple[str, str, int]], list[str]]:
    """((path, rel, label) in ImageFolder's order, class names) of an ImageFolder tree: exactly
    torchvision's ImageFolder(src).samples and .classes (see the module docstring), or UsageError
    for a loop, a link outside SRC, a taken FIFO or device, or a directory that cannot be listed.
    `ignored` (a dict) gets {why: [count, first rel]} of what ImageFolder ignores too."""
    root = os.path.realpath(src)

    def ignore(why: str, rel: str) -> None:
        if ignored is not None:
            ignored.setdefault(why, [0, rel])[0] += 1

    try:
        with os.scandir(src) as it:
            top = [(entry.name, entry.is_dir()) for entry in it]  # is_dir follows links, as find_classes does
    except OSError as exc:
        raise UsageError(f"ingest source {src} cannot be listed ({exc.strerror or exc})") from None
    classes = sorted(name for name, is_dir in top if is_dir)  # torchvision's find_classes
    for name, is_dir in sorted(top):
        if not is_dir:
            ignore("not a class directory, directly in SRC", name)
    files = []
    for label, name in enumerate(classes):  # torchvision's make_dataset
        top_dir = os.path.join(src, name)
        if not _inside(top_dir, root):
            raise _outside(top_dir, src, "class")
        walked, real_of, parent_of = [], {}, {}
        for dirpath, dirnames, filenames in os.walk(top_dir, onerror=_unlistable, followlinks=True):
            if not _inside(dirpath, root):  # before os.walk lists what is under it
                raise _outside(dirpath, src, "data")
            real = real_of[dirpath] = os.path.realpath(dirpath)
            up = parent_of.get(dirpath)
            while up is not None:  # a loop: a link to a directory it is inside of, walked without end
                if real_of[up] == real:
                    raise UsageError(f"{dirpath} is {real} again, reached through a symbolic link inside it (a "
                                     f"loop): torchvision's ImageFolder walks it again and again, until the system's "
                                     f"limit on links, taking its files dozens of times; remove the link")
                up = parent_of.get(up)
            for d in dirnames:
                parent_of[os.path.join(dirpath, d)] = dirpath
            walked.append((dirpath, filenames))
        for dirpath, filenames in sorted(walked):  # sorted(os.walk(...)): by directory path
            reldir = os.path.relpath(dirpath, src)
            for fname in sorted(filenames):
                path, rel = os.path.join(dirpath, fname), os.path.join(reldir, fname)
                if not path.lower().endswith(IMG_EXTENSIONS):  # torchvision's has_file_allowed_extension
                    ignore("without an image extension", rel)
                    continue
                _refuse_special(path)
                if os.path.islink(path) and not _inside(path, root):
                    raise _outside(path, src, "file")
                files.append((path, rel, label))
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


class NotReadableHere(ValueError):
    """A whole image of a format layoutbench holds that this install cannot decode (so neither
    could it read back a corpus holding it): the message is one line naming what installs the
    decoder; `facts` are examine()'s (bytes, format, shape, dtype), from the file's header."""

    def __init__(self, why: str, facts: tuple):
        super().__init__(why)
        self.facts = facts


def _tiff_coding(data: bytes) -> tuple[int, int]:
    """(compression, predictor) tag values of a TIFF's first page."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        return int(page.compression), int(page.predictor)


def readable_here(data: bytes, fmt: str, shape: tuple, dtype: str) -> str | None:
    """None when this install decodes an image file of `fmt`, `shape`, `dtype` (its header's);
    else one line saying what it needs and what installs it. PNG, JPEG, WebP: the codec registry's
    (CodecInfo.missing(dtype, channels)). TIFF: the registry's codec of its compression (none,
    deflate, LZW, zstd), else tifffile's own decoders, which without imagecodecs are few."""
    if fmt != "tiff":
        return formats.CODECS[fmt].missing(dtype, shape[2])
    try:
        compression, predictor = _tiff_coding(data)
    except Exception:  # damaged: the decode says how
        return None
    if compression in TIFF_CODECS:
        why = formats.CODECS[TIFF_CODECS[compression]].missing(dtype, shape[2])
        return None if why is None else f"a TIFF of {TIFF_CODECS[compression][5:] or 'no'} compression: {why}"
    if present("imagecodecs"):  # tifffile decodes what it can with it; the decode judges the rest
        return None
    import tifffile

    for tag, value, known in (("compression", compression, tifffile.TIFF.DECOMPRESSORS),
                              ("predictor", predictor, tifffile.TIFF.PREDICTORS)):
        if value not in known:
            try:
                name = (tifffile.COMPRESSION if tag == "compression" else tifffile.PREDICTOR)(value).name
            except ValueError:
                name = str(value)
            return (f"a TIFF of {tag} {name} needs imagecodecs to decode (tifffile cannot without it; imagecodecs "
                    f"is not installed): {install_hint('codecs')}")
    return None


class TooLarge(ValueError):
    """An image whose header says it decodes to more than MAX_SAMPLE_BYTES: refused from the
    header, never decoded (a few MB of PNG can hold gigabytes of pixels)."""


def too_large(shape: tuple, dtype: str) -> TooLarge | None:
    """TooLarge (its message one line: the shape, the bytes it decodes to and the limit) for a
    header's `shape` and `dtype` past MAX_SAMPLE_BYTES; None within it."""
    decoded = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    if decoded <= MAX_SAMPLE_BYTES:
        return None
    h, w, c = shape
    return TooLarge(f"{h:,}x{w:,}x{c} {dtype} pixels decode to {decoded:,} bytes, over the {MAX_SAMPLE_BYTES:,} "
                    f"(1 GiB) a sample may take (refused from its header, not decoded): downscale or crop it")


def examine(path: str) -> tuple[bytes, str, tuple, str]:
    """(bytes, format, shape, dtype) of one source file, decoded once to prove it whole; ValueError
    (why, one line) for a file that cannot be a sample, TooLarge (a ValueError; not decoded) for
    one whose header says it decodes past MAX_SAMPLE_BYTES, NotReadableHere (not decoded) for one
    this install cannot decode."""
    try:
        data = read_regular(path, MAX_SAMPLE_BYTES)
    except FileNotFoundError:
        raise ValueError("missing (no such file)") from None
    except (FileRefused, OSError) as exc:
        raise ValueError(f"unreadable ({exc.strerror or exc})") from None
    if not data:
        raise ValueError("empty file")
    fmt, shape, dtype = formats.probe(data)
    if (big := too_large(shape, dtype)) is not None:
        raise big
    if (why := readable_here(data, fmt, shape, dtype)) is not None:
        raise NotReadableHere(why, (data, fmt, shape, dtype))
    img = formats.decode_image(data, shape[2], np.dtype(dtype))
    if img.shape != shape:
        raise ValueError(f"decodes to {img.shape}, its header says {shape}")
    return data, fmt, shape, dtype


class _NotHere(str):
    """Why a file is left out that this install cannot decode (the line naming the extra)."""


def _examined(path: str):
    """(format, shape, dtype, size, crc32) of a file, or why it is bad (a string; a _NotHere for
    a file this install cannot decode)."""
    try:
        data, fmt, shape, dtype = examine(path)
    except NotReadableHere as exc:
        return _NotHere(str(exc))
    except ValueError as exc:
        why = " ".join(str(exc).split())
        ext = os.path.splitext(path)[1].lower()
        if ext in UNHELD and why.startswith("not a TIFF"):
            why = (f"a {ext[1:].upper()} file ({ext}): torchvision's ImageFolder takes .ppm, .bmp and .pgm files, "
                   f"but layoutbench holds TIFF, PNG, JPEG and WebP only; convert it (to PNG: lossless)")
        return why
    return fmt, shape, dtype, len(data), zlib.crc32(data)


def scan(src, skip_bad: bool = False, workers: int = 1, allow_empty: bool = True) -> Entries:
    """Every usable file of SRC as Entries (see the module docstring); UsageError on refusals.
    `workers` threads read and decode the files (the decoders release the GIL), in order.
    `allow_empty`: False refuses an ImageFolder class with no image file, as ImageFolder(SRC)
    does (the ingest's default); True (verify's rescan) keeps it numbered, as
    ImageFolder(SRC, allow_empty=True). Entries.ignored: {why: [count, first]} of the files
    ImageFolder ignores; Entries.empty: the classes with no image file."""
    src = os.path.expanduser(os.fspath(src))  # as ImageFolder takes its root
    if not os.path.lexists(src):
        raise UsageError(f"ingest source {src}: no such file or directory")
    ignored = {}
    if os.path.isdir(src):
        files, classes, kind = *folder_files(src, ignored), "folder"
    elif os.path.isfile(src):
        files, classes, kind = *list_files(src), "list"
    else:
        raise UsageError(f"ingest source {src} is {kind_of(os.stat(src).st_mode)}: give a directory of class "
                         f"folders or a `path label` list file")
    _refuse_undecodable(src, files, classes)
    empty = []
    if kind == "folder":
        present = {label for _, _, label in files}
        empty = [name for label, name in enumerate(classes) if label not in present]
    if empty and not allow_empty:
        shown = ", ".join(f"{name} (class {classes.index(name)})" for name in empty[:SCAN_SHOWN])
        more = f" and {len(empty) - SCAN_SHOWN:,} more" if len(empty) > SCAN_SHOWN else ""
        raise UsageError(f"{len(empty):,} class folder(s) of {src} hold no file named as an image "
                         f"({' '.join(IMG_EXTENSIONS)}): {shown}{more}; torchvision's ImageFolder refuses such a "
                         f"folder (FileNotFoundError) unless allow_empty=True, and numbers these classes either way; "
                         f"remove them from SRC, or rerun with --allow-empty to keep ImageFolder(SRC, "
                         f"allow_empty=True)'s labels")
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
        _refuse_bad(src, kind, bad)
    if not entries:
        raise UsageError(f"no image of {src} can be ingested (all {len(bad):,} are bad); nothing to ingest")
    entries.info = {"kind": kind, "path": os.path.abspath(src), "classes": classes,
                    "skipped": [list(b) for b in bad]}
    entries.ignored, entries.empty = ignored, empty
    return entries


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a name's bytes that are not UTF-8 (Python's surrogateescape)
        return False


def _refuse_undecodable(src: str, files: list, classes: list) -> None:
    """UsageError, one line, when SRC, a class or a file name is not valid UTF-8: the manifest
    lists each by name in UTF-8 JSON, and verify --source finds the files again by those names."""
    names = [os.path.abspath(src)] + list(classes) + [rel for _, rel, _ in files]
    bad = [n for n in names if not _utf8(n)]
    if bad:
        shown = os.fsencode(bad[0]).decode("utf-8", "backslashreplace")
        raise UsageError(f"{len(bad):,} name(s) in ingest source {quote(src)} are not valid UTF-8, the first "
                         f"{quote(shown)}: a corpus's manifest lists every class and file by its name in UTF-8; "
                         f"rename them to UTF-8 (e.g. `convmv -f latin1 -t utf-8 -r --notest SRC`) and rerun")


def _refuse_bad(src: str, kind: str, bad: list) -> None:
    """The bad files listed on stderr (at most SCAN_SHOWN of each kind), then one UsageError line:
    what this install cannot decode named with what installs it (not as corrupt), else the first
    corrupt file."""
    broken = [(rel, why) for rel, why in bad if not isinstance(why, _NotHere)]
    here = [(rel, why) for rel, why in bad if isinstance(why, _NotHere)]
    for rel, why in broken[:SCAN_SHOWN]:
        print(f"python -m generator ingest: bad source image {os.path.join(src, rel) if kind == 'folder' else rel}: "
              f"{why}", file=sys.stderr)
    for rel, why in here[:SCAN_SHOWN]:
        print(f"python -m generator ingest: source image {os.path.join(src, rel) if kind == 'folder' else rel} "
              f"cannot be decoded here: {why}", file=sys.stderr)
    if here:
        first = {}  # each reason once, with the first file it names
        for rel, why in here:
            first.setdefault(str(why), rel)
        also = f" (and {len(broken):,} bad one(s), listed above)" if broken else ""
        raise UsageError(f"{len(here):,} source image(s) of {src} cannot be decoded by this install, so a corpus of "
                         f"them could not be read back here{also}: "
                         + "; ".join(f"e.g. {rel}: {why}" for why, rel in first.items())
                         + "; or rerun with --skip-bad to leave them out")
    more = f" (the first {SCAN_SHOWN} listed above)" if len(broken) > SCAN_SHOWN else " (listed above)"
    rel, why = broken[0]
    raise UsageError(f"{len(broken):,} source image(s) of {src} cannot be ingested{more}, e.g. {rel}: {why}; "
                     f"fix or remove them, or rerun with --skip-bad to leave them out")


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


def refuse_out_inside(src, out) -> None:
    """UsageError when the corpus directory `out` is a folder source SRC or inside it: the corpus's
    own files would become part of SRC (another class folder, to ImageFolder), so the rerun of the
    ingest and verify --source would never see the source that was ingested."""
    src, out = os.path.expanduser(os.fspath(src)), os.fspath(out)
    if not os.path.isdir(src):
        return
    root, real = os.path.realpath(src), os.path.realpath(out)
    if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
        raise UsageError(f"--out {quote(out)} is inside the ingest source {quote(src)}: the corpus's files would "
                         f"become part of the source (a class folder to ImageFolder); choose an --out outside "
                         f"{quote(src)}")


def ingest(src, out, layouts=None, workers: int | None = None, force: bool = False, skip_bad: bool = False,
           progress: bool | None = None, allow_empty: bool = False):
    """Scan SRC and write its corpus in `out` (every layout by default). Returns (manifest, reports,
    entries)."""
    from .build import generate
    from .pool import SOURCES

    refuse_out_inside(src, out)
    entries = scan(src, skip_bad, workers or os.cpu_count() or 1, allow_empty=allow_empty)
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
    p.add_argument("--allow-empty", action="store_true",
                   help="keep class folders with no image file in the numbering, as ImageFolder(SRC, allow_empty=True)")
    p.add_argument("--force", action="store_true", help="replace a corpus of another source in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    return p


def main(argv=None) -> int:
    from .build import format_table, left_out_lines, parse_layouts

    args = build_parser().parse_args(argv)
    from .objectstore import refuse_remote_out

    refuse_remote_out(args.out, "python -m generator ingest")
    chosen = parse_layouts(args.layouts) if args.layouts is not None else None
    manifest, reports, entries = ingest(args.src, args.out, chosen, args.workers, args.force, args.skip_bad,
                                        progress=False if args.quiet else None, allow_empty=args.allow_empty)
    spec = manifest.spec
    if not args.quiet:
        fmts = sorted({e.fmt for e in entries})
        print(f"corpus {args.out}: {spec.count:,} files of {args.src} ({', '.join(fmts)}; "
              f"{len(entries.info['classes'])} classes; up to {spec.height}x{spec.width}x{spec.channels} {spec.dtype}), "
              f"{sum(e.size for e in entries):,} B, stored unchanged")
        print(format_table(reports))
        if args.layouts is None:
            for line in left_out_lines():
                print(line)
    if entries.ignored:
        print("ignored, as torchvision's ImageFolder ignores them: " + "; ".join(
            f"{n:,} {'entry' if n == 1 else 'entries'} {why} (e.g. {first})"
            for why, (n, first) in entries.ignored.items()))
    if entries.empty:
        classes = entries.info["classes"]
        print(f"{len(entries.empty):,} class folder(s) with no image file kept in the numbering (--allow-empty, as "
              f"ImageFolder(SRC, allow_empty=True)): " + ", ".join(f"{c} (class {classes.index(c)})" for c in
                                                                  entries.empty[:SCAN_SHOWN]))
    for rel, why in entries.info["skipped"]:
        print(f"skipped {rel}: {why}")
    if entries.info["skipped"]:
        print(f"{len(entries.info['skipped']):,} bad source image(s) skipped (--skip-bad)")
    return 0


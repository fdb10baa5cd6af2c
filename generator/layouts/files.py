"""`files`: one image file per sample in an ImageFolder tree, files/<class>/<index>.<ext> (the
codec's extension: tif, png, jpg, webp, raw; in an ingested corpus of mixed formats each
sample's own format's, as its manifest lists it: sample_ext).

ImageFolder-exact (corpus format version 2): the class directory of label L is L zero-padded
to the width of the largest label (`files/007/` with 1,000 classes), and every class has its
directory, empty ones too, so that torchvision's ImageFolder, which sorts directory names as
strings and numbers them in that order, gives every file its manifest label whatever the class
count. (An empty class directory makes ImageFolder refuse the tree unless it is given
`allow_empty=True`: a loud refusal, where a missing one would silently renumber the classes
after it.) Format version 1 named directories by the unpadded label and made them only for
classes that occur; `class_dir(spec, label, version=1)` still names those, for readers of old
corpora.

A file appears under its final name only when complete: it is written as an unnamed file
(O_TMPFILE) and linked into place, or, where the filesystem has no O_TMPFILE, written under a
temporary name and renamed. Every class directory is made by begin(). A rerun keeps the
complete files and writes the rest.

An ingested corpus of mixed formats (format version 4 on) names each file by its own format
(`0.jpg`, `1.png`, `2.tif`, `3.webp`), from the formats its manifest lists (samples.format, what
the ingest's scan found), so that torchvision's ImageFolder, which takes files by extension, sees
every one. Versions 1-3 named them all `<index>.img` (which ImageFolder skips), and a files
layout added to a version-2 or -3 corpus is still written with those names, the ones its
manifest promises readers.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from ..errors import CorpusError
from ..limits import keep_open
from ..manifest import MANIFEST, VERSION, read_manifest, records_formats
from ..spec import Spec
from . import LayoutWriter, payload_estimate

TMP_MARK = ".tmp-"
FSYNC_EACH_MAX = 256  # end() fsyncs each file of a corpus of at most this many files...
FSYNC_EACH_MIN_BYTES = 1 << 20  # ...of at least this many bytes of pixels; else it calls sync()
_MAX_DIR_FDS = 256  # label directories kept open per DirWriter (there may be 65,535 classes)
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)  # filesystem or kernel without O_TMPFILE


def index_width(spec: Spec) -> int:
    return len(str(spec.count - 1))


def class_width(spec: Spec) -> int:
    """Digits of the largest label: every class directory name has this many (format version 2)."""
    return len(str(spec.num_classes - 1))


def class_dir(spec: Spec, label: int, version: int | None = None) -> str:
    """The directory name of class `label`: zero-padded to class_width (version 2, the current
    format), or the bare number (format version 1)."""
    if version == 1:
        return str(label)
    return f"{label:0{class_width(spec)}d}"


def sample_ext(spec: Spec, version: int | None = None, fmt: str | None = None) -> str:
    """The extension of a sample's file in a corpus of manifest `version` (default: the current
    one): the codec's (CodecInfo.extension); in an ingested corpus of mixed formats, from version
    4 that of the sample's own format `fmt` (tiff, png, jpeg, webp: Manifest.formats[i], or
    source_format while writing), before it "img" for every sample."""
    from ..codecs import codec_id, codec_info

    if records_formats(spec, VERSION if version is None else version):
        if fmt is None:
            raise ValueError("a sample of an ingested corpus of mixed formats is named by its own format: give fmt")
        return codec_info(fmt).extension
    return codec_info(codec_id(spec.payload, spec.compression)).extension


def sample_relpath(spec: Spec, index: int, label: int, version: int | None = None, fmt: str | None = None) -> str:
    """Path of sample `index` (of class `label`, of format `fmt` in an ingested corpus of mixed
    formats) relative to the corpus root, in the format of manifest `version` (default: the
    current one)."""
    return f"files/{class_dir(spec, label, version)}/{index:0{index_width(spec)}d}.{sample_ext(spec, version, fmt)}"


def source_format(spec: Spec, index: int) -> str:
    """The format of sample `index` of an ingested corpus being written, as the ingest's scan found
    it (told by its bytes): what its manifest lists as samples.format. The scan's entries are in
    generator.pool.SOURCES while the ingest writes (forked workers inherit them)."""
    from ..pool import SOURCES

    entries = SOURCES.get(spec)
    if entries is None:
        raise CorpusError("this corpus was ingested from files: rerun python -m generator ingest SRC --out DIR "
                          "to write (or resume) its layouts")
    return entries[index].fmt


def corpus_version(root: Path) -> int:
    """The format version a layout added to the corpus in `root` is written in: its manifest's,
    when it has one (its names are the ones that manifest promises readers), else the current."""
    return read_manifest(root).version if (root / MANIFEST).exists() else VERSION


class DirWriter:
    """Writes complete files under one root, relative to open directory handles.

    A file is written unnamed (O_TMPFILE) and linked into place: one directory insert per file,
    where a temporary name + rename is an insert, a lookup, a delete and another insert (the
    docs/lab/2026-11-26-generator-speed.md has the figures). `check_existing=False` (a tree this run created)
    skips the stat of each name.
    """

    def __init__(self, root, check_existing: bool = True):
        self.root = os.fspath(root)
        self.check_existing = check_existing
        self.tmpfile = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
        self.fds: dict[str, int] = {}
        self.keep = min(_MAX_DIR_FDS, keep_open())  # fewer under a low `ulimit -n` (generator.limits)

    def _dir_fd(self, reldir: str) -> int:
        fd = self.fds.get(reldir)
        if fd is None:
            if len(self.fds) >= self.keep:
                self.close()
            path = os.path.join(self.root, reldir)
            os.makedirs(path, exist_ok=True)
            # O_NOFOLLOW: a class directory that is a symlink would have us write outside the corpus
            fd = self.fds[reldir] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        return fd

    def write(self, relpath: str, payload) -> bool:
        """Write one file; False if a complete one was already there."""
        reldir, name = os.path.split(relpath)
        dfd = self._dir_fd(reldir)
        exists = False
        if self.check_existing:
            try:
                if os.stat(name, dir_fd=dfd).st_size == len(payload):
                    return False
                exists = True  # but of the wrong size: replace it (rename does, linkat would not)
            except FileNotFoundError:
                pass
        if self.tmpfile and not exists:
            try:
                fd = os.open(".", os.O_WRONLY | os.O_TMPFILE, 0o644, dir_fd=dfd)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                self.tmpfile = False
            else:
                try:
                    _write_all(fd, payload)
                    # dst_dir_fd makes Python call linkat(..., AT_SYMLINK_FOLLOW), which links
                    # the open unnamed file; it fails if the name exists (a complete file).
                    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd)
                except FileExistsError:
                    return False
                finally:
                    os.close(fd)
                return True
        tmp = f"{name}{TMP_MARK}{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dfd)
        try:
            _write_all(fd, payload)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        return True

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, payload) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


class FilesWriter(LayoutWriter):
    name = "files"
    target = "files"
    supports_parallel_write = True  # every file is its own: parts are written by any worker or rank
    fresh = False  # set by begin(): True when this run made the tree
    version = VERSION  # the corpus's format version, which names the files (begin() reads it)

    def relpath(self, index: int, label: int) -> str:
        """Where sample `index` goes: sample_relpath in the corpus's version, by its own format
        in an ingested corpus of mixed formats."""
        fmt = source_format(self.spec, index) if records_formats(self.spec, self.version) else None
        return sample_relpath(self.spec, index, label, self.version, fmt)

    def begin(self) -> int:
        self.version = corpus_version(self.root)  # a layout added to a corpus takes its format version
        top = self.root / self.target
        self.fresh = not top.exists()  # nothing to keep: workers need not look for complete files
        top.mkdir(parents=True, exist_ok=True)
        if not self.fresh:
            for stale in top.glob(f"*/*{TMP_MARK}*"):  # left by an interrupted run (rename fallback)
                stale.unlink()
        # Every class directory, empty classes too (ImageFolder numbers the directories it finds).
        # Here, before any part is written, so parallel workers and MPI ranks only ever add files.
        for label in range(self.spec.num_classes):
            (top / class_dir(self.spec, label)).mkdir(exist_ok=True)
        return 0  # every index is visited; complete files are kept

    def write_part(self, indices: range, payloads: list, labels: list) -> None:
        with DirWriter(self.root, check_existing=not self.fresh) as out:
            for i, p, label in zip(indices, payloads, labels):
                out.write(self.relpath(i, label), p)

    def end(self, labels) -> None:
        """Durability. A few large files: an fsync each (and of their directories), which waits
        for this corpus only. Otherwise one sync(): an fsync each is a device cache flush each,
        minutes for tens of thousands of files; sync() also waits for every other writer on the
        machine, but only once."""
        if self.spec.count > FSYNC_EACH_MAX or self.spec.pixel_bytes < FSYNC_EACH_MIN_BYTES:
            os.sync()
            return
        top = self.root / self.target
        dirs = {top}
        for i, label in enumerate(np.asarray(labels).tolist()):
            path = self.root / self.relpath(i, label)
            _fsync(path)
            dirs.add(path.parent)
        for d in sorted(dirs, reverse=True):  # label directories, then files/
            _fsync(d)

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        per_file = -(-payload_estimate(spec, codec) // 4096) * 4096
        return spec.count * per_file + spec.num_classes * 4096

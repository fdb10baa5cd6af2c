"""Verify a corpus: every sample of every layout against the generator's reference.

The reference is recomputed, not stored: make_sample(spec, i) gives the pixels and label, and
Codec.encode gives the payload. For each layout every sample's stored payload must equal the
reference payload byte for byte and match the manifest's crc32 and size; the images the loader
delivers (read_batch, the path training uses) must equal the reference pixels; the layout's own
labels must equal the reference labels. The manifest itself is checked once.

An ingested corpus (python -m generator ingest) has no synthetic reference: `source` (verify
--source SRC) makes the source's files the reference, scanned again as the ingest scanned them:
every sample's payload must equal its file's bytes, its pixels what that file decodes to, its
label the file's class (ImageFolder's numbering) or listed label, and its shape and dtype the
file's. A file missing from SRC, or one the ingest did not take, is a mismatch named by path.
"""

from __future__ import annotations

import errno
import os
import sys
import zlib
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from generator.codec import Codec
from generator.objectstore.store import is_s3_url
from generator.errors import CorpusError, LayoutbenchError, ResourceError, SampleError, UsageError, os_reason
from generator.layouts import installed
from generator.manifest import MANIFEST, read_manifest
from generator.pool import chunks
from generator.synth import make_sample

from .registry import open_corpus, readers

SHOWN_EXTRA = 20  # unexpected files listed one by one; the rest are counted


@dataclass(frozen=True)
class Mismatch:
    layout: str  # or "manifest"
    index: int  # -1: the layout as a whole
    where: str
    problem: str

    def __str__(self) -> str:
        what = f"sample {self.index}" if self.index >= 0 else "layout"
        return f"{self.layout} {what} at {self.where}: {self.problem}"


def choose_layouts(manifest, layouts) -> list[str]:
    """The layouts to check: those named (each complete in the corpus and installed here), or by
    default every complete one whose libraries import here, each other left out with one line."""
    if not layouts:
        names = installed(manifest.layouts, explicit=False, prog="python -m loaders verify")
        if manifest.layouts and not names:
            raise UsageError(f"no layout of this corpus ({', '.join(manifest.layouts)}) can be read here: "
                             f"install what the lines above name")
        return names
    for name in layouts:
        if name not in readers():
            raise UsageError(f"unknown layout {name!r}; choose from: {', '.join(readers())}")
        if name not in manifest.layouts:
            raise UsageError(f"layout {name!r} is not complete in this corpus (complete: "
                             f"{', '.join(manifest.layouts) or 'none'})")
    return installed(layouts, explicit=True, prog="python -m loaders verify")


def verify(root, layouts=None, progress: bool | None = None, source=None) -> tuple[list[str], list[Mismatch]]:
    """(layouts checked, every mismatch found). An empty list means every sample matched.
    `source`: the directory or list an ingested corpus was made from (required for one, refused
    for a synthetic corpus)."""
    s3 = is_s3_url(root)
    if s3:  # a corpus under an S3 prefix (loaders.s3): its layouts read over S3
        from .s3 import read_s3_manifest, refusal

        manifest = read_s3_manifest(root)
        for name in layouts or ():
            if name in readers() and (why := refusal(name, root)) is not None:
                raise UsageError(why)
    else:
        manifest = read_manifest(root)
    names = choose_layouts(manifest, layouts)
    if s3 and not layouts:
        names = s3_layouts(root, names)
    spec, codec = manifest.spec, Codec(manifest.spec)
    found: list[Mismatch] = []
    reference = lambda i: _reference(spec, codec, i)  # noqa: E731
    if spec.source is not None:
        if source is None:
            raise UsageError(f"{root} was ingested from {manifest.source_info.get('path')}: its reference is those "
                             f"files; verify it with --source SRC")
        reference = _source_reference(manifest, codec, source, found)
    elif source is not None:
        raise UsageError(f"{root} is a synthetic corpus (its reference is recomputed); --source is for corpora made by "
                         f"python -m generator ingest")
    checkers = []
    for name in names:
        try:
            checkers.append(_LayoutCheck(open_corpus(root, name), found))
        except CorpusError as exc:  # this layout is not this corpus's (a link out, ...): said, the others checked
            found.append(Mismatch(name, -1, f"{root}/{manifest.layouts[name]['path']}", str(exc)))
    show = sys.stderr.isatty() if progress is None else progress
    try:
        with tqdm(total=spec.count * len(names), desc="verify", unit="sample", disable=not show,
                  dynamic_ncols=True) as bar:
            for r in chunks(0, spec.count, spec):
                refs = [reference(i) for i in r]
                _check_manifest(manifest, r, refs, found, f"{root}/{MANIFEST}")
                for check in checkers:
                    check.run(list(r), refs)
                    bar.update(len(r))
        for check in checkers:
            check.unexpected()
    finally:
        for check in checkers:
            check.reader.close()
    return names, found


def s3_layouts(root, names) -> list[str]:
    """Of `names`, those read over S3; each other one left out with a line on stderr."""
    from .s3 import refusal, supported_layouts

    keep = [n for n in names if refusal(n, root) is None]
    for n in names:
        if n not in keep:
            print(f"note: {refusal(n, root)}; not checked", file=sys.stderr)
    if not keep:
        raise UsageError(f"no layout of {root} ({', '.join(names) or 'none'}) is read over S3: layoutbench reads "
                         f"{', '.join(supported_layouts())} there")
    return keep


def listing_problem(exc: OSError) -> str:
    """What a failed listing of a layout's files says: a permission or a symbolic-link loop named as
    such (not "the corpus changed"), a directory that vanished meanwhile as the corpus changing;
    a limit of the process (open files, memory) raises ResourceError instead."""
    reason = os_reason(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"could not be listed: permission denied ({reason}); make it readable by this user "
                f"(chmod, or run as its owner) and rerun")
    if exc.errno == errno.ELOOP:
        return "could not be listed: a symbolic link loop (ELOOP); remove the link, or regenerate the corpus with --force"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"could not be listed ({reason}): the corpus changed during verify; rerun"
    return f"could not be listed: {reason}; fix that and rerun"


def _reference(spec, codec, i):
    pixels, label = make_sample(spec, i)
    payload, pixels = codec.reference(pixels)  # lossy codecs: the pixels are decode(payload)
    return pixels, label, payload


def _source_reference(manifest, codec, source, found):
    """reference(i) for an ingested corpus: (pixels, label, payload) of sample i's source file, from
    SRC scanned again (bad files skipped: those the ingest skipped show as not in the source)."""
    from generator.ingest import digest, scan

    entries = scan(source, skip_bad=True, workers=os.cpu_count() or 1)
    by_rel = {e.rel: e for e in entries}
    where = f"{source}"
    if digest(entries) != manifest.spec.source:
        listed = set(manifest.sources)
        added = [e for e in entries if e.rel not in listed]
        what = (f"{len(added):,} file(s) in the source that the corpus does not hold are listed, and each sample "
                f"whose file changed, vanished or was relabelled is too" if added else
                "each sample whose file changed, vanished or was relabelled is listed")
        found.append(Mismatch("source", -1, where, f"the source's files differ from those ingested (another set, or "
                                                   f"changed since): {what}"))
        for e in added[:SHOWN_EXTRA]:
            found.append(Mismatch("source", -1, e.path, "in the source but not in the corpus (added since the "
                                                        "ingest): remove it, or ingest the source again"))
        if len(added) > SHOWN_EXTRA:
            found.append(Mismatch("source", -1, where, f"and {len(added) - SHOWN_EXTRA:,} more files not in the "
                                                       f"corpus"))
    placeholder = (np.zeros((0, 0, 1), np.uint8), -1, b"")

    def reference(i):
        e = by_rel.get(manifest.sources[i])
        if e is None:
            found.append(Mismatch("source", i, os.path.join(str(source), manifest.sources[i]),
                                  "not in the source (missing, or bad now)"))
            return placeholder
        from generator.safeio import read_regular
        from generator.spec import MAX_SAMPLE_BYTES

        payload = read_regular(e.path, MAX_SAMPLE_BYTES)
        problems = []
        if list(e.shape) != list(manifest.shapes[i]) or e.dtype != manifest.dtypes[i]:
            problems.append(f"the manifest says {manifest.shapes[i]} {manifest.dtypes[i]}, the file is "
                            f"{list(e.shape)} {e.dtype}")
        if problems:
            found.append(Mismatch("manifest", i, e.path, "; ".join(problems)))
        pixels = codec.decode(payload, e.shape, e.dtype)
        return np.array(pixels), e.label, payload

    return reference


def _check_manifest(manifest, r, refs, found, where) -> None:
    for i, (_, label, payload) in zip(r, refs):
        if label == -1:  # no reference for it (its source file is missing): said already
            continue
        problems = []
        if manifest.crc32[i] != zlib.crc32(payload):
            problems.append(f"crc32 {manifest.crc32[i]:08x}, the reference payload's is {zlib.crc32(payload):08x}")
        if manifest.sizes[i] != len(payload):
            problems.append(f"size {manifest.sizes[i]}, the reference payload's is {len(payload)}")
        if manifest.labels[i] != label:
            problems.append(f"label {manifest.labels[i]}, the reference label is {label}")
        if manifest.spec.sizes is not None and tuple(manifest.shapes[i]) != manifest.spec.sample_shape(i):
            problems.append(f"shape {manifest.shapes[i]}, the size distribution gives {list(manifest.spec.sample_shape(i))}")
        if problems:
            found.append(Mismatch("manifest", i, where, "; ".join(problems)))


class _LayoutCheck:
    def __init__(self, reader, found: list[Mismatch]):
        self.reader, self.found, self.labels, self.dead = reader, found, None, False
        try:
            self.labels = reader.stored_labels()
        except ResourceError:  # a limit of this process (open files, memory): the command's one line
            raise
        except CorpusError as exc:
            self.give_up(exc)
        except SampleError as exc:  # its problem, not the advice to run verify: this is verify
            found.append(Mismatch(reader.layout, -1, exc.where, f"labels unreadable: {exc.problem}"))
        except (LayoutbenchError, OSError, KeyError, ValueError) as exc:
            found.append(Mismatch(reader.layout, -1, str(reader.target), f"labels unreadable: {exc}"))

    def give_up(self, exc: CorpusError) -> None:
        """The layout as a whole is not this corpus (another spec, not ours, outside the root): said
        once, and the other layouts are still checked."""
        self.dead = True
        self.found.append(Mismatch(self.reader.layout, -1, str(self.reader.target), str(exc)))

    def unexpected(self) -> None:
        """Entries of the layout that are not samples of this corpus (Reader.unexpected_entries):
        how a manifest whose count (or labels) was edited down shows in a layout without a spec."""
        r = self.reader
        if self.dead:
            return
        try:
            extra = r.unexpected_entries()
        except ResourceError:
            raise
        except CorpusError as exc:
            self.give_up(exc)
            return
        except SampleError:  # the layout cannot be opened: its samples' reads named why, one by one
            return
        except OSError as exc:
            self.found.append(Mismatch(r.layout, -1, str(exc.filename or r.target), listing_problem(exc)))
            return
        for path in extra[:SHOWN_EXTRA]:
            self.found.append(Mismatch(r.layout, -1, path, f"not a sample of this corpus (the manifest lists "
                                                           f"{len(r):,} samples): remove it, or regenerate"))
        if len(extra) > SHOWN_EXTRA:
            self.found.append(Mismatch(r.layout, -1, str(r.target), f"and {len(extra) - SHOWN_EXTRA:,} more files "
                                                                     f"that are not samples of this corpus"))

    @staticmethod
    def _each(idx: list[int], batch_fn, errors: dict):
        """batch_fn(idx) as one batch; on a SampleError, one sample at a time, to name every bad one."""
        try:
            return batch_fn(idx)
        except SampleError:
            results = []
            for i in idx:
                try:
                    results.extend(batch_fn([i]))
                except SampleError as exc:
                    errors.setdefault(i, []).append(exc.problem)
                    results.append(None)
            return results

    def run(self, idx: list[int], refs) -> None:
        if self.dead:
            return
        try:
            self._run(idx, refs)
        except CorpusError as exc:
            self.give_up(exc)

    def _run(self, idx: list[int], refs) -> None:
        r, errors = self.reader, {}
        payloads = self._each(idx, r.read_many, errors)
        images = self._each(idx, lambda ix: list(r.read_batch(ix)[0]), errors)
        for i, _, problem in r.check_integrity(idx):  # the container's own checks (record crc32c, ...)
            errors.setdefault(i, []).append(problem)
        for i, p, img, (pixels, label, ref) in zip(idx, payloads, images, refs):
            if label == -1:  # no reference (a source file missing): said once, by the source check
                continue
            problems = list(dict.fromkeys(errors.get(i, ())))  # once each, in order
            if p is not None:
                if bytes(p) != ref:
                    problems.append(f"payload differs from the reference from byte {_first_diff(bytes(p), ref)}")
                if zlib.crc32(p) != r.manifest.crc32[i]:
                    problems.append(f"crc32 {zlib.crc32(p):08x} where the manifest says {r.manifest.crc32[i]:08x}")
            if img is not None and not (img.dtype == pixels.dtype and img.shape == pixels.shape
                                        and np.array_equal(img, pixels)):
                problems.append("decoded pixels differ from the reference")
            if self.labels is not None and self.labels[i] != label:
                problems.append(f"stored label {self.labels[i]}, the reference label is {label}")
            if problems:
                self.found.append(Mismatch(r.layout, i, r.where(i), "; ".join(problems)))


def _first_diff(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.frombuffer(a, np.uint8, n) != np.frombuffer(b, np.uint8, n))
    return int(diff[0]) if diff.size else n

"""The generation driver: one corpus directory, its layouts, resumable and locked."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .errors import CorpusError, UsageError
from .layouts import LAYOUTS, disk_usage, registry
from .layouts.files import DirWriter, sample_relpath
from .manifest import MANIFEST, Manifest, read_manifest, tmp_prefix, write_json_atomic, write_manifest
from .pool import SampleTable, bounded_map, chunks, codec_for, produce
from .spec import Spec
from .synth import warm

IN_PROGRESS = ".generating.json"  # the spec being generated; present until generation ends
LOCK = ".lock"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class LayoutReport:
    layout: str
    samples: int
    bytes_on_disk: int
    files: int
    seconds: float
    mb_per_s: float
    skipped: bool = False


def parse_layouts(text: str | list[str]) -> list[str]:
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise UsageError("no layouts given; choose from: " + ", ".join(LAYOUTS))
    for n in names:
        if n not in LAYOUTS:
            raise UsageError(f"unknown layout {n!r}; choose from: {', '.join(LAYOUTS)}")
    return list(dict.fromkeys(names))


class CorpusLock:
    """An exclusive flock on DIR/.lock: two generators never interleave in one directory."""

    def __init__(self, root: Path):
        self.path = root / LOCK

    def __enter__(self):
        try:  # O_NOFOLLOW: a planted .lock symlink must not make us truncate a file elsewhere
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot take the lock {self.path} ({exc.strerror}); if it is a symbolic link, "
                             f"remove it, or choose another --out") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise UsageError(f"another generator (pid {holder}) is writing {self.path.parent}; "
                             f"wait for it to finish or stop it, then rerun, or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the flock


def _files_job(args):
    """(root, spec, indices[, check_existing]) -> (indices, crcs, sizes, labels), files written."""
    root, spec, indices, *rest = args
    payloads, crcs, sizes, labels = produce(spec, indices)
    with DirWriter(root, check_existing=rest[0] if rest else True) as out:
        for i, p, label in zip(indices, payloads, labels):
            out.write(sample_relpath(spec, i, label), p)
    return indices, crcs, sizes, labels


def _worker_init(parent: int) -> None:
    """A files worker: Ctrl-C is the parent's to handle (it stops the pool; no traceback per
    worker), and a worker dies with its parent, so after `kill -9` of the generator no orphan
    goes on writing or holds the corpus lock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent across fork
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: orphans finish their chunk and exit
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _produce_job(args):
    spec, indices = args
    return (indices, *produce(spec, indices))


def _wipe(root: Path) -> None:
    for cls in registry().values():
        for p in cls(root, None, None).paths():
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    for name in (MANIFEST, IN_PROGRESS):
        (root / name).unlink(missing_ok=True)


def _existing(root: Path, spec: Spec, force: bool) -> Manifest | None:
    """The manifest to extend, after refusing (or with --force wiping) anything else in root."""
    for cls in registry().values():  # the generator writes (and --force removes) only inside root
        for p in cls(root, None, None).paths():
            if p.is_symlink():
                raise UsageError(f"{p} is a symbolic link: the generator writes only inside --out {root}; remove "
                                 f"the link, or generate elsewhere and move the corpus")
    for name in (MANIFEST, IN_PROGRESS):  # temporaries of a run killed while writing these
        for stale in root.glob(f"{tmp_prefix(name)}*"):
            stale.unlink()
    described = None
    try:
        if (root / MANIFEST).exists():
            described = read_manifest(root).spec
        elif (root / IN_PROGRESS).exists():
            described = Spec.from_dict(json.loads((root / IN_PROGRESS).read_text())["spec"])
    except (CorpusError, UsageError, ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
        if not force:
            raise CorpusError(f"{root} holds a damaged corpus ({exc}); rerun with --force to replace it") from None
        _wipe(root)
        return None
    if described is None:
        foreign = [p.name for p in root.iterdir() if p.name != LOCK]
        if foreign:
            raise UsageError(f"{root} is not empty and holds no layoutbench corpus ({', '.join(sorted(foreign)[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty --out directory")
        return None
    if not described.same_corpus(spec):
        if not force:
            raise UsageError(f"{root} holds a corpus with a different spec ({_describe(described)}); "
                             f"use --force to replace it or choose another --out")
        _wipe(root)
        return None
    return read_manifest(root) if (root / MANIFEST).exists() else None


def _describe(spec: Spec) -> str:
    return (f"{spec.preset + ' ' if spec.preset else ''}{spec.height}x{spec.width}x{spec.channels} {spec.dtype}, "
            f"count {spec.count}, seed {spec.seed}, {spec.content}, {spec.payload}/{spec.compression}")


def _check_space(root: Path, spec: Spec, layouts: list[str]) -> None:
    codec = codec_for(spec)
    need = 0
    for name in layouts:
        cls = registry()[name]
        have = sum(disk_usage(p)[0] for p in cls(root, spec, codec).paths() if p.exists())
        need += max(0, cls.estimate_bytes(spec, codec) - have)
    free = shutil.disk_usage(root).free
    if need > free:
        raise UsageError(f"not enough disk space in {root}: the layouts {','.join(layouts)} need about "
                         f"{need / 1e9:.2f} GB and {free / 1e9:.2f} GB is free; free space, use fewer "
                         f"--layouts or a smaller --count, or another --out")


def make_out_dir(out) -> Path:
    """The --out directory, created if need be; refused (exit 2) if it cannot be written."""
    root = Path(out)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out directory {root}: {exc.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"--out directory {root} is not writable; choose another directory")
    return root


def generate(out, spec: Spec, layouts=LAYOUTS, workers: int | None = None, force: bool = False,
             progress: bool | None = None) -> tuple[Manifest, list[LayoutReport]]:
    """Make (or finish, or extend) the corpus in `out`. Returns its manifest and a report per layout."""
    layouts = parse_layouts(layouts)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    root = make_out_dir(out)
    with CorpusLock(root):
        manifest = _existing(root, spec, force)
        done = set(manifest.layouts) if manifest else set()
        todo = [name for name in layouts if name not in done]
        reports = [_report_existing(manifest, name) for name in layouts if name in done]
        if not todo:
            return manifest, reports
        _check_space(root, spec, todo)
        codec = codec_for(spec)
        table = (SampleTable(spec.count, manifest.crc32, manifest.sizes, manifest.labels)
                 if manifest else SampleTable(spec.count))
        manifest = manifest or Manifest(spec, [], [], [], {}, len(codec.header))
        current = IN_PROGRESS  # what is being written, for the error message
        try:
            write_json_atomic(root / IN_PROGRESS, {"spec": spec.to_dict(), "layouts": todo})
            for name in todo:
                current = f"the {name} layout"
                writer = registry()[name](root, spec, codec)
                try:
                    report = _write_layout(writer, table, workers, progress)
                except BaseException:
                    writer.abort()
                    raise
                table.known = True
                manifest.crc32, manifest.sizes, manifest.labels = (
                    table.crc.tolist(), table.sizes.tolist(), table.labels.tolist())
                manifest.layouts[name] = {
                    "path": writer.target, "bytes_on_disk": report.bytes_on_disk, "files": report.files,
                    "write_seconds": round(report.seconds, 6), "mb_per_s": round(report.mb_per_s, 3),
                    "payload_bytes": int(table.sizes.sum()), "workers": workers,
                    "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                current = MANIFEST
                write_manifest(root, manifest)  # each finished layout becomes readable at once
                reports.append(report)
            (root / IN_PROGRESS).unlink(missing_ok=True)
        except OSError as exc:  # disk full, I/O error, permissions changed under us: one clear line
            if exc.errno == errno.ENOSPC:
                what = f"disk full while writing {current} in {root}; free space"
            else:
                what = (f"writing {current} in {root} failed: {exc.strerror or exc}"
                        f"{f' ({exc.filename})' if exc.filename else ''}; fix that")
            raise CorpusError(f"{what} and rerun the same command to resume (the corpus is marked "
                              f"incomplete until then; finished layouts stay usable)") from None
    order = {name: k for k, name in enumerate(layouts)}
    return manifest, sorted(reports, key=lambda r: order[r.layout])


def _report_existing(manifest: Manifest, name: str) -> LayoutReport:
    f = manifest.layouts[name]
    return LayoutReport(name, manifest.spec.count, f["bytes_on_disk"], f["files"], f["write_seconds"],
                        f["mb_per_s"], skipped=True)


def _write_layout(writer, table: SampleTable, workers: int, progress) -> LayoutReport:
    spec = writer.spec
    t0 = time.perf_counter()
    start = writer.begin()
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=spec.count, desc=f"{writer.name:>5}", unit="img", disable=not show,
              dynamic_ncols=True) as bar:
        if writer.writes_in_workers:
            jobs = [(writer.root, spec, r, not writer.fresh) for r in chunks(0, spec.count, spec, 4 * workers)]
            if workers > 1:
                warm(spec)  # the forked workers share the parent's base block instead of each making one
                ctx = multiprocessing.get_context("fork")
                # Ctrl-C blocked across the fork: a worker never sees one before _worker_init
                # has made it ignore them (it would print its own traceback).
                mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                try:
                    pool = ctx.Pool(min(workers, len(jobs)), _worker_init, (os.getpid(),))
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                with pool:
                    for indices, crcs, sizes, labels in pool.imap_unordered(_files_job, jobs):
                        table.fill(indices, crcs, sizes, labels)
                        bar.update(len(indices))
            else:
                for indices, crcs, sizes, labels in map(_files_job, jobs):
                    table.fill(indices, crcs, sizes, labels)
                    bar.update(len(indices))
        else:
            if start and not table.known:  # resumed: re-derive what the first run had written
                for r in chunks(0, start, spec):
                    _, crcs, sizes, labels = produce(spec, r)
                    table.fill(r, crcs, sizes, labels)
            bar.update(start)
            jobs = [(spec, r) for r in chunks(start, spec.count, spec, 4 * workers)]
            # At most ~512 MiB of payloads in flight, however many --workers (4k-8bit: 11 samples).
            window = max(2, min(2 * workers, (512 << 20) // (len(jobs[0]) * spec.pixel_bytes))) if jobs else 1
            for indices, payloads, crcs, sizes, labels in bounded_map(_produce_job, jobs, workers, window):
                writer.put_many(indices, payloads)
                table.fill(indices, crcs, sizes, labels)
                bar.update(len(indices))
        writer.end(table.labels)
    seconds = time.perf_counter() - t0
    on_disk, files = disk_usage(writer.root / writer.target)
    payload = int(table.sizes.sum())
    return LayoutReport(writer.name, spec.count, on_disk, files, seconds, payload / seconds / 1e6)

"""The generation driver: one corpus directory, its layouts, resumable and locked."""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .errors import (CorpusError, LayoutbenchError, ResourceError, UsageError, raise_if_out_of_handles,
                     raise_if_out_of_memory)
from .lifetime import die_with_parent
from .layouts import disk_usage, get_layout, installed, layout_ids, layouts, writer_classes
from .manifest import EXTENDS, MANIFEST, VERSION, Manifest, read_manifest, tmp_prefix, write_json_atomic, write_manifest
from .safeio import read_regular
from .pool import SampleTable, bounded_map, chunks, codec_for, produce
from .spec import Spec
from .synth import warm

IN_PROGRESS = ".generating.json"  # the spec being generated; present until generation ends
LOCK = ".lock"


@dataclass(frozen=True)
class LayoutReport:
    layout: str
    samples: int
    bytes_on_disk: int
    files: int
    seconds: float
    mb_per_s: float
    skipped: bool = False


def format_table(reports) -> str:
    """The table of LayoutReports `python -m generator` prints: one row per layout written or kept."""
    rows = [("layout", "samples", "bytes on disk", "files", "seconds", "MB/s")]
    for r in reports:
        rows.append((r.layout + (" (existing)" if r.skipped else ""), f"{r.samples:,}", f"{r.bytes_on_disk:,}",
                     f"{r.files:,}", f"{r.seconds:.2f}", f"{r.mb_per_s:,.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in rows)


def parse_layouts(text: str | list[str] | None) -> list[str]:
    """A comma list (or a list) of layout ids, each registered and installed, once each; None: every
    layout whose libraries are installed (the commands say which were left out: not_installed)."""
    known = layout_ids()
    if text is None:
        return list(layout_ids(available=True))
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise UsageError("no layouts given; choose from: " + ", ".join(known))
    for n in names:
        if n not in known:
            raise UsageError(f"unknown layout {n!r}; choose from: {', '.join(known)}")
    return installed(dict.fromkeys(names), explicit=True, prog="python -m generator")


def left_out_lines() -> list[str]:
    """One line per registered layout whose libraries do not import here, naming what installs them:
    what a command that wrote the default set prints after its table."""
    return [f"left out {layout.id}: {why}" for layout in layouts().values() if (why := layout.missing()) is not None]


def holding_layouts(names: list[str], spec: Spec, explicit: bool) -> list[str]:
    """The layouts of `names` that hold `spec`'s samples (LayoutWriter.refusal). One named
    explicitly that cannot is a UsageError naming it and what to use; of the default set, those
    that cannot are left out with one line each on stderr."""
    kept = []
    for name in names:
        why = get_layout(name).writer_class().refusal(spec)
        if why is None:
            kept.append(name)
        elif explicit:
            raise UsageError(why)
        else:
            print(f"python -m generator: left out {name}: {why}", file=sys.stderr)
    if not kept:
        raise UsageError("no layout holds this corpus; see the lines above")
    return kept


class CorpusLock:
    """An exclusive flock on DIR/.lock: two generators never interleave in one directory."""

    def __init__(self, root: Path):
        self.path = root / LOCK

    def __enter__(self):
        try:  # O_NOFOLLOW: a planted .lock symlink must not make us truncate a file elsewhere
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot take the lock {self.path} ({exc.strerror}); if it is a symbolic link, "
                             f"remove it, or choose another --out") from None
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):  # a FIFO opened O_RDWR does not block; refuse it
            os.close(self.fd)
            raise UsageError(f"the lock {self.path} is not a regular file; remove it, or choose another --out")
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


def _part_job(args):
    """(writer, indices) -> (indices, crcs, sizes, labels), with the part written: a parallel
    writer's unit of work, in a worker process or an MPI rank."""
    writer, indices = args
    payloads, crcs, sizes, labels = produce(writer.spec, indices)
    writer.write_part(indices, payloads, labels)
    return indices, crcs, sizes, labels


def write_parts(writer, parts, workers: int = 1):
    """Write `parts` of a parallel writer (after its begin()), in `workers` forked processes that
    die with this one; yield (indices, crcs, sizes, labels) per part as parts finish."""
    jobs = [(writer, r) for r in parts]
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_part_job, jobs)
        return
    warm(writer.spec)  # the forked workers share the parent's base block instead of each making one
    ctx = multiprocessing.get_context("fork")
    # Ctrl-C and SIGTERM blocked across the fork: a worker never sees one before _worker_init has
    # set its own handling (with the parent's handlers it would print its own traceback).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        pool = ctx.Pool(min(workers, len(jobs)), _worker_init, (os.getpid(),))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    with pool:
        yield from pool.imap_unordered(_part_job, jobs)


def _worker_init(parent: int) -> None:
    """A writer's worker: Ctrl-C is the parent's to handle (it stops the pool; no traceback per
    worker), and a worker dies with its parent, so after `kill -9` of the generator no orphan
    goes on writing or holds the corpus lock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)  # SIGTERM: the default (killed quietly)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # blocked across fork


def _remove_special_partials(writer) -> None:
    """A FIFO, device or socket among the partial files a writer resumes from (its own temporaries:
    `paths()` other than the published target, one level deep) is not something a run of ours left:
    removed, so that the writer starts that file afresh instead of hanging on it (a FIFO in
    lmdb.partial/ hung LMDB's open) or failing on it."""
    final = writer.root / writer.target
    for p in writer.paths():
        if p == final or p.is_symlink():  # links are refused by _existing
            continue
        for q in ([*p.iterdir()] if p.is_dir() else [p]):
            if q.exists() and not (q.is_file() or q.is_dir()) and not q.is_symlink():
                q.unlink()


def _produce_job(args):
    spec, indices = args
    return (indices, *produce(spec, indices))


def _wipe(root: Path) -> None:
    for cls in writer_classes().values():
        for p in cls(root, None, None).paths():
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    for name in (MANIFEST, IN_PROGRESS):
        (root / name).unlink(missing_ok=True)


def _existing(root: Path, spec: Spec, force: bool) -> Manifest | None:
    """The manifest to extend, after refusing (or with --force wiping) anything else in root."""
    for cls in writer_classes().values():  # the generator writes (and --force removes) only inside root
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
            described = Spec.from_dict(json.loads(read_regular(root / IN_PROGRESS, 1 << 20))["spec"])
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
    if force and (root / MANIFEST).exists() and read_manifest(root).version not in EXTENDS:
        _wipe(root)  # an older format: --force regenerates it (todo() refuses to extend it without)
        return None
    if not described.same_corpus(spec):
        if not force:
            raise UsageError(f"{root} holds a corpus with a different spec ({describe(described)}); "
                             f"use --force to replace it or choose another --out")
        _wipe(root)
        return None
    return read_manifest(root) if (root / MANIFEST).exists() else None


def describe(spec: Spec) -> str:
    """A spec in one line, for messages."""
    shape = f"sizes {spec.sizes} x{spec.channels}" if spec.sizes else f"{spec.height}x{spec.width}x{spec.channels}"
    return (f"{spec.preset + ' ' if spec.preset else ''}{shape} {spec.dtype}, "
            f"count {spec.count}, seed {spec.seed}, {spec.content}, {spec.payload}/{spec.compression}")


def _check_space(root: Path, spec: Spec, layouts: list[str]) -> None:
    codec = codec_for(spec)
    need = 0
    for name in layouts:
        cls = get_layout(name).writer_class()
        have = sum(disk_usage(p)[0] for p in cls(root, spec, codec).paths() if p.exists())
        need += max(0, cls.estimate_bytes(spec, codec) - have)
    usage = shutil.disk_usage(root)
    if usage.total == 0:  # ramfs and the like keep no count of their space: there is nothing to check against
        return
    if need > usage.free:
        raise UsageError(f"not enough disk space in {root}: the layouts {','.join(layouts)} need about "
                         f"{_human(need)} and {_human(usage.free)} is free; free space, use fewer "
                         f"--layouts or a smaller --count, or another --out")


def _human(nbytes: int) -> str:
    """Bytes for a message, in the largest unit that keeps it at 1 or more (kB, MB, GB, TB)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:,.2f} {unit}"
    return f"{nbytes:,} B"


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


class Generation:
    """One generator run on one corpus directory, in steps that MPI ranks can share out:

        with Generation(out, spec, force) as gen:      # the lock; refuses another corpus
            for name in gen.todo(layouts):             # the layouts not yet complete (space checked)
                writer = gen.begin(name)
                ... gen.write_sequential(writer, workers)   # or, for a parallel writer, on any
                ... write_parts(writer, parts) on every process, results to gen.fill()
                gen.finish(writer, seconds, workers)   # publish; the manifest lists it

    `generate()` runs every step here. On an OSError (full disk, I/O error) `failed()` turns it
    into one CorpusError line naming what was being written.
    """

    def __init__(self, out, spec: Spec, force: bool = False, settings: dict | None = None):
        """`settings`: writer settings by name (e.g. shard_mb); each writer gets those it takes."""
        self.codec = codec_for(spec)  # first: a spec this install cannot write or read back leaves no directory
        self.root, self.spec, self.force = make_out_dir(out), spec, force
        self.settings = {k: v for k, v in (settings or {}).items() if v is not None}
        self.current = IN_PROGRESS  # what is being written, for the error message

    def __enter__(self):
        self._lock = CorpusLock(self.root).__enter__()
        try:
            self.manifest = _existing(self.root, self.spec, self.force)
        except BaseException:
            self._lock.__exit__()
            raise
        m = self.manifest
        self.table = SampleTable(self.spec.count, m.crc32, m.sizes, m.labels) if m else SampleTable(self.spec.count)
        return self

    def __exit__(self, *exc):
        self._lock.__exit__()

    def done(self) -> set[str]:
        return set(self.manifest.layouts) if self.manifest else set()

    def todo(self, layouts) -> list[str]:
        """The layouts still to write, after the space check and with the in-progress marker written."""
        todo = [name for name in layouts if name not in self.done()]
        if todo and self.manifest and self.manifest.version not in EXTENDS:
            raise UsageError(f"{self.root} holds a corpus of format version {self.manifest.version} (this generator "
                             f"writes version {VERSION}): its layouts are still read, but to add "
                             f"{', '.join(todo)} regenerate it: rerun the command with --force")
        if todo:
            _check_space(self.root, self.spec, todo)
            self.current = IN_PROGRESS
            write_json_atomic(self.root / IN_PROGRESS, {"spec": self.spec.to_dict(), "layouts": todo})
        return todo

    def remove_partials(self, layouts) -> list[Path]:
        """Remove every path of each registered layout that is neither complete (in the manifest) nor
        among `layouts` (all the layouts this command writes): the partial files of an interrupted run
        with other --layouts. Only the same command resumes; a run with other layouts does not leave
        an orphan nobody points to. Returns what was removed."""
        removed = []
        for name, cls in writer_classes().items():
            if name in layouts or name in self.done():
                continue
            for p in cls(self.root, None, None).paths():
                if p.is_symlink() or p.is_file():
                    p.unlink()
                elif p.is_dir():
                    shutil.rmtree(p)
                else:
                    continue
                removed.append(p)
        return removed

    def writer(self, name: str):
        cls = get_layout(name).writer_class()
        return cls(self.root, self.spec, self.codec, **{k: v for k, v in self.settings.items() if k in cls.settings})

    def begin(self, name: str):
        """The layout's writer, begun (its resume point in writer.start)."""
        self.current = f"the {name} layout"
        writer = self.writer(name)
        _remove_special_partials(writer)
        try:
            writer.start = writer.begin()
        except BaseException:
            writer.abort()
            raise
        return writer

    def fill(self, indices: range, crcs, sizes, labels) -> None:
        self.table.fill(indices, crcs, sizes, labels)

    def write_sequential(self, writer, workers: int, bar=None) -> None:
        """A single-writer layout's samples from its resume point, produced by `workers` threads."""
        spec, start = self.spec, writer.start
        if start and not self.table.known:  # resumed: re-derive what the first run had written
            for r in chunks(0, start, spec):
                self.fill(r, *produce(spec, r)[1:])
        if bar is not None:
            bar.update(start)
        jobs = [(spec, r) for r in chunks(start, spec.count, spec, 4 * workers)]
        # At most ~512 MiB of payloads in flight, however many --workers.
        window = max(2, min(2 * workers, (512 << 20) // (len(jobs[0]) * spec.pixel_bytes))) if jobs else 1
        for indices, payloads, crcs, sizes, labels in bounded_map(_produce_job, jobs, workers, window):
            writer.put_many(indices, payloads, labels)
            self.fill(indices, crcs, sizes, labels)
            if bar is not None:
                bar.update(len(indices))

    def finish(self, writer, seconds: float, workers: int, **facts) -> LayoutReport:
        """End the layout (durable, published) and list it in the manifest."""
        writer.end(self.table.labels)
        self.table.known = True
        on_disk, files = disk_usage(writer.root / writer.target)
        payload = int(self.table.sizes.sum())
        report = LayoutReport(writer.name, self.spec.count, on_disk, files, seconds, payload / seconds / 1e6)
        m = self.manifest = self.manifest or Manifest(self.spec, [], [], [], {}, len(self.codec.header))
        m.crc32, m.sizes, m.labels = self.table.crc.tolist(), self.table.sizes.tolist(), self.table.labels.tolist()
        if self.spec.source is not None and m.sources is None:  # ingested: what the scan found
            from .pool import SOURCES

            entries = SOURCES[self.spec]
            m.shapes = [list(e.shape) for e in entries]
            m.dtypes = [e.dtype for e in entries]
            m.sources = [e.rel for e in entries]
            m.source_info = getattr(entries, "info", None)
            m.formats = [e.fmt for e in entries] if self.spec.payload == "mixed" else None  # version 4: samples.format
        elif self.spec.variable and m.shapes is None:  # each sample's own shape, as make_sample drew it
            m.shapes = [list(self.spec.sample_shape(i)) for i in range(self.spec.count)]
        m.layouts[writer.name] = {
            "path": writer.target, "bytes_on_disk": on_disk, "files": files,
            "write_seconds": round(seconds, 6), "mb_per_s": round(report.mb_per_s, 3),
            "payload_bytes": payload, "workers": workers,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **writer.facts(), **facts,
        }
        self.current = MANIFEST
        write_manifest(self.root, m)  # each finished layout becomes readable at once
        return report

    def complete(self) -> None:
        """Every layout asked for is written: drop the in-progress marker."""
        (self.root / IN_PROGRESS).unlink(missing_ok=True)

    def failed(self, exc: OSError) -> LayoutbenchError:
        """The one-line error of a write that failed with `exc`: a limit of the process or machine
        running out (open files, memory) named as such, never blamed on the corpus."""
        try:
            raise_if_out_of_handles(exc, exc.filename)
            raise_if_out_of_memory(exc, exc.filename)
        except ResourceError as limit:
            return ResourceError(f"writing {self.current} in {self.root}: {limit}; the rerun of the same command "
                                 f"resumes")
        # a library that wraps the OS's error in its own (pylance: an OSError with no errno) says it in words
        if exc.errno == errno.ENOSPC or (exc.errno is None and os.strerror(errno.ENOSPC) in str(exc)):
            what = f"disk full while writing {self.current} in {self.root}; free space"
        else:
            what = (f"writing {self.current} in {self.root} failed: {exc.strerror or exc}"
                    f"{f' ({exc.filename})' if exc.filename else ''}; fix that")
        return CorpusError(f"{what} and rerun the same command to resume (the corpus is marked "
                           f"incomplete until then; finished layouts stay usable)")

    def report_existing(self, name: str) -> LayoutReport:
        f = self.manifest.layouts[name]
        return LayoutReport(name, self.spec.count, f["bytes_on_disk"], f["files"], f["write_seconds"],
                            f["mb_per_s"], skipped=True)


def generate(out, spec: Spec, layouts=None, workers: int | None = None, force: bool = False,
             progress: bool | None = None, settings: dict | None = None) -> tuple[Manifest, list[LayoutReport]]:
    """Make (or finish, or extend) the corpus in `out` (every registered layout by default), with
    writer `settings` (e.g. {"shard_mb": 64}). Returns its manifest and a report per layout.
    Layouts that cannot hold the spec's samples (LayoutWriter.refusal: varying shapes) are refused
    when named, left out with a line on stderr when `layouts` is the default (None)."""
    layouts = holding_layouts(parse_layouts(layouts), spec, explicit=layouts is not None)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    show = sys.stderr.isatty() if progress is None else progress
    with Generation(out, spec, force, settings) as gen:
        reports = [gen.report_existing(name) for name in layouts if name in gen.done()]
        try:
            for p in gen.remove_partials(layouts):
                print(f"python -m generator: removed {p}, left unfinished by an interrupted run of a layout this "
                      f"run does not write", file=sys.stderr)
            for name in gen.todo(layouts):
                t0 = time.perf_counter()
                writer = gen.begin(name)
                try:
                    with tqdm(total=spec.count, desc=f"{name:>5}", unit="img", disable=not show,
                              dynamic_ncols=True) as bar:
                        if writer.supports_parallel_write:
                            for indices, crcs, sizes, labels in write_parts(writer, writer.parts(workers), workers):
                                gen.fill(indices, crcs, sizes, labels)
                                bar.update(len(indices))
                        else:
                            gen.write_sequential(writer, workers, bar)
                except BaseException:
                    writer.abort()
                    raise
                reports.append(gen.finish(writer, time.perf_counter() - t0, workers))
            gen.complete()
        except OSError as exc:  # disk full, I/O error, permissions changed under us: one clear line
            raise gen.failed(exc) from None
        manifest = gen.manifest
    order = {name: k for k, name in enumerate(layouts)}
    return manifest, sorted(reports, key=lambda r: order[r.layout])

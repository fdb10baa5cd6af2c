"""The capped regime's run: one repeat of a capped RunSpec, in a child process inside a memory
cgroup, through the one epoch loop (bench.run.epochs.run_epochs) with the Capped regime.

    parent                                   child (forked; dies with the parent: PDEATHSIG)
    make the group (no limit yet)  ──fork──► join the group; read paths warmed; loader started;
                                             an epoch a few batches in, suspended: what it
                                             holds; evict the layout's files (and the manifest)
                                             once; own = usage - what of the files is still
                                             resident + what the epoch held beyond (_own_memory);
                                             limit = own + SIZE; then the epochs back to back,
                                             each with residency, cgroup and hit counters; then
                                             the floor under the same cap (cappedfloor.py)
    read JSON lines from the pipe  ◄──────── {"cap": ...}, {"epoch": ...}..., {"floor": ...},
                                             {"done": true}
    remove the group (killing anything left in it), in a finally

A child killed by the group's OOM killer (or a worker of it) ends the run with one note naming
the cap and the usage; the epochs finished before stay, the run is marked not ok. Ctrl-C and
SIGTERM of the parent remove the group on the way out; SIGKILL of the parent kills the child
(PDEATHSIG), its workers see their pipes close and exit, and the next run sweeps the group.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import threading
import time
from dataclasses import replace

from generator.errors import LayoutbenchError
from loaders.pagecache import limit_advice

from bench.probe import cgroups, probes
from bench.probe.cappedfloor import capped_floor
from bench.probe.hits import HitCounter, ProbedReader
from bench.probe.regimes import COLD_MAX, CacheState, set_cache
from bench.results.result import CappedEpoch, EpochRecord, StreamFloor, _dump, _load
from bench.results.spec import RunSpec

from .epochs import Epochs, run_epochs
from .reading import open_loader, warm_up_code
from .regime import Regime

PR_SET_PDEATHSIG = 1
PRIME_EPOCH = 1 << 30  # an epoch number no run reaches: its order only primes the loader's buffers


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies, and every process it forks (the loader's
    workers) when it does: a fork worker holds both ends of its task pipe, so it would never
    see EOF and would outlive a killed run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(1)
    os.register_at_fork(after_in_child=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))


def _on_term(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the finally that removes the group


ADVICE_SHARE = 8  # a capped run's readers advise at most SIZE / 8 ahead of their reads
CACHE_SLACK = 1.1  # an epoch whose layout has more than 1.1 x its room resident (Capped.room) is marked not capped


def run_capped(ctx, spec: RunSpec, repeat: int) -> tuple[Epochs, dict]:
    """(what the epochs measured, the cap's facts) of one repeat of a capped run."""
    size = ctx.cfg.memory_limit
    group = cgroups.create()
    r, w = os.pipe()
    parent = os.getpid()
    old_term = signal.signal(signal.SIGTERM, _on_term)  # so a SIGTERM still removes the group
    pid = None
    try:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(r)
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _die_with_parent(parent)
                group.add(os.getpid())
                out = os.fdopen(w, "w", buffering=1)
                try:
                    _child(ctx, spec, repeat, size, group, out)
                    code = 0
                except LayoutbenchError as exc:
                    out.write(json.dumps({"error": str(exc)}) + "\n")
                except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
                    out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
                out.flush()
            finally:
                os._exit(code)
        os.close(w)
        records, cap, error = [], {"size": size, "version": group.version, "cgroup": str(group.path)}, None
        with os.fdopen(r, "r") as pipe:
            for line in pipe:
                msg = json.loads(line)
                if "cap" in msg:
                    cap.update(msg["cap"])
                elif "epoch" in msg:
                    rec = _load(EpochRecord, msg["epoch"], "capped epoch")
                    records.append(rec)
                    ctx.tick(spec, rec)
                elif "floor" in msg:
                    ctx.capped_floors.append(_load(StreamFloor, msg["floor"], "capped floor"))
                elif "error" in msg:
                    error = msg["error"]
        _, status = os.waitpid(pid, 0)
        pid = None
        stats = group.stats()
        oom = stats.get("oom_kills") or 0
        if oom or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            cap["failure"] = (f"the cgroup's OOM killer stopped the loader (cap {cap.get('limit', 0):,} B = own memory "
                              f"{cap.get('own_bytes', 0):,} + page cache {size:,}; peak usage "
                              f"{stats.get('peak') or 0:,} B, {oom} OOM kill(s)) after {len(records)} epoch(s)")
        elif error is not None:
            raise LayoutbenchError(error)
        elif not os.WIFEXITED(status) or os.WEXITSTATUS(status):
            raise LayoutbenchError(f"the capped {spec.name} run's process ended with status {status} and no message")
        return Epochs(tuple(records), (), cap.get("evict_method")), cap
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        group.remove()
        signal.signal(signal.SIGTERM, old_term)


def _prime(loader, rc, workers: int, group) -> tuple[object, int]:
    """An epoch of the loader run a few batches in and left suspended (the generator, to close):
    its buffers, workers, order and batches in flight exist, and the reader's handles are open, as
    in any epoch of the run, when the loader's own memory is measured. Returns it and the most
    anonymous memory (_anon) seen after any of its batches: one reading in the middle missed
    the swings of batches allocated and freed (an MNIST tar run was OOM-killed under 2.5M)."""
    n = max(1, workers) * rc.prefetch + 4
    gen = loader.epoch(PRIME_EPOCH)
    most = 0
    try:
        for k, batch in enumerate(gen):
            most = max(most, _anon(group))  # with the batch still held
            del batch
            if k + 1 >= n:
                break
    except BaseException:
        gen.close()
        raise
    return gen, max(most, _anon(group))


def _steady_malloc() -> None:
    """glibc's malloc in this process made to follow live memory, so that what is measured as the
    loader's own memory is what it uses later: at most 2 arenas (a thread's own arena keeps what
    it freed), and buffers from 128 KiB up mapped and unmapped on free (the default threshold
    rises to 32 MiB after such frees, after which freed batches stay in the heap). Nothing where
    the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
        libc.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD (fixed: no dynamic rise)
        libc.mallopt(-1, 128 << 10)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _evict(probed, paths, method, layout: str, manifest) -> CacheState:
    """Evict the layout's files once, this process's handles closed first (mapped pages cannot be
    evicted); the reader reopens them under the limit, so it chooses its readahead by that. The
    corpus's manifest.json goes too: read after the fork (about 1 MB for MNIST 60,000), its pages
    were charged to the group and counted as the loader's own, and under the limit the kernel
    reclaimed them and gave their room to the layout's pages, over SIZE."""
    probed.close()  # this process's maps and fds (workers keep theirs: subtracted in _own_memory)
    probes.evict([manifest], "fadvise")
    state = set_cache("cold", paths, method)
    if not state.ok:
        raise LayoutbenchError(f"the {layout} files could not be evicted before the capped run (residency "
                               f"{state.residency:.1%}); another process may be reading them")
    return state


def _anon(group) -> int:
    """What is charged to the group less the page cache of files: anonymous and kernel memory,
    shared memory (the batch ring)."""
    st = group.stats()
    return max(0, (st["usage"] or 0) - (st.get("file") or 0))


def _own_memory(group, epoch_anon: int, paths) -> int:
    """The loader's own memory, after the layout's files are evicted: the group's usage less what
    of the files is still resident (pages workers map), plus what an epoch in progress holds
    beyond what is left now (`epoch_anon`, measured in the middle of one: _prime). Measured only
    between epochs with the reader closed, as before, own missed what an open reader and an
    epoch hold (HDF5's tables of offsets, the epoch's order and batches in flight: about 0.7 MB
    for MNIST 60,000), which then took the page cache's room: an HDF5 MNIST run was OOM-killed
    under a 1.5 MiB cap."""
    usage = group.stats()["usage"] or 0
    return max(0, usage - probes.residency(paths).resident_bytes) + max(0, epoch_anon - _anon(group))


class OwnSampler:
    """The group's memory less the page cache of files (_anon), sampled every `period` seconds by
    a thread between start() and stop(): the loader's own memory through an epoch, which one
    reading between epochs misses (batches in flight, buffers allocated and freed)."""

    def __init__(self, group, period: float = 0.01):
        self.group, self.period = group, period
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> None:
        self.samples = [_anon(self.group)]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="capped-own-memory", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append(_anon(self.group))

    def stop(self) -> tuple[int, int, int]:
        """(least, median, most) of the samples since start()."""
        self._stop.set()
        self._thread.join()
        self.samples.append(_anon(self.group))
        ordered = sorted(self.samples)
        return ordered[0], ordered[len(ordered) // 2], ordered[-1]


class Capped(Regime):
    """The capped regime inside the child, once the limit is set: nothing is evicted between
    epochs (the cap keeps the layout's pages within SIZE); around each epoch it reads the layout's
    resident bytes, the group's counters and the hit probe's, marks an epoch not capped where the
    layout's pages went past CACHE_SLACK x its room (SIZE, and the own memory the loader left
    unused), the group's peak past the limit, the limit changed,
    the OOM killer struck, or (the run's first epoch) the cache was not cold; and adds those
    counters to the record. After each epoch, the limit is set again for the own memory that epoch
    used (`relimit`: _own_for_limit), sampled through it: the own memory measured before the
    first epoch, with the reader closed and an epoch a few batches in, is an estimate (the
    loaders held 1-1.5 MB more through steady epochs than it at an 8 MiB cap, and a timing epoch
    less). Checkpoints are not written
    inside it: their dirty pages would be charged to the group, against the page cache's cap."""

    name = "capped"
    checkpoints = False
    keeps_pages = True

    def __init__(self, storage, group, counter, size: int, limit: int, method: str | None, relimit=None):
        super().__init__(storage)
        self.group, self.counter, self.size, self.limit, self.method = group, counter, size, limit, method
        self.relimit = relimit  # called with an epoch's own memory (least, median, most): the next limit
        self.sampler = OwnSampler(group)
        self.epochs = 0

    def before(self, reader, files) -> CacheState:
        self.res0 = probes.residency(files)
        self.group.reset_peak()
        self.s0, self.h0 = self.group.stats(), self.counter.totals()
        self.sampler.start()
        return CacheState(self.res0.fraction, True, self.method)

    def after(self, files, state: CacheState) -> CacheState:
        self.own = self.sampler.stop()
        self.s1, self.h1 = self.group.stats(), self.counter.totals()
        self.res1 = probes.residency(files)
        s0, s1 = self.s0, self.s1
        # capped means capped: the layout's pages in the cache stay within SIZE and what of the own
        # memory the limit was set for the loader left unused at its median through the epoch
        # (a timing epoch, one batch out at a time, holds less), with 10 % slack
        self.epoch_room = self.room()
        ok = (self.res1.resident_bytes <= CACHE_SLACK * self.epoch_room and (s1["peak"] or 0) <= self.limit
              and self.group.limit() == self.limit
              and not ((s1["oom_kills"] or 0) - (s0["oom_kills"] or 0))
              and (self.epochs or self.res0.fraction <= COLD_MAX))
        self.epochs += 1
        if self.relimit is not None:  # the next epoch's limit, for the own memory this one used
            self.limit = self.relimit(*self.own)
        return CacheState(self.res0.fraction, ok, self.method, self.res1.fraction)

    def room(self) -> int:
        """The page cache the epoch could have: SIZE, plus the limit's own memory that the loader's
        median through the epoch left unused."""
        return self.size + max(0, self.limit - self.size - self.own[1])

    def finish(self, record):
        s0, s1, before, after = self.s0, self.s1, self.res0, self.res1
        probed_bytes, hit, miss_pages, probe_ns = (b - a for a, b in zip(self.h0, self.h1))
        payload = record.payload_bytes
        known = probed_bytes == payload and payload > 0
        fetched = payload - hit if known else None
        total = after.total_bytes
        return replace(record, capped=CappedEpoch(
            resident_bytes_before=before.resident_bytes, resident_bytes_after=after.resident_bytes,
            cgroup_cache_bytes=s1["cache"], cgroup_rss_bytes=s1["rss"], cgroup_peak_bytes=s1["peak"],
            cgroup_limit_hits=_delta(s0, s1, "limit_hits"), cgroup_oom_kills=_delta(s0, s1, "oom_kills"),
            hit_bytes=hit if known else None, miss_page_bytes=miss_pages if known else None,
            probe_s=probe_ns / 1e9 if known else None,
            hit_ratio=hit / payload if known else None,
            expected_hit_ratio=before.resident_bytes / total if total else None,
            read_amplification=record.read_bytes / fetched if known and fetched > 0 else None,
            read_amplification_pages=record.read_bytes / miss_pages if known and miss_pages > 0 else None,
            own_min_bytes=self.own[0], own_median_bytes=self.own[1], own_max_bytes=self.own[2],
            room_bytes=self.epoch_room))


def _child(ctx, spec: RunSpec, repeat: int, size: int, group, out) -> None:
    ctx.bar = None  # the parent shows progress
    ctx.gpu = None  # a CUDA context does not survive fork: capped runs have no copy stage
    _steady_malloc()
    limit_advice(size // ADVICE_SHARE)  # reads advised ahead: a small share of the cap (pagecache.limit_advice)
    rc = ctx.cfg.run
    storage = ctx.storage(spec.storage)
    reader = storage.open(spec.layout)
    paths = storage.files(reader)
    warm_up_code(reader, rc, False)
    counter = HitCounter()
    probed = ProbedReader(reader, counter)
    loader = open_loader(probed, rc, spec.workers, 0, False)
    try:
        loader.start()
        priming, epoch_anon = _prime(loader, rc, spec.workers, group)
        priming.close()
        state = _evict(probed, paths, ctx.cfg.evict, spec.name, reader.root / "manifest.json")
        own = _own_memory(group, epoch_anon, paths)
        limit = _set_limit(group, own, size, paths, ctx.cfg.evict, spec.name)
        out.write(json.dumps({"cap": {"own_bytes": own, "limit": limit, "evict_method": state.method}}) + "\n")

        def relimit(least: int, median: int, most: int) -> int:
            # own memory as the epoch just ended used it (_own_for_limit), for the next one
            now = _own_for_limit(median, most, size)
            new = _set_limit(group, now, size, paths, ctx.cfg.evict, spec.name)
            out.write(json.dumps({"cap": {"own_bytes": now, "limit": new, "own_prime_bytes": own}}) + "\n")
            return new

        regime = Capped(storage, group, counter, size, limit, state.method, relimit)

        def opener(rank, timing):
            return open_loader(probed, rc, spec.workers, rank, timing)

        def emit(record):
            out.write(json.dumps({"epoch": _dump(record)}) + "\n")

        loader, started = None, loader
        run_epochs(ctx, spec, reader, regime, repeat, opener, emit=emit, loader=started)
        # the floor under the same cap, from the state the epochs left (bench/probe/cappedfloor.py)
        floor = capped_floor(reader, paths, spec.layout, spec.workers, rc.batch_size, rc.seed + repeat)
        if floor is not None:
            out.write(json.dumps({"floor": _dump(floor)}) + "\n")
        out.write(json.dumps({"done": True}) + "\n")
    finally:
        if loader is not None:  # run_epochs closes the loader it was given; this one only if it never ran
            loader.close()
        counter.close()


def _own_for_limit(median: int, most: int, size: int) -> int:
    """The loader's own memory the next epoch's limit is set for, from an epoch's samples: their
    median, so that the page cache has SIZE when the loader holds its usual memory (less while
    it holds more, more while it holds less: Capped.room allows for that); raised to the peak
    less SIZE / 2 where the epoch swung further, so that a swing like that epoch's never leaves
    the page cache under half of SIZE, nor the loader to the OOM killer."""
    return max(median, most - size // 2)


def _set_limit(group, own: int, size: int, paths, evict: str, what: str) -> int:
    """Set the group's limit to `own` + `size`, in whole pages (the kernel keeps whole pages), and
    return it. The kernel refuses (EBUSY) a limit it cannot reclaim down to at once: the layout's
    files are evicted and it is tried again, for about 12 s at most."""
    limit = (own + size) // 4096 * 4096
    tries = 30
    for attempt in range(tries):
        try:
            group.set_limit(limit)
            return limit
        except OSError as exc:
            if attempt == tries - 1:
                raise LayoutbenchError(f"the capped {what} run could not set its cgroup's limit to {limit:,} B "
                                       f"(own memory {own:,} + {size:,}): {exc.strerror}") from None
            set_cache("cold", paths, evict)
            time.sleep(min(0.5, 0.05 * (attempt + 1)))
    return limit


def _delta(a: dict, b: dict, key: str) -> int | None:
    if a.get(key) is None or b.get(key) is None:
        return None
    return b[key] - a[key]


def capped_notes(run, corpus: str) -> list[str]:
    """Notes for a capped run that was not capped, hit OOM, or read more than it needed."""
    notes = []
    what = f"{corpus} {run.layout} capped w{run.config.workers}"
    cap = run.cap or {}
    if cap.get("failure"):
        notes.append(f"{what}: {cap['failure']}; the run is marked not ok")
    bad = [e.capped for e in run.epochs if not e.cache_ok and e.capped is not None and not e.cache_drops]
    if bad:
        worst = max(bad, key=lambda c: c.resident_bytes_after)
        notes.append(f"{what}: {len(bad)} of {len(run.epochs)} epochs were not capped (cap {cap.get('limit', 0):,} B; "
                     f"the layout's resident bytes reached {worst.resident_bytes_after:,}, the group's peak "
                     f"{worst.cgroup_peak_bytes or 0:,} B); the run is marked not ok")
    return notes

"""A corpus under an S3 prefix as a run's Storage (bench.run.storage): readers over S3
(loaders.s3), and the cache states made and checked where they can be.

Which page cache: the server's. For the bundled server running on this host (SeaweedFS's weed,
generator.objectstore.server) the bytes behind every GET are its data directory's files; cold is
those files evicted from this kernel's page cache (and checked: their residency, and the device's
reads during the epoch, as on local disk), warm is them read in and resident. The data directory
is found from the endpoint (the weed process serving that port names its -dir=, whose server
record names the same endpoint), or given (--s3-data-dir). A store elsewhere (AWS S3, a remote
MinIO) has a cache this host can neither evict nor see: cold runs are refused in one line; warm
is one pass of GETs over every sample before the run's first epoch (what this client can do to
warm a store), and its residency is that of this client's reads (1.0 once that pass fetched
every sample), not the store's, which no client can see.

Per epoch the store's own counters (GETs, bytes, retries, time to first byte) are taken between
settle() (just before the epoch) and epoch_requests() (just after it): bench.run.runner puts
them in the record's `s3` part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from generator.errors import UsageError

from bench.probe import probes
from bench.probe.regimes import CacheState, set_cache

from loaders.s3.server import bundled_data_dir, server_files

from .storage import Storage


@dataclass(frozen=True)
class S3Files:
    """What a cache state is made and checked on: the server's files (None: a remote store), and
    the reader whose samples a remote warm-up fetches."""

    server: tuple[Path, ...] | None
    reader: object


class S3Storage(Storage):
    """A corpus at s3://bucket/prefix, read through one counted Store shared by the command's readers."""

    name = "s3"

    def __init__(self, corpus, evict: str, data_dir=None):
        from generator.objectstore.store import Store
        from loaders.s3 import read_s3_manifest

        self.corpus, self.evict = str(corpus), evict
        self.store = Store(self.corpus)
        self.manifest = read_s3_manifest(self.corpus, self.store)
        given = data_dir is not None
        self.data_dir = Path(data_dir).resolve() if given else bundled_data_dir(self.store.config.endpoint)
        if given and not self.data_dir.is_dir():
            raise UsageError(f"--s3-data-dir {data_dir}: no such directory (the bundled server's --dir)")
        self.supports_eviction = self.data_dir is not None
        self._mark = None
        self._reader = None  # the reader of the epoch being measured (its staging, if any)
        self._primed: set[str] = set()

    def open(self, layout: str):
        from loaders.s3 import open_s3_corpus

        return open_s3_corpus(self.corpus, layout, store=self.store, manifest=self.manifest)

    def files(self, reader) -> S3Files:
        return S3Files(tuple(server_files(self.data_dir)) if self.data_dir is not None else None, reader)

    def settle(self, regime: str, files: S3Files) -> CacheState:
        if files.server is not None:
            state = set_cache(regime, list(files.server), self.evict)
        elif regime == "cold":
            raise UsageError(cold_refusal(self.corpus, self.store.config.where))
        else:
            if regime == "warm" and files.reader.layout not in self._primed:
                prime(files.reader)
                self._primed.add(files.reader.layout)
            state = CacheState(self.residency(files), True, None)
        self._mark = self.store.stats()  # the epoch's requests count from here
        self._reader = files.reader
        return state

    def residency(self, files: S3Files) -> float:
        if files.server is not None:
            return probes.residency(list(files.server)).fraction
        return 1.0 if files.reader.layout in self._primed else 0.0

    def epoch_requests(self):
        """The store's requests since the last settle() (generator.objectstore.store.RequestStats)."""
        if self._mark is None:
            return None
        return self.store.stats() - self._mark

    def cold_advice(self) -> str | None:
        if self.data_dir is None:
            return None
        return (f"the S3 server's files ({self.data_dir}) were evicted before each cold epoch; an epoch whose "
                f"device read less than its payload was served by a cache mincore cannot see (the server's own)")




def cold_refusal(corpus, where) -> str:
    return (f"--cache cold with --corpus {corpus}: the store at {where} is not the bundled server running on this "
            f"host, so nothing can be evicted from its cache nor checked; use --cache warm or asis, or give "
            f"--s3-data-dir DIR where the bundled server's data directory is on this host")


def prime(reader) -> None:
    """One pass of GETs over every sample of `reader` (a remote warm-up), a batch at a time."""
    import numpy as np

    n = len(reader)
    for a in range(0, n, 256):
        reader.read_many(np.arange(a, min(n, a + 256)))
    reader.close()


def s3_part(got: list[dict]):
    """The ranks' S3 requests of one epoch (bench.results.result.S3Epoch); None without them."""
    from bench.results.result import S3Epoch

    parts = [g["s3"] for g in got if g.get("s3") is not None]
    if not parts:
        return None
    ttfb = sorted(t for p in parts for t in p["ttfb"])

    def q(x):
        return ttfb[min(len(ttfb) - 1, int(x * len(ttfb)))] if ttfb else None

    return S3Epoch(gets=sum(p["gets"] for p in parts), get_bytes=sum(p["get_bytes"] for p in parts),
                   retries=sum(p["retries"] for p in parts), heads=sum(p["heads"] for p in parts),
                   lists=sum(p["lists"] for p in parts), ttfb_p50_s=q(0.5), ttfb_p99_s=q(0.99),
                   inflight=max(p["inflight"] for p in parts),
                   staged_bytes=sum(p.get("staged_bytes", 0) for p in parts),
                   staged_s=max((p["staged_s"] for p in parts if p.get("staged_s") is not None), default=None))


def s3_message(storage) -> dict | None:
    """This rank's S3 requests of the epoch just read, as a gather message part (None: not an S3 run)."""
    if storage is None:
        return None
    stats = storage.epoch_requests()
    if stats is None:
        return None
    from loaders.s3.base import INFLIGHT

    staging = getattr(storage._reader, "staging", None)  # a staged layout (loaders.s3.staged)
    return {"gets": stats.gets, "get_bytes": stats.get_bytes, "retries": stats.retries, "heads": stats.heads,
            "lists": stats.lists, "ttfb": list(stats.ttfb), "inflight": INFLIGHT,
            "staged_bytes": staging["bytes"] if staging else 0, "staged_s": staging["seconds"] if staging else None}


def s3_layouts(corpus, names, out=None) -> list[str]:
    """Of the corpus's layouts `names`, those read over S3; each other one left out with a line on `out`."""
    from loaders.s3 import refusal, supported_layouts

    keep = []
    for name in names:
        why = refusal(name, corpus)
        if why is None:
            keep.append(name)
        elif out is not None:
            print(f"note: {why}; left out", file=out)
    if not keep:
        raise UsageError(f"no layout of the corpus {corpus} ({', '.join(names) or 'none'}) is read over S3: "
                         f"layoutbench reads {', '.join(supported_layouts())}")
    return keep


def staging_notes(runs, corpus: str) -> list[str]:
    """A note for each S3 run of a staged layout (lmdb, sqlite: downloaded, then read locally):
    its figures are local reads, the staging's cost is said beside them."""
    notes = []
    for r in runs:
        staged = [e.s3 for e in r.epochs if e.s3 is not None and e.s3.staged_s is not None]
        if staged:
            notes.append(f"{corpus} {r.layout} {r.cache} w{r.config.workers}: staged (its library needs a local "
                         f"file): {staged[0].staged_bytes:,} bytes downloaded in {staged[0].staged_s:.2f} s before "
                         f"the run, then read locally; its samples/s do not include the staging")
    return notes


def retry_notes(runs, corpus: str) -> list[str]:
    """A note for each S3 run whose epochs needed retries (throttling, dropped connections): its
    figures include the backoff, so it is said, never hidden."""
    notes = []
    for r in runs:
        retried = [e for e in r.epochs if e.s3 is not None and e.s3.retries]
        if retried:
            notes.append(f"{corpus} {r.layout} {r.cache} w{r.config.workers}: the store's requests needed "
                         f"{sum(e.s3.retries for e in retried):,} retries in {len(retried)} of {len(r.epochs)} "
                         f"epochs (throttling or dropped connections); their figures include the backoff")
    return notes

"""Where a corpus's bytes are, seen from a run: how a reader opens them, which files hold them, and
how a cache state is made and checked on them. The regimes (bench.run.regime) and the epoch loop
(bench.run.epochs) go through a Storage only: LocalStorage here, S3Storage (a corpus under an S3
prefix) in bench.run.s3storage; bench.run.storages registers them by name.

    Storage.open(layout)           -> a loaders Reader over that layout's bytes
    Storage.files(reader)          -> the files a cache state is made and checked on (any object
                                      settle and residency understand: they alone use it)
    Storage.settle(regime, files)  -> CacheState: evicted (cold), resident (warm) or left (asis), checked
    Storage.residency(files)       -> the fraction of those bytes in the page cache now
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from bench.probe import probes
from bench.probe.regimes import CacheState, cold_advice, set_cache


class Storage(ABC):
    """A corpus's storage, for one command's runs."""

    name: str
    supports_eviction: bool  # a cold state can be made (and checked) from this host

    def __init__(self, corpus: Path, evict: str):
        self.corpus, self.evict = Path(corpus), evict

    @abstractmethod
    def open(self, layout: str):
        """A Reader of `layout` (loaders.base.Reader), its handles not yet open."""

    @abstractmethod
    def files(self, reader) -> list[Path]:
        """The files whose cache state a regime makes and checks for `reader`'s runs."""

    @abstractmethod
    def settle(self, regime: str, files) -> CacheState:
        """Put `files` in the cache state `regime` asks for (every handle already closed) and check it."""

    @abstractmethod
    def residency(self, files) -> float:
        """The fraction of `files`' bytes in the page cache now."""

    def cold_advice(self) -> str | None:
        """What to do where cold runs were not cold for a reason of this storage's (None: no advice)."""
        return None


class LocalStorage(Storage):
    """A corpus directory on a filesystem of this host; its page cache is this kernel's (on a
    loop-mounted image, the image file's pages too: bench.probe.regimes.cold_image)."""

    name = "local"
    supports_eviction = True

    def open(self, layout: str):
        from loaders import open_corpus

        return open_corpus(self.corpus, layout)

    def files(self, reader) -> list[Path]:
        return reader.paths()

    def settle(self, regime: str, files) -> CacheState:
        return set_cache(regime, files, self.evict)

    def residency(self, files) -> float:
        return probes.residency(files).fraction

    def cold_advice(self) -> str | None:
        return cold_advice(self.corpus)

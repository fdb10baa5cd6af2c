"""A run's identity: which layout's files, read by which loader, from which storage, under which
cache regime, with how many workers, decoded or not. One frozen RunSpec per run; its name (the
results' `Run.layout`, the report's row label) is derived from it, never parsed back.

    RunSpec("lmdb")                                  -> "lmdb"            (our Loader)
    RunSpec("lmdb", loader="naive")                  -> "naive-lmdb"      (plain library calls)
    RunSpec("lmdb", loader="torch-batch")            -> "torch-batch-lmdb"  (torch's DataLoader)
"""

from __future__ import annotations

from dataclasses import dataclass

# Who reads: our Loader, a naive baseline (Reader.naive_batch in the calling thread), torch's
# DataLoader over a map-style dataset of one sample (TorchDataset) or one batch (BatchDataset) per
# item, or the layout's own ecosystem loader (the library its users read it with, run as its docs
# recommend). The value is the results' Run.kind.
LOADER_KINDS = {"ours": "loader", "naive": "naive", "torch-sample": "torch", "torch-batch": "torch",
                "ecosystem": "ecosystem"}
# --loader: which loaders run for each layout, in the order they run
LOADER_OPTIONS = {"ours": ("ours",), "torch": ("torch-sample", "torch-batch"),
                  "both": ("ours", "torch-sample", "torch-batch"), "ecosystem": ("ecosystem",),
                  "all": ("ours", "torch-sample", "torch-batch", "ecosystem")}
TORCH_DATASETS = ("sample", "batch")
STORAGES = ("local", "s3")  # where a corpus's bytes are (bench.run.storage)
REGIMES = ("cold", "warm", "asis", "capped")  # the cache settings `bench run --cache` takes


@dataclass(frozen=True)
class RunSpec:
    """One run of `bench run`: everything that tells it apart from the command's other runs."""

    layout: str  # the layout whose files it reads (its floors)
    loader: str = "ours"  # a key of LOADER_KINDS
    storage: str = "local"
    regime: str = "cold"
    workers: int = 0
    decode: bool = True  # False: payload bytes only (our Loader; naive and DataLoader runs always decode)

    def __post_init__(self):
        if self.loader not in LOADER_KINDS:
            raise ValueError(f"unknown loader {self.loader!r}; one of {', '.join(LOADER_KINDS)}")
        if self.storage not in STORAGES:
            raise ValueError(f"unknown storage {self.storage!r}; one of {', '.join(STORAGES)}")
        if self.regime not in REGIMES:
            raise ValueError(f"unknown cache regime {self.regime!r}; one of {', '.join(REGIMES)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not self.decode and self.loader != "ours":
            raise ValueError(f"a {self.loader} run always decodes")
        if self.loader == "naive" and self.workers:
            raise ValueError("a naive baseline reads in the calling thread: 0 workers")

    @property
    def name(self) -> str:
        """The run's label: the layout for our Loader, else `<loader>-<layout>`."""
        return self.layout if self.loader == "ours" else f"{self.loader}-{self.layout}"

    @property
    def kind(self) -> str:
        """The results' Run.kind: loader (ours), naive, or torch."""
        return LOADER_KINDS[self.loader]

    @property
    def naive(self) -> bool:
        return self.loader == "naive"

    @property
    def torch_dataset(self) -> str | None:
        """A DataLoader run's dataset ("sample" or "batch"); None for any other run."""
        return self.loader[len("torch-"):] if self.kind == "torch" else None

    @property
    def setting(self) -> tuple:
        """What runs measured at one setting share (every layout and loader of it back to back)."""
        return (self.storage, self.regime, self.workers, self.decode)


def loaders_for(option: str) -> tuple[str, ...]:
    """The loaders `--loader OPTION` runs for each layout, in the order they run."""
    return LOADER_OPTIONS[option]


def naive_name(layout: str) -> str:
    """The name of `layout`'s naive baseline."""
    return RunSpec(layout, loader="naive").name

"""`--loader ecosystem|all`: each layout read by the library its users read it with
(loaders/ecosystem), through torch's DataLoader with workers, timed by the same epoch loop as ours.

An ecosystem run is a RunSpec with loader "ecosystem" (kind "ecosystem", name ecosystem-<layout>),
reading its layout's files (its floor). Its contender is made once per repeat (open_source: what
its users' code builds once per training, such as ImageFolder's listing of the tree) and its
DataLoader opened by the epoch loop's opener (workers persist across epochs where the library's
docs advise it; the cold regime opens a new one each epoch, as it does ours). The run's settings
name the library, its version and the decoder. A layout whose contender's library is missing here
is left out of the ecosystem runs with one line naming what installs it (`leave_out`); when that
leaves nothing to run, the command stops there, in one line.
"""

from __future__ import annotations

import sys

from generator.errors import UsageError

ASKS = ("ecosystem", "all")  # the --loader options that run the ecosystem's loaders


def leave_out(cfg, out=sys.stderr) -> set[str]:
    """Before anything is read: import each of cfg.layouts' contenders (a cold epoch must not read
    their code as sample bytes) and return the layouts whose contender cannot run here (its library
    is missing, or it cannot read this corpus: Source.refusal), each said in one line on `out`
    (None: not said, on ranks other than 0). A UsageError when the command asked for ecosystem
    runs only and none can run."""
    if cfg.loader not in ASKS:
        return set()
    from generator.manifest import read_manifest
    from loaders.ecosystem import contender, why_not

    manifest = read_manifest(cfg.corpus)
    missing = {}
    for layout in cfg.layouts:
        why = why_not(layout, manifest)
        if why is None:
            contender(layout).preload()
        else:
            missing[layout] = why
    if cfg.loader == "ecosystem" and missing and len(missing) == len(cfg.layouts):
        raise UsageError(next(iter(missing.values())) if len(missing) == 1 else
                         f"--loader ecosystem: no layout's ecosystem loader can run here "
                         f"({'; '.join(missing.values())})")
    for why in missing.values() if out is not None else ():
        print(f"note: {why}; its ecosystem run is left out", file=out)
    return set(missing)


def open_source(reader, rc, pin_memory: bool = False):
    """The contender of `reader`'s layout over its corpus, with the run's settings (batch size,
    order, seed, prefetch, ranks, worker kind)."""
    from loaders.ecosystem import open_contender

    return open_contender(reader, rc.batch_size, shuffle=rc.shuffle, seed=rc.seed, prefetch=rc.prefetch,
                          drop_last=rc.drop_last, world=rc.world, worker_kind=rc.worker_kind, pin_memory=pin_memory)

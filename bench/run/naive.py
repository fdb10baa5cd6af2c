"""Naive baselines: what plain library calls give (Reader.naive_batch), run by the Loader as its
`naive` fetch in the calling thread. A baseline's run is named naive-<layout> and reads that
layout's files (its floor)."""

from __future__ import annotations

NAIVE_PREFIX = "naive-"


def naive_name(layout: str) -> str:
    return NAIVE_PREFIX + layout


def reads_of(run_layout: str, naive: bool) -> str:
    """The layout whose files a run reads: a naive baseline reads its layout's."""
    return run_layout[len(NAIVE_PREFIX):] if naive else run_layout

"""Two results files side by side: B over A for every run both measured.

Runs are matched by (corpus, layout, cache, workers, decoded or not). A ratio means something only when both
runs read the same corpus the same way, so runs whose corpus spec or run config differ are
refused, naming the difference, unless --force."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from generator.errors import UsageError

from bench.results.result import Results, summarize

from .analysis import corpus_name, fmt
from .markdown import table


def _key(res: Results, run) -> tuple:
    return (corpus_name(res), run.layout if run.config.decode or run.kind == "naive" else f"{run.layout} (bytes only)",
            run.cache, run.config.workers)


def differences(a: Results, ra, b: Results, rb) -> list[str]:
    """What differs between two matched runs, beyond the numbers."""
    out = []
    sa, sb = dict(a.corpus.get("spec", {})), dict(b.corpus.get("spec", {}))
    for k in sorted(set(sa) | set(sb)):
        if sa.get(k) != sb.get(k) and k != "preset":
            out.append(f"corpus {k} {sa.get(k)!r} vs {sb.get(k)!r}")
    ca, cb = dataclasses.asdict(ra.config), dataclasses.asdict(rb.config)
    out += [f"{k} {ca[k]!r} vs {cb[k]!r}" for k in ca if ca[k] != cb.get(k)]
    return out


def compare(path_a: Path, path_b: Path, force: bool = False) -> str:
    a, b = Results.load(path_a), Results.load(path_b)
    runs_b = {_key(b, r): r for r in b.runs}
    pairs = [(ra, runs_b[_key(a, ra)]) for ra in a.runs if _key(a, ra) in runs_b]
    if not pairs:
        raise UsageError(f"{path_a} and {path_b} have no run in common (matched by corpus, layout, cache and "
                         f"workers); nothing to compare")
    notes = []
    for ra, rb in pairs:
        diff = differences(a, ra, b, rb)
        if diff:
            what = f"{ra.layout} {ra.cache} w{ra.config.workers}: " + ", ".join(diff)
            if not force:
                raise UsageError(f"the configs differ ({what}); ratios would mix two questions: rerun with the same "
                                 f"settings, or pass --force to compare anyway")
            notes.append(f"forced: {what}")
    body = []
    for ra, rb in pairs:
        sa, sb = summarize(ra, a.floors, a.corpus), summarize(rb, b.floors, b.corpus)

        def ratio(key):
            return fmt(sb[key] / sa[key] if sa[key] and sb[key] is not None else None, ".2f")

        body.append([corpus_name(a), _key(a, ra)[1], ra.cache, str(ra.config.workers),
                     fmt(sa["samples_per_s"]), fmt(sb["samples_per_s"]), ratio("samples_per_s"),
                     fmt(sa["p99_ms"], ",.2f"), fmt(sb["p99_ms"], ",.2f"), ratio("p99_ms"),
                     fmt(sa["floor_ratio"], ".2f"), fmt(sb["floor_ratio"], ".2f")])
    header = ["corpus", "layout", "cache", "workers", "A samples/s", "B samples/s", "B/A",
              "A p99 ms", "B p99 ms", "B/A p99", "A x floor", "B x floor"]
    only = [f"only in A: {' '.join(map(str, _key(a, r)))}" for r in a.runs if _key(a, r) not in runs_b]
    only += [f"only in B: {' '.join(map(str, k))}" for k in runs_b if k not in {_key(a, r) for r in a.runs}]
    hosts = f"A = {path_a} ({a.metadata.get('host', {}).get('name')}), B = {path_b} ({b.metadata.get('host', {}).get('name')})"
    return "\n".join([hosts, table(header, body), *notes, *only])

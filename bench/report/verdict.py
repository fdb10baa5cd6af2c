"""The report's judgements: the Answer (layouts ranked per corpus and regime, within noise, the
compute each needs for AU >= 90 %), what bounded each corpus's runs (read or decode:
bench.results.result.SPLIT_RULE), and fio beside our floors.
"""

from __future__ import annotations

from bench.results import au as au_model
from bench.results.result import Results

from .analysis import FIO_SLACK, REGIMES, best_runs, noise_range, rows


def fmt_ms(seconds) -> str:
    if seconds is None:
        return "n/a"
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms < 100 else f"{ms:,.0f} ms"


def answer(results: list[Results]) -> list[str]:
    """The report's first lines: per corpus and regime, the layouts ranked (best worker setting of
    each loader run), each as a ratio to the best, "within noise" where its range overlaps the
    best's, then the compute per batch each needs for AU >= 90 % (predicted from its batch
    arrivals; measured AU where the run emulated compute). Regimes not measured are said so."""
    all_rows = rows(results)
    loader_rows = [r for r in all_rows if r["kind"] == "loader" and r["mb_per_s"]]
    lines = []
    for corpus in dict.fromkeys(r["corpus"] for r in loader_rows):
        mine = [r for r in loader_rows if r["corpus"] == corpus]
        present = {r["cache"] for r in mine}
        views = [d for d in (True, False) if any(r["decode"] == d for r in mine)]
        # decoded runs: every regime, cold and warm always named; payload-bytes runs: those measured
        plan = [(d, c) for d in views for c in REGIMES
                if (c in present and any(r["cache"] == c and r["decode"] == d for r in mine))
                or (d == views[0] and c in ("cold", "warm"))]
        for decoded, regime in plan:
            label = f"{corpus} {regime}" + ("" if decoded else " (payload bytes only)")
            best = sorted(best_runs([r for r in mine if r["cache"] == regime], corpus, decoded).values(),
                          key=lambda r: -r["mb_per_s"])
            if not best:
                lines.append(f"{label}: not measured")
                continue
            top = best[0]
            lo_top = noise_range(top)[0]
            ranked = []
            for r in best:
                tag = " within noise" if r is not top and noise_range(r)[1] >= lo_top else ""
                flag = " (cache not held)" if not r["cache_ok"] else ""
                ranked.append(f"{r['layout']} {r['mb_per_s'] / top['mb_per_s']:.2f}{tag}{flag}")
            needs = []
            for r in best:
                if r["au"] is not None:
                    needs.append(f"{r['layout']} AU {r['au']:.0%} measured at {r['compute_ms']:.3g} ms"
                                 + ("" if r["au"] >= au_model.AU_TARGET else " (under 90 %)"))
                else:
                    needs.append(f"{r['layout']} {fmt_ms(au_model.min_compute(r['_run']))}")
            lines.append(f"{label}: {' > '.join(ranked)} (x the best: {top['layout']}, "
                         f"{top['samples_per_s']:,.0f} samples/s, {top['mb_per_s']:,.1f} MB/s, {top['workers']} "
                         f"{top['worker_kind']} workers); AU >= 90 % needs per batch of {top['batch_size']}: "
                         + ", ".join(needs))
        if (line := bound_line(corpus, [r for r in all_rows if r["corpus"] == corpus])) is not None:
            lines.append(line)
    return lines


BOUND_WORDS = {"decode": "decode-bound", "io": "I/O-bound", "mixed": "mixed (read and decode within 2x)"}


def _ms_range(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"{lo:.3g} to {hi:.3g}"


def _rate_range(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,.0f}" if f"{lo:,.0f}" == f"{hi:,.0f}" else f"{lo:,.0f} to {hi:,.0f}"


def _bound_clause(runs: list[dict]) -> str:
    """What bounded these runs (decoded, split measured): one verdict if they agree, else each's."""
    kinds = {r["bound_by"] for r in runs}
    name = {id(r): r["layout"] + ("" if r["cache_ok"] else " (cache not held)") for r in runs}
    layouts = ", ".join(dict.fromkeys(name[id(r)] for r in runs))
    read, decode = [r["read_ms_per_sample"] for r in runs], [r["decode_ms_per_sample"] for r in runs]
    figures = f"decode {_ms_range(decode)} ms/sample vs read {_ms_range(read)} ms"
    if len(kinds) > 1:  # each layout with its own figures
        by = {k: ", ".join(f"{name[id(r)]} (read {r['read_ms_per_sample']:.3g}, decode {r['decode_ms_per_sample']:.3g} "
                           f"ms/sample)" for r in runs if r["bound_by"] == k) for k in kinds}
        return "bound differently by layout: " + "; ".join(f"{BOUND_WORDS[k]} {by[k]}" for k in ("decode", "mixed", "io")
                                                           if k in by)
    kind = kinds.pop()
    share = max(r["read_ms_per_sample"] / (r["read_ms_per_sample"] + r["decode_ms_per_sample"]) for r in runs)
    tail = {"decode": f"; the layout matters little here (it changes the read, at most {share:.0%} of a sample's time)",
            "io": f"; the layout is what matters here (the read is up to {share:.0%} of a sample's time)",
            "mixed": ""}[kind]
    where = f"in every layout ({layouts})" if "," in layouts else f"in {layouts}"
    return f"{BOUND_WORDS[kind]} {where}: {figures}{tail}"


def bound_line(corpus: str, corpus_rows: list[dict]) -> str | None:
    """The Answer's line on what bounded a corpus's decoded loader runs (bench.results.result.SPLIT_RULE):
    each layout's best worker setting (as the ranking), one clause if every regime agrees, else one
    per regime; then the payload-bytes runs' samples/s beside the decoded ones'. None when no run of
    the corpus had a timing epoch."""
    loaders = [r for r in corpus_rows if r["kind"] == "loader"]
    if not any(r["timed"] for r in loaders):
        return None
    codec = corpus_rows[0]["codec"]
    head = corpus if corpus.endswith(codec.replace(" ", "-")) else f"{corpus} ({codec})"  # the codec named once
    split = [r for r in loaders if r["bound_by"] is not None]
    raw = [r for r in loaders if not r["decode"] and r["split_samples"]]
    if not split:
        if raw:
            return (f"{head}: payload bytes only, not decoded: read {_ms_range([r['read_ms_per_sample'] for r in raw])} "
                    f"ms/sample; no decode to compare it with (run with --decode both)")
        return f"{head}: read/decode split not measured (results written before version 2)"
    # as the ranking above it: each layout's best worker setting, per regime
    by_regime = {c: list(best_runs([r for r in split if r["cache"] == c], corpus, True).values())
                 for c in REGIMES if any(r["cache"] == c for r in split)}
    verdicts = {c: {r["bound_by"] for r in rs} for c, rs in by_regime.items()}
    if len({frozenset(v) for v in verdicts.values()}) == 1 and len(next(iter(verdicts.values()))) == 1:
        text = f"{', '.join(by_regime)}: {_bound_clause([r for rs in by_regime.values() for r in rs])}"  # alike
    else:
        text = "; ".join(f"{c}: {_bound_clause(rs)}" for c, rs in by_regime.items())
    raw_best = [r["samples_per_s"] for r in best_runs(raw, corpus, False).values()]
    if raw_best:
        dec = [r["samples_per_s"] for r in best_runs(loaders, corpus, True).values()]
        text += (f"; payload bytes only: {_rate_range(raw_best)} samples/s" + (f" vs {_rate_range(dec)} decoded"
                                                                                if dec else ""))
    return f"{head}: {text}"


def fio_lines(res: Results) -> list[str]:
    """fio beside our fastest random-read floor (`rand`, or cold `rand-advise`: random reads too, a
    batch advised at once, as fio's iodepth keeps a batch in flight) of the same layout, cache and
    concurrency, flagged past FIO_SLACK."""
    out = []
    for x in res.floors.fio:
        ours = max((f for f in res.floors.at if (f.layout, f.cache, f.streams) == (x.layout, x.cache, x.jobs)
                    and f.way in ("rand", "rand-advise")), key=lambda f: f.mb_per_s, default=None)
        if ours is None:
            continue
        rel = x.mb_per_s / ours.mb_per_s - 1 if ours.mb_per_s else None
        verdict = ("" if rel is None or abs(rel) <= FIO_SLACK else
                   f": DIFFER by {rel:+.0%} (more than {FIO_SLACK:.0%}; " +
                   ("our floor is too low" if rel > 0 else "fio is slower: see its engine and block size") + ")")
        out.append(f"{x.layout} {x.cache} {x.jobs} jobs x iodepth {x.iodepth} ({x.engine}, bs {x.block_bytes:,}): "
                   f"{x.iops:,.0f} IOPS, {x.mb_per_s:,.1f} MB/s; ours ({ours.way} {ours.streams}x{ours.depth}) "
                   f"{ours.reads / ours.seconds if ours.seconds else 0:,.0f} reads/s, {ours.mb_per_s:,.1f} MB/s"
                   + (f" ({rel:+.0%})" if rel is not None else "") + verdict)
    return out

"""The report's judgements: the verdict (verdict(): per corpus, by sample size and codec, and per
regime, the layouts within noise of the best, loose files' ratio to it and what bounded the best
run; where ecosystem runs were measured, the layouts ranked as their own libraries read them and
the gain from changing the loader beside the gain from changing the layout; with sentences
generated from those figures and the runs not ok named), the Answer (layouts
ranked per corpus and regime, within noise, the compute each needs for AU >= 90 %), what bounded
each corpus's runs (read or decode: bench.results.result.SPLIT_RULE), and fio beside our floors.
"""

from __future__ import annotations

from dataclasses import dataclass

from loaders.stages import BOUND_RATIO

from bench.probe.regimes import COLD_MAX, WARM_MIN
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


# ---------------------------------------------------------------------------------------------
# The verdict: what report.md and the console open with. A table (corpora by sample size and
# codec x regimes) and sentences generated from it.

VERDICT_REGIMES = {"cold": "cold", "capped": "larger than memory", "warm": "warm", "asis": "as is"}
NEAR_FLOOR = 0.5  # the best run at or above this x its floor: storage (I/O) bounds the cell, else the loader
AVOID = 0.5  # a layout under this ratio to the best in every regime of a corpus: avoid it at that size
MATTERS_LITTLE = 0.8  # decode-bound cells whose layouts all reach this ratio: the layout does not matter
FILES = "files"  # one file per sample: the layout the penalty is stated for
BOUND_NAMES = {"io": "I/O-bound", "decode": "decode-bound", "loader": "loader-bound",
               "mixed": f"read and decode within {BOUND_RATIO:g}x"}


def run_ok(r: dict) -> bool:
    """A run the verdict may use: its cache state held (cap included) and every index was read once."""
    return bool(r["cache_ok"] and r["_summary"]["indices_ok"])


def not_ok_reason(r: dict) -> str:
    """Why a run is not ok, in a few words from its own figures."""
    failure = (r["_run"].cap or {}).get("failure")
    if failure:
        return f"the cap failed ({failure})"
    if not r["_summary"]["indices_ok"]:
        return "an index was not read exactly once"
    epochs = [e for e in r["_run"].epochs if not e.timing]
    lost = sum(not e.cache_ok for e in epochs)
    dropped = sum(bool(e.cache_drops) and not e.cache_ok for e in epochs)
    if dropped:  # bench.probe.drops: the kernel counted another process's drop of the page cache
        return f"cache dropped by another process during {dropped} of {len(epochs)} epochs"
    if r["cache"] == "capped":
        return f"the cap did not hold in {lost} of {len(epochs)} epochs (see the report's Notes)"
    if r["cache"] == "cold" and r["residency_max"] is not None:
        return (f"cache not held (up to {r['residency_max']:.0%} resident before an epoch; cold allows "
                f"{COLD_MAX:.0%})")
    if r["cache"] == "warm" and r["residency_min"] is not None:
        return f"cache not held (down to {r['residency_min']:.0%} resident; warm needs {WARM_MIN:.0%})"
    return "cache not held"


def size_label(n: float) -> str:
    """784 B, 150 KB, 24.9 MB (decimal units, 3 significant digits)."""
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


@dataclass(frozen=True)
class Cell:
    """One corpus in one regime: each layout's best ok run as a ratio to the best (MB/s), the
    layouts within noise of the best (recommended, best first; a layout whose best run did not
    fully shuffle is named with its order), loose files' ratio (None where not measured or not ok),
    what bounded the best run (BOUND_NAMES key, None where unknown), and the layouts whose runs
    were not ok (left out)."""

    corpus: str
    regime: str
    ratios: dict  # layout -> MB/s over the best's, best first
    recommended: tuple[str, ...]
    bound: str | None
    excluded: tuple[str, ...]
    bytes_only: bool  # ranked on payload-bytes runs: the cell had no decoded run
    top: dict | None  # the best run's row
    orders: dict | None = None  # layout -> its best run's epoch order, where not a full shuffle
    ecosystem: "Ecosystem | None" = None  # the same cell read by each layout's own library (None: no such run)

    @property
    def files_ratio(self) -> float | None:
        return self.ratios.get(FILES)

    @property
    def measured(self) -> bool:
        return bool(self.ratios or self.excluded)


@dataclass(frozen=True)
class Ecosystem:
    """One corpus in one regime as each layout's own library reads it (ecosystem runs, kind
    "ecosystem"): each layout's best ok run as a ratio to the best (MB/s), best first, those within
    noise of the best, the layouts whose ecosystem runs were not ok (left out); and the two effects
    beside our loader's decoded runs of the same cell: per layout, ours MB/s over its library's (the
    loader's effect), and within each loader kind, the best layout's MB/s over the worst's among
    the layouts both read ok (the layout's effect; None with fewer than two)."""

    ratios: dict  # layout (the one it reads) -> MB/s over the best ecosystem run's, best first
    recommended: tuple[str, ...]
    excluded: tuple[str, ...]
    libraries: dict  # layout -> the library that read it, as its run recorded it
    loader_gain: dict  # layout -> our loader's MB/s over its own library's (both ok), largest first
    layout_gain_ours: float | None  # best over worst of loader_gain's layouts, with our loader
    layout_gain_theirs: float | None  # the same layouts, each with its own library

    @property
    def effect(self) -> str | None:
        """Which change sets most of the number: "loader" where every layout's loader gain exceeds
        both layout gains, "layout" where both layout gains exceed every loader gain, "neither"
        between; None where the layout's gain is not measured."""
        if self.layout_gain_ours is None or not self.loader_gain:
            return None
        layout = (self.layout_gain_ours, self.layout_gain_theirs)
        if min(self.loader_gain.values()) > max(layout):
            return "loader"
        if max(self.loader_gain.values()) < min(layout):
            return "layout"
        return "neither"


@dataclass(frozen=True)
class CorpusRow:
    corpus: str
    sample_bytes: float
    codec: str
    cells: dict  # regime -> Cell

    @property
    def label(self) -> str:
        return f"{self.corpus} ({size_label(self.sample_bytes)} {self.codec})"


@dataclass(frozen=True)
class Verdict:
    regimes: tuple[str, ...]  # the columns: cold, capped (if any corpus has it), warm, asis (if any)
    rows: tuple[CorpusRow, ...]  # by sample size
    sentences: tuple[str, ...]
    not_ok: tuple[str, ...]  # one line per run not ok

    def cells(self) -> list[Cell]:
        return [c for row in self.rows for c in row.cells.values() if c.measured]


def _bound(top: dict) -> str | None:
    """What bounded a cell's best run: decode where its split says so; else I/O when it reached
    NEAR_FLOOR x its floor, the loader below it; without a floor, the split's read or mixed."""
    if top["bound_by"] == "decode":
        return "decode"
    if top["floor_ratio"] is not None:
        return "io" if top["floor_ratio"] >= NEAR_FLOOR else "loader"
    return top["bound_by"]


def _best_ok(view: list[dict], key) -> dict[str, dict]:
    """Per key (a layout), the ok run with the highest MB/s."""
    best: dict[str, dict] = {}
    for r in view:
        k = key(r)
        if run_ok(r) and r["mb_per_s"] and (k not in best or r["mb_per_s"] > best[k]["mb_per_s"]):
            best[k] = r
    return best


def _ecosystem(cell_rows: list[dict], ours: dict[str, dict]) -> Ecosystem | None:
    """The cell's ecosystem runs (each named by the layout it reads) beside `ours` (layout -> our
    loader's best decoded ok run; empty where the cell has none): see Ecosystem."""
    eco = [r for r in cell_rows if r["kind"] == "ecosystem"]
    if not eco:
        return None
    best = _best_ok(eco, lambda r: r["_run"].reads)
    excluded = tuple(x for x in dict.fromkeys(r["_run"].reads for r in eco if not run_ok(r)) if x not in best)
    ranked = sorted(best.items(), key=lambda kv: -kv[1]["mb_per_s"])
    ratios, recommended = {}, ()
    if ranked:
        top = ranked[0][1]
        lo_top = noise_range(top)[0]
        ratios = {l: r["mb_per_s"] / top["mb_per_s"] for l, r in ranked}
        recommended = tuple(l for l, r in ranked if r is top or noise_range(r)[1] >= lo_top)
    libraries = {l: (r["_run"].dataloader or {}).get("library") or f"ecosystem-{l}" for l, r in ranked}
    both = [l for l, _ in ranked if l in ours]
    gain = dict(sorted(((l, ours[l]["mb_per_s"] / best[l]["mb_per_s"]) for l in both), key=lambda kv: -kv[1]))
    layout_ours = layout_theirs = None
    if len(both) > 1:
        mine, theirs = [ours[l]["mb_per_s"] for l in both], [best[l]["mb_per_s"] for l in both]
        layout_ours, layout_theirs = max(mine) / min(mine), max(theirs) / min(theirs)
    return Ecosystem(ratios, recommended, excluded, libraries, gain, layout_ours, layout_theirs)


def _cell(corpus: str, regime: str, cell_rows: list[dict]) -> Cell:
    loaders = [r for r in cell_rows if r["kind"] == "loader"]
    decoded = [r for r in loaders if r["decode"]]
    view = decoded or loaders
    excluded = tuple(dict.fromkeys(r["layout"] for r in view if not run_ok(r)))
    best = _best_ok(view, lambda r: r["layout"])
    # the loader's effect only against decoded runs of ours: an ecosystem run always decodes
    eco = _ecosystem(cell_rows, {r["_run"].reads: r for r in best.values()} if decoded else {})
    ranked = sorted(best.values(), key=lambda r: -r["mb_per_s"])
    if not ranked:
        return Cell(corpus, regime, {}, (), None, excluded, bool(view) and not decoded, None, ecosystem=eco)
    top = ranked[0]
    lo_top = noise_range(top)[0]
    recommended = tuple(r["layout"] for r in ranked if r is top or noise_range(r)[1] >= lo_top)
    ratios = {r["layout"]: r["mb_per_s"] / top["mb_per_s"] for r in ranked}
    excluded = tuple(x for x in excluded if x not in best)  # a layout ok at another worker setting is ranked
    orders = {r["layout"]: r["shuffle"] for r in ranked if r["shuffle"] != "shuffle"}
    return Cell(corpus, regime, ratios, recommended, _bound(top), excluded, not decoded, top, orders, eco)


def verdict(results: list[Results]) -> Verdict:
    """The verdict of some results: per corpus (ordered by sample size) and regime, a Cell of our
    loader's runs (with its Ecosystem where ecosystem runs were measured); the sentences
    (verdict_sentences); one line per run not ok (any kind), each left out of the cells."""
    all_rows = rows(results)
    present = {r["cache"] for r in all_rows}
    regimes = tuple(c for c in REGIMES if c in ("cold", "warm") or c in present)
    corpora = []
    for corpus in dict.fromkeys(r["corpus"] for r in all_rows):
        mine = [r for r in all_rows if r["corpus"] == corpus]
        cells = {c: _cell(corpus, c, [r for r in mine if r["cache"] == c]) for c in regimes}
        corpora.append(CorpusRow(corpus, max(r["sample_bytes"] for r in mine), mine[0]["codec"], cells))
    corpora.sort(key=lambda row: row.sample_bytes)
    not_ok = tuple(f"not ok: {r['corpus']} {r['layout']} {r['cache']} w{r['workers']}: {not_ok_reason(r)}; "
                   f"left out of the verdict" for r in all_rows if not run_ok(r))
    partial = Verdict(regimes, tuple(corpora), (), not_ok)
    return Verdict(regimes, tuple(corpora), tuple(verdict_sentences(partial, all_rows, results)), not_ok)


def cell_text(cell: Cell) -> str:
    """A cell in one line: the recommended layouts; loose files' ratio; what bounded it; left out."""
    if not cell.measured:
        return "not measured"
    parts = []
    if cell.ratios:
        only = " (the only layout ok)" if cell.excluded else " (the only layout measured)"
        orders = cell.orders or {}
        parts.append(", ".join(l + (f" ({orders[l]} order)" if l in orders else "") for l in cell.recommended)
                     + (only if len(cell.ratios) == 1 else "")
                     + (" (payload bytes only)" if cell.bytes_only else ""))
        if cell.files_ratio is not None and len(cell.ratios) > 1:
            parts.append(f"loose files: {cell.files_ratio:.2f}x")
        if cell.bound:
            parts.append(BOUND_NAMES[cell.bound])
    else:
        parts.append("no run ok")
    if cell.excluded:
        parts.append("not ok: " + ", ".join(cell.excluded))
    return "; ".join(parts)


def ecosystem_text(eco: Ecosystem | None) -> str:
    """A cell as each layout's own library reads it, in one line: the layouts ranked by MB/s, each
    as a ratio to the best ("within noise" where its range overlaps the best's); left out."""
    if eco is None:
        return "not measured"
    parts = [" > ".join(f"{l} {ratio:.2f}" + (" within noise" if i and l in eco.recommended else "")
                        for i, (l, ratio) in enumerate(eco.ratios.items())) or "no run ok"]
    if eco.excluded:
        parts.append("not ok: " + ", ".join(eco.excluded))
    return "; ".join(parts)


def _x(v: float) -> str:
    """A factor: 24x, 8.0x, 0.80x."""
    return f"{v:,.0f}x" if v >= 9.95 else f"{v:.1f}x" if v >= 1 else f"{v:.2f}x"


def _xspan(values) -> str:
    lo, hi = _x(min(values)), _x(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


EFFECT_LEAD = {"loader": "the loader, not the layout, sets most of the number",
               "layout": "the layout, not the loader, sets most of the number",
               "neither": "neither the loader nor the layout dominates"}


def _effects_sentences(v: Verdict) -> list[str]:
    """Where a layout was read ok by ours and by its own library: per corpus, one sentence for the
    regimes that agree on which change sets most of the number (Ecosystem.effect), with the gain
    from changing the loader (ours over each layout's own library, same layout) beside the gain from
    changing the layout (best over worst, with ours and with their libraries): the figures of its
    one regime, or their range over its regimes. A regime where one layout alone was read by both:
    the loader's gain alone."""
    out = []
    for row in v.rows:
        groups: dict[str | None, list[Cell]] = {}
        for c in v.regimes:
            cell = row.cells[c]
            if cell.ecosystem is not None and cell.ecosystem.loader_gain:
                groups.setdefault(cell.ecosystem.effect, []).append(cell)
        for effect, cells in groups.items():
            if effect is None:
                for cell in cells:
                    ((layout, gain),) = cell.ecosystem.loader_gain.items()
                    out.append(f"On {_where(cell)}, changing the loader gives {_x(gain)} (ours over {layout}'s own "
                               f"library, {cell.ecosystem.libraries[layout]}); {layout} is the one layout both read "
                               f"ok, so the layout's gain is not compared there.")
                continue
            names = [VERDICT_REGIMES[c.regime] for c in cells]
            where = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
            es = [c.ecosystem for c in cells]
            out.append(f"On {row.corpus} {where}, {EFFECT_LEAD[effect]}: changing the loader gives "
                       f"{_xspan([g for e in es for g in e.loader_gain.values()])} (ours over each layout's own "
                       f"library), changing the layout {_xspan([e.layout_gain_ours for e in es])} with ours and "
                       f"{_xspan([e.layout_gain_theirs for e in es])} with the libraries users use (best layout "
                       f"over worst).")
    return out


def _s(items) -> str:
    return "" if len(items) == 1 else "s"


def _where(cell: Cell) -> str:
    return f"{cell.corpus} {VERDICT_REGIMES[cell.regime]}"


def _span(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}x to {hi:.2f}x"


def _packed_sentence(v: Verdict) -> str:
    with_files = [c for c in v.cells() if c.files_ratio is not None and len(c.ratios) > 1]
    wins = [c for c in with_files if FILES not in c.recommended]
    if not with_files:
        return ("Loose files were not measured beside another layout (or were not ok), so what packing the "
                "images buys is not shown here.")
    if not wins:
        where = "the one cell" if len(with_files) == 1 else f"all {len(with_files)} cells"
        return (f"Loose files were the best or within noise of it in {where} where they ran beside other "
                f"layouts: packing the images bought nothing measurable here.")
    size = {row.corpus: row for row in v.rows}
    most = min(wins, key=lambda c: c.files_ratio)
    text = (f"Packed layouts beat loose files in {len(wins)} of {len(with_files)} cell{_s(with_files)}, most at "
            f"{_where(most)} "
            f"({size_label(size[most.corpus].sample_bytes)} samples), where {most.recommended[0]} reads "
            f"{1 / most.files_ratio:.1f}x loose files' MB/s")
    if len(wins) > 1:
        least = max(wins, key=lambda c: c.files_ratio)
        text += (f", least at {_where(least)} ({size_label(size[least.corpus].sample_bytes)}, "
                 f"{1 / least.files_ratio:.2f}x)")
    return text + "."


def _decode_where(cells: list[Cell], low: str) -> str:
    """Per corpus: its codec, the regimes, its best runs' decode and read ms a sample, and the
    lowest ratio to the best among its layouts (`low`: the words before it)."""
    by_corpus: dict[str, list[Cell]] = {}
    for c in cells:
        by_corpus.setdefault(c.corpus, []).append(c)
    return "; ".join(f"{corpus} ({cs[0].top['codec']}) {', '.join(VERDICT_REGIMES[c.regime] for c in cs)} (decode "
                     f"{_ms_range([c.top['decode_ms_per_sample'] for c in cs])} ms a sample, read "
                     f"{_ms_range([c.top['read_ms_per_sample'] for c in cs])} ms; {low} "
                     f"{min(min(c.ratios.values()) for c in cs):.2f}x the best)" for corpus, cs in by_corpus.items())


def _decode_sentence(v: Verdict) -> str:
    bound = [c for c in v.cells() if c.bound == "decode" and c.ratios]
    dec = [c for c in bound if len(c.ratios) > 1]
    if not bound:
        if any(c.top is not None and c.top["bound_by"] is not None for c in v.cells()):
            return ("No cell was decode-bound: the read or the loader took most of each sample's time, so the "
                    "layout is worth choosing in every cell measured.")
        return ("Whether decoding bounds the runs was not measured (no run had a timing epoch with the "
                "read/decode split).")
    if not dec:
        return (f"Decoding bounds {_decode_where(bound, 'the one layout at')}, where one layout alone was measured: "
                f"whether the layout matters there is not shown.")
    flat = [c for c in dec if min(c.ratios.values()) >= MATTERS_LITTLE]
    steep = [c for c in dec if c not in flat]
    if not flat:
        return (f"Decoding bounds {_decode_where(steep, 'layouts down to')}, yet the layouts still differ there: "
                f"the layout matters even where decoding takes most of a sample's time.")
    text = (f"The layout does not matter where decoding bounds the run: "
            f"{_decode_where(flat, 'every layout at or above')}")
    if steep:
        text += (f"; in the decode-bound {_decode_where(steep, 'layouts down to')} it still does, the layouts "
                 f"apart by more than noise")
    return text + "."


def _avoid_sentence(v: Verdict) -> str:
    parts = []
    for row in v.rows:
        cells = [c for c in row.cells.values() if len(c.ratios) > 1]
        if not cells:
            continue
        layouts = dict.fromkeys(l for c in cells for l in c.ratios)
        bad = {l: [c.ratios[l] for c in cells if l in c.ratios] for l in layouts}
        bad = {l: rs for l, rs in bad.items() if max(rs) < AVOID}
        if bad:
            names = ", ".join(f"{l} ({_span(rs)})" for l, rs in sorted(bad.items(), key=lambda kv: max(kv[1])))
            parts.append(f"{names} at {size_label(row.sample_bytes)} ({row.corpus})")
    if not parts:
        return (f"No layout fell below {AVOID:.1f}x the best in every regime of a corpus: none is to be avoided "
                f"outright at these sample sizes.")
    return f"Avoid {'; '.join(parts)}: under {AVOID:.1f}x the best in every regime measured."


def _loader_sentences(v: Verdict, all_rows: list[dict]) -> list[str]:
    """What the loader changes: PyTorch's DataLoader (kind torch) and the plain library call per
    sample (kind naive) beside our loader on the same files, corpus and regime."""
    ours = {}
    for r in all_rows:
        if r["kind"] == "loader" and run_ok(r) and r["decode"] and r["mb_per_s"]:
            k = (r["corpus"], r["cache"], r["_run"].reads)
            if k not in ours or r["mb_per_s"] > ours[k]["mb_per_s"]:
                ours[k] = r
    spread = [min(c.ratios.values()) for c in v.cells() if len(c.ratios) > 1]
    out = []
    for kind, who in (("torch", "PyTorch's DataLoader"), ("naive", "The plain library call per sample (naive-*)")):
        theirs = {}
        for r in all_rows:
            k = (r["corpus"], r["cache"], r["_run"].reads)
            if r["kind"] == kind and run_ok(r) and r["mb_per_s"] and k in ours:
                theirs[k] = max(theirs.get(k, 0.0), r["mb_per_s"] / ours[k]["mb_per_s"])
        if not theirs:
            continue
        x = list(theirs.values())
        text = (f"{who} reached {_span(x)} our loader's MB/s on the same files ({len(x)} layout and regime "
                f"pair{_s(x)})")
        if spread and min(x) < 1:
            layout_gap, loader_gap = 1 / min(spread), 1 / min(x)
            text += (f": the loader moved throughput by up to {loader_gap:.1f}x, the layout by up to {layout_gap:.1f}x"
                     + (", so choose the loader first" if loader_gap > layout_gap else ""))
        out.append(text + ".")
    if not out and not any(r["kind"] == "ecosystem" for r in all_rows):  # else the two effects' sentences
        out.append("Only this project's loader was measured; `bench run --loader both` measures PyTorch's "
                   "DataLoader on the same files, which is what your training stack would change.")
    return out


def _scope_sentence(results: list[Results], all_rows: list[dict]) -> str:
    machines = {}
    for res in results:
        host, fs = res.metadata.get("host", {}), res.metadata.get("filesystem", {})
        machines.setdefault((host.get("name"), fs.get("source")), (host, fs))
    host, fs = next(iter(machines.values()))
    facts = [f"{fs['fstype']} on {fs.get('source') or 'its device'}" if fs.get("fstype") else None,
             f"{host['ram_bytes'] / 2**30:.1f} GiB of memory" if host.get("ram_bytes") else None,
             f"{host['cores']} cores" if host.get("cores") else None]
    where = ", ".join(f for f in facts if f) or "its disk and memory were not recorded"
    if len(machines) > 1:
        where = f"{len(machines)} machines or filesystems; the first: {where}"
    small = sorted({r["corpus"] for r in all_rows if r["_summary"].get("measures_page_cache") and r["cache"] != "warm"})
    tail = (f"; {', '.join(small)} fit in under 5x the memory available, so their figures measure the page cache"
            if small else "")
    return (f"These figures are this machine's ({where}): another disk, network storage or more memory moves the "
            f"cold and larger-than-memory columns most, so measure where you train{tail}.")


def verdict_sentences(v: Verdict, all_rows: list[dict], results: list[Results]) -> list[str]:
    """Three to six sentences (more with ecosystem runs: one per corpus and agreeing regimes), each
    generated from the cells and runs: where packed layouts win
    and by how much; where decoding bounds the run (the layout matters little); which layouts to
    avoid at which size; where ecosystem runs were measured, per corpus and regime, the gain from
    changing the loader against the gain from changing the layout; what the loader changes (torch
    and naive runs beside ours, where measured); what the numbers do not cover (this machine)."""
    if not v.cells() or not any(c.ratios for c in v.cells()):
        return ["No run of our loader was measured ok: there is nothing to recommend; see the runs not ok below.",
                _scope_sentence(results, all_rows)]
    return [_packed_sentence(v), _decode_sentence(v), _avoid_sentence(v), *_effects_sentences(v),
            *_loader_sentences(v, all_rows), _scope_sentence(results, all_rows)]


def verdict_markdown(v: Verdict, heatmap: str | None = None) -> list[str]:
    """report.md's opening: the table (our loader: what each layout allows), where ecosystem runs
    were measured a table of the layouts as their own libraries read them (what a user gets today),
    the sentences, the heatmap, the runs not ok."""
    head = ["corpus (sample size, codec)"] + [VERDICT_REGIMES[c] for c in v.regimes]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join([row.label] + [cell_text(row.cells[c]) for c in v.regimes]) + " |" for row in v.rows]
    out = ["Each cell: the layouts within noise of the best (best first); loose files' MB/s as a ratio to the "
           f"best; what bounded the best run (decode-bound: its decode over {BOUND_RATIO:g}x its read; else "
           f"I/O-bound at {NEAR_FLOOR:g}x its floor or more, loader-bound below). Rows by sample size; runs not ok "
           "are left out of the cells and listed under them.", ""] + lines + [""]
    eco_rows = [row for row in v.rows if any(row.cells[c].ecosystem for c in v.regimes)]
    if eco_rows:  # what a user gets today, beside what the layout allows (the table above: our loader)
        out += ["The table above reads every layout with layoutbench's loader: what the layout allows. With each "
                "layout's own library (ecosystem runs: what a user gets today), the layouts ranked by MB/s, each "
                "as a ratio to the best:", "", "| " + " | ".join(head) + " |", lines[1]]
        out += ["| " + " | ".join([row.label] + [ecosystem_text(row.cells[c].ecosystem) for c in v.regimes]) + " |"
                for row in eco_rows] + [""]
    out += list(v.sentences) + [""]
    if heatmap:
        out += [f"![each layout's MB/s over the best, per corpus and regime]({heatmap})", ""]
    if v.not_ok:
        out += [f"- {line}" for line in v.not_ok] + [""]
    return out


def verdict_console(v: Verdict, width: int = 100) -> list[str]:
    """The console's verdict: per corpus, a line, then a line per regime (under it, where ecosystem
    runs were measured, the layouts as their own libraries read them); the sentences wrapped to
    `width`; the runs not ok, one line each."""
    import textwrap

    out = ["Verdict (layouts within noise of the best; loose files' ratio to it; what bounded it):"]
    own = "own libraries:"  # under a regime: its ecosystem runs ranked (ecosystem_text)
    eco = any(row.cells[c].ecosystem for row in v.rows for c in v.regimes)
    label = max([len(VERDICT_REGIMES[c]) + 1 for c in v.regimes] + ([len(own) + 2] if eco else []))
    for row in v.rows:
        out.append(f"  {row.label}")
        for c in v.regimes:
            out.append(f"    {VERDICT_REGIMES[c] + ':':{label}} {cell_text(row.cells[c])}")
            if row.cells[c].ecosystem is not None:
                out.append(f"      {own:{label - 2}} {ecosystem_text(row.cells[c].ecosystem)}")
    for s in v.sentences:
        out += textwrap.wrap(s, width, initial_indent="", subsequent_indent="  ")
    return out + list(v.not_ok)

"""Reports from results files: the Answer (layouts ranked per corpus and regime, within noise, the
compute each needs for AU >= 90 %), a summary table, report.md, a CSV and PNG plots (matplotlib, Agg).

Contracts: a run above FLOOR_SLACK x its floor is flagged "floor too low" (the floor is wrong, not
the loader fast); two layouts are "within noise" when the throughput ranges of their repeats (or,
with one repeat, of their steady epochs) overlap; runs replicate (MLPerf's rule) when their
repeats' MB/s lie within REPLICATE of each other ((max - min) / min). Runs that deliver payload
bytes only (--decode no/both) are ranked apart from decoded ones ("payload bytes only"), and the
plots show the decoded runs of a corpus that has any. Each corpus's runs with a read/decode split
(their timing epochs) get a line saying whether they were I/O-bound or decode-bound
(bench.result.SPLIT_RULE) and a table in "Read and decode".
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from generator.errors import UsageError

from . import au as au_model
from . import stats
from .result import SPLIT_RULE, Results, steady_epochs, summarize
from .config import check_writable, inside

FLOOR_SLACK = 1.05  # a run above this x its floor: the floor is too low
REPLICATE = 0.05  # MLPerf: repeats within 5 %
FIO_SLACK = 0.25  # fio and our floor differing by more than this is reported
REGIMES = ("cold", "capped", "warm", "asis")  # the Answer's order; cold and warm always named

CSV_FIELDS = ("corpus", "preset", "count", "sample_bytes", "layout", "kind", "cache", "workers", "worker_kind",
              "batch_size", "decode", "epochs", "repeats", "ranks", "samples_per_s", "samples_per_s_min",
              "samples_per_s_max", "mb_per_s", "floor_mb_per_s", "floor_ratio", "memcpy_ratio", "pread_ratio", "ttfb_s",
              "first_epoch_samples_per_s", "p50_ms", "p99_ms", "p99_9_ms", "max_ms", "sample_p50_ms",
              "sample_p99_ms", "cpu_us_per_sample", "read_bytes_per_payload_byte", "syscr_per_sample",
              "residency_min", "residency_max", "cache_ok", "bytes_on_disk", "files", "checkpoint_writes",
              "checkpoint_mb_per_s", "read_write_ratio", "floor_way", "compute_ms", "au", "repeats_rel_range",
              "shuffle", "displacement", "same_shard", "same_shard_shuffled", "codec", "split_samples",
              "read_ms_per_sample", "decode_ms_per_sample", "read_cpu_ms_per_sample", "decode_cpu_ms_per_sample",
              "read_p50_ms", "read_p90_ms", "decode_p50_ms", "decode_p90_ms", "bound_by")


def codec_label(spec: dict) -> str:
    """A corpus's payload codec as the report names it: jpeg q90, tiff-lzw, png, raw..."""
    payload = spec.get("payload") or "tiff"
    compression = spec.get("compression") or "none"
    name = payload if compression == "none" else f"{payload}-{compression}"
    return f"{name} q{spec['quality']}" if spec.get("quality") is not None else name


def _ms(seconds):
    return None if seconds is None else seconds * 1e3


def corpus_name(res: Results) -> str:
    """preset-count (mnist-60000), and the codec where it is not the default TIFF
    (imagenet-300-jpeg-q90); a corpus of no preset by its directory's name (imagenet-jpeg-1000)."""
    spec = res.corpus.get("spec", {})
    if not spec.get("preset") and res.corpus.get("path"):
        return Path(res.corpus["path"]).name
    codec = codec_label(spec)
    return f"{spec.get('preset') or 'custom'}-{spec.get('count')}" + ("" if codec == "tiff" else f"-{codec.replace(' ', '-')}")


def rows(results: list[Results]) -> list[dict]:
    """One flat row per run, for the tables, the CSV and the plots."""
    out = []
    for res in results:
        spec = res.corpus.get("spec", {})
        sample_bytes = res.corpus.get("payload_bytes", 0) / max(1, spec.get("count", 1))
        for run in res.runs:
            s = summarize(run, res.floors, res.corpus)
            c = run.config
            bl, sl = s["batch_latency_ms"], s["sample_latency_ms"]
            out.append({
                "corpus": corpus_name(res), "preset": spec.get("preset"), "count": spec.get("count"),
                "sample_bytes": round(sample_bytes), "layout": run.layout, "kind": run.kind, "cache": run.cache,
                "workers": c.workers, "worker_kind": c.worker_kind, "batch_size": c.batch_size, "decode": s["decoded"],
                "epochs": c.epochs, "repeats": c.repeats, "ranks": c.world,
                "samples_per_s": s["samples_per_s"], "samples_per_s_min": s["samples_per_s_spread"]["min"],
                "samples_per_s_max": s["samples_per_s_spread"]["max"], "mb_per_s": s["mb_per_s"],
                "floor_mb_per_s": s["floor_mb_per_s"], "floor_ratio": s["floor_ratio"], "memcpy_ratio": s["memcpy_ratio"],
                "pread_ratio": s["pread_ratio"],
                "ttfb_s": s["ttfb_s"], "first_epoch_samples_per_s": s["first_epoch"]["samples_per_s"],
                "p50_ms": bl.get("p50"), "p99_ms": bl.get("p99"), "p99_9_ms": bl.get("p99_9"), "max_ms": bl.get("max"),
                "sample_p50_ms": sl.get("p50"), "sample_p99_ms": sl.get("p99"),
                "cpu_us_per_sample": s["cpu_us_per_sample"],
                "read_bytes_per_payload_byte": s["read_bytes_per_payload_byte"],
                "syscr_per_sample": s["syscr_per_sample"],
                "residency_min": min((v for v in (s["residency_before"]["min"], s["residency_after"]["min"])
                                      if v is not None), default=None), "residency_max": s["residency_before"]["max"],
                "cache_ok": s["cache_ok"], "bytes_on_disk": s["bytes_on_disk"], "files": s["files"],
                "checkpoint_writes": s["checkpoint"]["writes"], "checkpoint_mb_per_s": s["checkpoint"]["mb_per_s"],
                "read_write_ratio": s["checkpoint"]["read_write_ratio"], "floor_way": s.get("floor_way"),
                "compute_ms": c.compute_ms + c.compute_ms_per_sample * c.batch_size, "au": s.get("au"),
                "repeats_rel_range": replication(run)[1],
                "shuffle": c.shuffle, "displacement": s["order"]["displacement"],
                "same_shard": s["order"]["same_shard"], "same_shard_shuffled": s["order"]["same_shard_shuffled"],
                "codec": codec_label(spec), "split_samples": s["split_samples"],
                "read_ms_per_sample": _ms(s["read_s_per_sample"]), "decode_ms_per_sample": _ms(s["decode_s_per_sample"]),
                "read_cpu_ms_per_sample": _ms(s["read_cpu_s_per_sample"]),
                "decode_cpu_ms_per_sample": _ms(s["decode_cpu_s_per_sample"]),
                "read_p50_ms": s["read_ms"].get("p50"), "read_p90_ms": s["read_ms"].get("p90"),
                "decode_p50_ms": s["decode_ms"].get("p50"), "decode_p90_ms": s["decode_ms"].get("p90"),
                "bound_by": s["bound_by"], "timed": any(e.timing for e in run.epochs),
                "_run": run, "_results": res, "_summary": s,
            })
    return out


# ---------------------------------------------------------------- text

def fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def table(header: list[str], body: list[list[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    return "\n".join("  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [header, *body])


def spread_pct(r: dict) -> str:
    lo, hi, med = r["samples_per_s_min"], r["samples_per_s_max"], r["samples_per_s"]
    n = r["_summary"]["samples_per_s_spread"]["n"]
    return f"{(hi - lo) / med:.0%}" if n > 1 and med else "-"


MAIN_HEADER = ["corpus", "layout", "cache", "workers", "batch", "samples/s", "range", "MB/s", "floor MB/s", "x floor",
               "ttfb ms", "p99 batch ms", "p99 sample ms", "resident", "ok"]


def floor_cell(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.2f} floor too low" if ratio > FLOOR_SLACK else f"{ratio:.2f}"


def order_lines(all_rows: list[dict]) -> list[str]:
    """How random the order of each run that did not fully shuffle was (loaders.sampler.order_randomness)."""
    out = []
    for r in all_rows:
        if r["shuffle"] == "shuffle" or r["kind"] != "loader" or r["displacement"] is None:
            continue
        shard = (f"; consecutive samples from the same shard {r['same_shard']:.1%} (full shuffle: "
                 f"{r['same_shard_shuffled']:.1%})" if r["same_shard"] is not None else "")
        out.append(f"order {r['corpus']} {r['layout']} {r['cache']} ({r['shuffle']}): displacement "
                   f"{r['displacement']:.2f}x a full shuffle's{shard}")
    return out


def run_label(r: dict) -> str:
    """The layout, marked when the run delivered payload bytes only (not decoded)."""
    return r["layout"] if r["decode"] else f"{r['layout']} (bytes only)"


def main_row(r: dict) -> list[str]:
    workers = f"{r['workers']}{'' if r['kind'] == 'naive' else ' ' + r['worker_kind'][0]}" if r["workers"] else "0"
    resident = (f"{r['residency_max']:.0%}" if r["cache"] == "cold" else f"{r['residency_min']:.0%}"
                if r["residency_min"] is not None else "-")
    return [r["corpus"], run_label(r), r["cache"], workers, str(r["batch_size"]), fmt(r["samples_per_s"]), spread_pct(r),
            fmt(r["mb_per_s"], ",.1f"), fmt(r["floor_mb_per_s"], ",.0f"), floor_cell(r["floor_ratio"]),
            fmt(r["ttfb_s"] * 1e3 if r["ttfb_s"] is not None else None, ",.1f"), fmt(r["p99_ms"], ",.2f"),
            fmt(r["sample_p99_ms"], ",.3f"), resident, "yes" if r["cache_ok"] else "NO"]


def summary_table(results: list[Results]) -> str:
    """What `bench run` and `make bench` print at the end."""
    all_rows = rows(results)
    body = [main_row(r) for r in all_rows]
    lines = [table(MAIN_HEADER, body)] + order_lines(all_rows)
    for res in results:
        f = res.floors
        seq = ", ".join(f"{s.layout} {s.cache} {s.mb_per_s:,.0f}" for s in f.seq)
        pread = (f"pread {f.pread[0].sample_bytes:,} B: " + ", ".join(f"{p.cache} {p.samples_per_s:,.0f}/s" for p in f.pread)
                 if f.pread else "pread: not measured (no file holds enough samples)")
        lines.append(f"floors {corpus_name(res)}: seq read MB/s (1 stream): {seq}; {pread}; memcpy "
                     f"{fmt(f.memcpy_mb_per_s)} MB/s; harness {fmt(f.null_us_per_sample, '.4f')} us/sample")
        at = bounds(f)
        if at:
            lines.append(f"floors {corpus_name(res)} at the runs' concurrency, MB/s: "
                         + ", ".join(f"{b.layout} {b.cache} {b.streams} stream{'s' * (b.streams > 1)} {b.mb_per_s:,.0f} "
                                     f"({b.way} {b.streams}x{b.depth})" for b in at))
        for line in fio_lines(res):
            lines.append(f"fio {corpus_name(res)}: {line}")
    low = [r for r in rows(results) if r["floor_ratio"] is not None and r["floor_ratio"] > FLOOR_SLACK]
    for r in low:
        lines.append(f"FLOOR TOO LOW: {r['corpus']} {r['layout']} {r['cache']} w{r['workers']} at {r['floor_ratio']:.2f}x "
                     f"its floor ({r['floor_way']}): a floor a loader beats is not a floor")
    return "\n".join(lines)


def bounds(floors) -> list:
    """The bounding floor of each (layout, cache, streams) measured: the fastest way."""
    keys = dict.fromkeys((f.layout, f.cache, f.streams) for f in floors.at)
    return [floors.bound(*k) for k in keys]


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


# ---------------------------------------------------------------- repeats, noise and the Answer

def replication(run) -> tuple[list[float], float | None]:
    """(MB/s of each repeat over its steady epochs, (max - min) / min), None with one repeat."""
    steady, _ = steady_epochs(run)
    per = {}
    for e in steady:
        b, w = per.get(e.repeat, (0, 0.0))
        per[e.repeat] = (b + e.payload_bytes, w + e.wall_s)
    mbs = [b / w / 1e6 for b, w in (per[k] for k in sorted(per)) if w > 0]
    if len(mbs) < 2 or not min(mbs):
        return mbs, None
    return mbs, (max(mbs) - min(mbs)) / min(mbs)


def noise_range(r: dict) -> tuple[float, float]:
    """The MB/s range a run's figure is known within: its repeats', or with one repeat its steady epochs'."""
    reps, _ = replication(r["_run"])
    if len(reps) > 1:
        return min(reps), max(reps)
    sp = r["_summary"]["mb_per_s_spread"]
    return (sp["min"], sp["max"]) if sp["n"] else (r["mb_per_s"], r["mb_per_s"])


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
    """The Answer's line on what bounded a corpus's decoded loader runs (bench.result.SPLIT_RULE):
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


# ---------------------------------------------------------------- plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _layout_order() -> tuple[str, ...]:
    """Registered layouts in registration order, then their naive baselines."""
    from generator.layouts import layout_ids

    from .naive import naive_name

    return (*layout_ids(), *map(naive_name, layout_ids()))
CACHE_COLORS = {"cold": "#4575b4", "warm": "#d73027", "asis": "#999999", "capped": "#1a9850"}
CACHE_STYLES = {"cold": "--", "warm": "-", "asis": ":", "capped": "-."}


def _layout_key(name: str):
    order = _layout_order()
    return (order.index(name) if name in order else len(order), name)


def _corpus_panels(all_rows: list[dict]):
    """(plt, figure, axes, corpora): one panel per corpus; None when there is nothing to plot."""
    corpora = list(dict.fromkeys(r["corpus"] for r in all_rows))
    if not corpora:
        return None
    plt = _plt()
    fig, axes = _grid(plt, len(corpora))
    return plt, fig, axes, corpora


def _finish_panels(plt, fig, path: Path, handles, labels, title: str) -> Path:
    """One legend across the top, the title, and the PNG written."""
    fig.legend(handles, labels, loc="upper center", ncol=len(handles), fontsize=9, bbox_to_anchor=(0.5, 0.985))
    fig.suptitle(title, y=0.998, fontsize=11, va="top", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(plt, n: int, height: float = 4.0):
    """Panels two to a row, so each stays readable however many corpora there are."""
    cols = min(2, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, height * rows + 0.8), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def primary_view(all_rows: list[dict]) -> list[dict]:
    """Per corpus, its decoded runs if it has any (what training sees), else its runs: decoded and
    payload-bytes runs of one layout are never ranked or plotted against each other."""
    decoded = {r["corpus"] for r in all_rows if r["decode"]}
    return [r for r in all_rows if r["decode"] or r["corpus"] not in decoded]


def best_runs(all_rows: list[dict], corpus: str, decoded: bool | None = None) -> dict[tuple[str, str], dict]:
    """One run per (layout, cache) of a corpus: the worker setting with the highest MB/s; of the
    decoded runs (True), the payload-bytes ones (False), or primary_view's (None)."""
    best = {}
    for r in (primary_view(all_rows) if decoded is None else [r for r in all_rows if r["decode"] == decoded]):
        k = (r["layout"], r["cache"])
        if r["corpus"] == corpus and r["mb_per_s"] and (k not in best or r["mb_per_s"] > best[k]["mb_per_s"]):
            best[k] = r
    return best


def plot_throughput(all_rows: list[dict], path: Path) -> Path | None:
    """MB/s by layout per corpus, cold beside warm, each bar with its floor (black tick)."""
    panels = _corpus_panels(all_rows)
    if panels is None:
        return None
    plt, fig, axes, corpora = panels
    for ax, corpus in zip(axes, corpora):
        best = best_runs(all_rows, corpus)
        layouts = sorted({k[0] for k in best}, key=_layout_key)
        caches = [c for c in CACHE_COLORS if any(k[1] == c for k in best)]
        width = 0.8 / max(1, len(caches))
        for j, cache in enumerate(caches):
            for i, layout in enumerate(layouts):
                r = best.get((layout, cache))
                if not r:
                    continue
                x, y, floor = i + (j - (len(caches) - 1) / 2) * width, r["mb_per_s"], r["floor_mb_per_s"]
                ax.bar(x, y, width * 0.9, color=CACHE_COLORS[cache])
                ax.annotate(f"{y:,.0f}", (x, y), ha="center", va="bottom", fontsize=7)
                if floor:
                    ax.plot([x - width * 0.45, x + width * 0.45], [floor, floor], color="black", lw=1.6)
        ax.set_xticks(range(len(layouts)))
        ax.set_xticklabels([f"{l}\n(w{best.get((l, caches[0]), {}).get('workers', '?')})" for l in layouts], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("payload MB/s (log scale)")
        ax.set_title(corpus, fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
    handles = [plt.Rectangle((0, 0), 1, 1, color=CACHE_COLORS[c]) for c in ("cold", "warm")]
    handles.append(plt.Line2D([], [], color="black", lw=1.6))
    labels = ["cold", "warm", "sequential-read floor of the same files, same cache"]
    return _finish_panels(plt, fig, path, handles, labels, "Throughput by layout (wN: loader workers)")


def plot_latency_cdf(all_rows: list[dict], path: Path) -> Path | None:
    """CDF of the time the consumer waited per batch (steady-state epochs), per corpus."""
    panels = _corpus_panels(all_rows)
    if panels is None:
        return None
    plt, fig, axes, corpora = panels
    cmap = plt.get_cmap("tab10")
    layouts_seen: list[str] = []
    for ax, corpus in zip(axes, corpora):
        best = best_runs(all_rows, corpus)
        for (layout, cache), r in sorted(best.items(), key=lambda kv: (_layout_key(kv[0][0]), kv[0][1])):
            steady, _ = steady_epochs(r["_run"])
            lat = np.sort(np.array([ns for e in steady for ns in e.batch_ns], np.float64)) / 1e6
            if lat.size == 0:
                continue
            if layout not in layouts_seen:
                layouts_seen.append(layout)
            y = np.arange(1, lat.size + 1) / lat.size
            ax.step(np.maximum(lat, 1e-4), y, where="post", color=cmap(layouts_seen.index(layout) % 10),
                    ls=CACHE_STYLES[cache], lw=1.4)
        ax.set_xscale("log")
        ax.set_xlabel("wait per batch, ms (log scale)")
        ax.set_ylabel("fraction of batches")
        ax.set_ylim(0, 1.02)
        ax.set_title(corpus, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    handles = [plt.Line2D([], [], color=cmap(i % 10), lw=2) for i in range(len(layouts_seen))]
    handles += [plt.Line2D([], [], color="gray", ls=CACHE_STYLES[c]) for c in ("cold", "warm")]
    return _finish_panels(plt, fig, path, handles, layouts_seen + ["cold", "warm"], "Batch latency CDF")


def plot_workers(all_rows: list[dict], path: Path) -> Path | None:
    """samples/s against the worker count, for every (corpus, layout, cache) measured at several."""
    plt = _plt()
    groups: dict[tuple, list[dict]] = {}
    for r in all_rows:
        if r["kind"] == "loader":
            groups.setdefault((r["corpus"], r["layout"], r["cache"], r["worker_kind"]), []).append(r)
    groups = {k: v for k, v in groups.items() if len({r["workers"] for r in v}) > 1}
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for (corpus, layout, cache, kind), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["workers"])
        xs, ys = [r["workers"] for r in rs], [r["samples_per_s"] for r in rs]
        ax.plot(xs, ys, marker="o", ls=CACHE_STYLES[cache], label=f"{corpus} {layout} {cache} ({kind} workers)")
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:,.0f} ({fmt(stats.ratio(y, ys[0]), '.2f')}x)", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set_xlabel("loader workers (0 = calling thread)")
    ax.set_ylabel("samples/s")
    ax.set_ylim(bottom=0)
    ticks = sorted({r["workers"] for rs in groups.values() for r in rs})
    ax.set_xticks(ticks)
    ax.set_xlim(ticks[0] - 0.3, ticks[-1] + 0.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Throughput against workers (ratios to the fewest workers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_capped(all_rows: list[dict], path: Path) -> Path | None:
    """Per corpus under a cap: MB/s and hit ratio (solid; the residency-based expectation dashed)
    per epoch, per layout."""
    capped = [r for r in all_rows if r["cache"] == "capped"]
    corpora = list(dict.fromkeys(r["corpus"] for r in capped))
    if not corpora:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(corpora), 2, figsize=(12.8, 3.8 * len(corpora) + 0.8), squeeze=False)
    cmap = plt.get_cmap("tab10")
    layouts = sorted({r["layout"] for r in capped}, key=_layout_key)
    for (ax_mb, ax_hit), corpus in zip(axes, corpora):
        for r in capped:
            if r["corpus"] != corpus:
                continue
            color = cmap(layouts.index(r["layout"]) % 10)
            epochs = [e for e in r["_run"].epochs if not e.timing]
            xs = list(range(len(epochs)))
            ax_mb.plot(xs, [e.mb_per_s for e in epochs], marker="o", color=color)
            ax_hit.plot(xs, [e.hit_ratio if e.hit_ratio is not None else np.nan for e in epochs], marker="o", color=color)
            ax_hit.plot(xs, [e.expected_hit_ratio if e.expected_hit_ratio is not None else np.nan for e in epochs],
                        ls="--", color=color, alpha=0.6)
        cap = next((r["_run"].cap for r in capped if r["corpus"] == corpus and r["_run"].cap), {}) or {}
        ax_mb.set_title(f"{corpus}: payload MB/s under a cap of {cap.get('size', 0) / 2**20:,.1f} MiB page cache",
                        fontsize=10)
        ax_hit.set_title(f"{corpus}: hit ratio (dashed: residency before the epoch)", fontsize=10)
        for ax in (ax_mb, ax_hit):
            ax.set_xlabel("epoch (0 = just evicted)")
            ax.grid(alpha=0.3)
        ax_mb.set_ylim(bottom=0)
        ax_hit.set_ylim(0, 1)
    handles = [plt.Line2D([], [], color=cmap(i % 10), lw=2) for i in range(len(layouts))]
    return _finish_panels(plt, fig, path, handles, layouts, "Under a memory cap, epoch by epoch")


def read_unit_notes(capped: list[dict]) -> list[str]:
    """One line per capped layout whose own design reads more than a sample's payload pages (its
    reader's read_unit): that read amplification is the layout's, not the cache's."""
    from loaders.registry import readers

    classes = readers()
    lines = []
    for layout in dict.fromkeys(r["layout"] for r in capped):
        unit = getattr(classes.get(layout), "read_unit", None)
        if unit:
            lines.append(f"- {layout}: reads {unit}; its read amplification above 1 is the layout's design")
    return lines + [""] if lines else []


def capped_section(all_rows: list[dict]) -> list[str]:
    """The capped runs' cache figures, and the 5x rule for every non-cold run."""
    out = []
    capped = [r for r in all_rows if r["cache"] == "capped"]
    if capped:
        body = []
        for r in capped:
            s, cap = r["_summary"], r["_run"].cap or {}
            c = s.get("cap") or {}
            body.append([r["corpus"], r["layout"], str(r["workers"]), fmt(r["mb_per_s"], ",.1f"),
                         fmt(s["hit_ratio"], ".3f"), fmt(s["expected_hit_ratio"], ".3f"),
                         fmt(s["read_amplification"], ".3f"), fmt(s["read_amplification_pages"], ".3f"),
                         fmt(s["memory_ratio"], ".1f"), f"{cap.get('size', 0) / 2**20:,.1f} + {cap.get('own_bytes', 0) / 2**20:,.1f}",
                         fmt((c.get("peak_bytes") or 0) / 2**20, ",.1f"), fmt((c.get("resident_bytes_max") or 0) / 2**20, ",.1f"),
                         fmt(c.get("limit_hits")), fmt(c.get("oom_kills")), "yes" if r["cache_ok"] else "NO"])
        out += ["## Under a memory cap", "",
                "The loader and its workers in a memory cgroup of (page cache SIZE + the loader's own memory, "
                "measured first), evicted once, then the epochs back to back. Medians over the steady epochs. "
                "hit = payload bytes served without a device read (probed before each read); expected = "
                "residency before the epoch (the most the cache could serve); amplification = read_bytes / "
                "the payload that had to come from the device, and / the pages that had to (samples smaller "
                "than a 4 KiB page cost a whole page: there the first is above 1 by design of the page cache).", "",
                table(["corpus", "layout", "workers", "MB/s", "hit", "expected", "read ampl.", "ampl. / pages",
                       "corpus / cap", "cap MiB (cache + own)", "peak MiB", "resident max MiB", "limit hits",
                       "OOM kills", "ok"], body, markdown=True), ""]
        out += read_unit_notes(capped)
        forced = [r for r in capped if (r["_summary"]["read_amplification_pages"] or 0) > 1.2]
        for r in forced:
            out.append(f"- {r['corpus']} {r['layout']}: read {r['_summary']['read_amplification_pages']:.2f}x the pages it "
                       f"needed per steady epoch (over 1.2): see the README, Under a memory cap")
        if forced:
            out.append("")
    small = [r for r in all_rows if r["_summary"].get("measures_page_cache")]
    if small:
        out += ["## The 5x rule", ""] + [
            f"- {r['corpus']} {r['layout']} {r['cache']}: corpus {r['_summary']['memory_ratio']:.2f}x the memory "
            f"available to it: measures the page cache, not storage" for r in small] + [""]
    return out


# ---------------------------------------------------------------- report.md and CSV

def write_csv(all_rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in all_rows:
            w.writerow({k: ("" if r[k] is None else round(r[k], 6) if isinstance(r[k], float) else r[k])
                        for k in CSV_FIELDS})
    return path


def floors_section(results: list[Results]) -> list[str]:
    out = ["## Floors (same run, same files)", "",
           "Sequential read: every file of the layout end to end in 4 MiB reads. pread: one sample's size at "
           "random sample-sized slots of the largest file. memcpy: one numpy copy. Harness: the measurement "
           "loop over a loader that costs nothing.", ""]
    body = []
    for res in results:
        f = res.floors
        for s in f.seq:
            body.append([corpus_name(res), f"seq read {s.layout}", s.cache, f"{s.mb_per_s:,.0f} MB/s",
                         f"{s.bytes:,} B in {s.files:,} files, {s.seconds:.3f} s, resident before {s.residency_before:.0%}"])
        for p in f.pread:
            lat = np.array(p.latency_ns, np.float64) / 1e6
            body.append([corpus_name(res), f"pread {p.sample_bytes:,} B", p.cache, f"{p.samples_per_s:,.0f} reads/s",
                         f"{p.reads:,} reads, p50 {np.median(lat):.3f} ms, p99 {np.percentile(lat, 99):.3f} ms"
                         if lat.size else "no reads"])
        body.append([corpus_name(res), "memcpy", "-", f"{fmt(f.memcpy_mb_per_s)} MB/s", f"{f.memcpy_bytes:,} B"])
        body.append([corpus_name(res), "harness (null loader)", "-", f"{fmt(f.null_us_per_sample, '.4f')} us/sample",
                     f"{f.null_samples:,} samples in batches of {f.null_batch_size}"])
    return out + [table(["corpus", "floor", "cache", "rate", "detail"], body, markdown=True), ""]


def au_entries(all_rows: list[dict]) -> list[tuple]:
    """(corpus, regime, layout, run) of each layout's best loader run, for the AU plot."""
    out = []
    loaders = [r for r in all_rows if r["kind"] == "loader"]
    for corpus in dict.fromkeys(r["corpus"] for r in all_rows):
        order = lambda kv: (REGIMES.index(kv[0][1]) if kv[0][1] in REGIMES else 9, kv[0][0])
        for (layout, cache), r in sorted(best_runs(loaders, corpus).items(), key=order):
            out.append((corpus, cache, layout, r["_run"]))
    return out


def bound_section(all_rows: list[dict], results: list[Results]) -> list[str]:
    """Whether the floors bound the runs: the largest and smallest x floor, runs above FLOOR_SLACK,
    and fio beside our floor."""
    ratios = [r for r in all_rows if r["floor_ratio"] is not None]
    out = ["## Do the floors bound the runs?", "",
           "Each run's x floor is its MB/s over the fastest floor of its own files at its own cache state and "
           "concurrency: W streams (the run's workers, at least 1, times the ranks on the node), each with up to a "
           f"batch of reads in flight. Above {FLOOR_SLACK:.2f}x the floor is too low: a defect, not a win.", ""]
    if ratios:
        hi = max(ratios, key=lambda r: r["floor_ratio"])
        lo = min(ratios, key=lambda r: r["floor_ratio"])

        def name(r):
            return f"{r['corpus']} {r['layout']} {r['cache']} w{r['workers']} ({r['floor_way']})"

        out += [f"- largest x floor: {hi['floor_ratio']:.2f}, {name(hi)}"
                + (" — FLOOR TOO LOW" if hi["floor_ratio"] > FLOOR_SLACK else " (goal <= 1.05: met)"),
                f"- smallest x floor: {lo['floor_ratio']:.2f}, {name(lo)}: the loader furthest from what the "
                "machine allows"]
        out += [f"- floor too low: {name(r)} at {r['floor_ratio']:.2f}x" for r in ratios if r["floor_ratio"] > FLOOR_SLACK]
    fio = [f"- {corpus_name(res)} {line}" for res in results for line in fio_lines(res)]
    if fio:
        out += ["", "fio (randread, same files, cache state and concurrency) beside our random-read floor:", ""] + fio
    return out + [""]


def split_section(all_rows: list[dict], results: list[Results]) -> list[str]:
    """Per corpus, a table of its loader runs' read/decode split (the timing epochs), decoded runs
    beside payload-bytes ones, and the timing's own cost (Floors.split_*); [] without any split."""
    timed = [r for r in all_rows if r["kind"] == "loader" and r["split_samples"]]
    if not timed:
        return []
    out = ["## Read and decode", "",
           "From each run's timing epoch (one sample at a time, kept out of the throughput figures): per sample, "
           "read = the layout's read of the payload (storage or page cache, and its checks), decode = the codec "
           "and the copy into the batch; wall time (mean, and p50 / p90) and the CPU time of the thread doing it "
           "(a loader thread, a worker process, or the caller; a codec's own helper threads are not counted). "
           f"Bound by: {SPLIT_RULE}. samples/s is the run's throughput (steady epochs); \"bytes only\" runs "
           "deliver payloads without decoding (--decode no/both).", ""]
    for res in results:
        f = res.floors
        bias = f.split_bias_us()
        if bias:
            out.append(f"- {corpus_name(res)}: the timing costs {f.split_us_per_sample:.2f} us per timed sample; "
                       f"over a reader that costs nothing it measures read {bias['read_s']:.2f} us, decode "
                       f"{bias['decode_s']:.2f} us, read CPU {bias['read_cpu_s']:.2f} us, decode CPU "
                       f"{bias['decode_cpu_s']:.2f} us per sample: the floor under the figures below")
    out.append("")
    for corpus in dict.fromkeys(r["corpus"] for r in timed):
        mine = [r for r in timed if r["corpus"] == corpus]
        body = [[r["layout"], r["codec"] if r["decode"] else f"{r['codec']} (bytes only)", r["cache"],
                 f"{r['workers']} {r['worker_kind'][0]}" if r["workers"] else "0", fmt(r["samples_per_s"]),
                 f"{r['read_ms_per_sample']:.4f} ({fmt(r['read_p50_ms'], '.4f')} / {fmt(r['read_p90_ms'], '.4f')})",
                 "-" if r["decode_ms_per_sample"] is None else
                 f"{r['decode_ms_per_sample']:.4f} ({fmt(r['decode_p50_ms'], '.4f')} / {fmt(r['decode_p90_ms'], '.4f')})",
                 fmt(r["read_cpu_ms_per_sample"], ".4f"), fmt(r["decode_cpu_ms_per_sample"], ".4f"),
                 BOUND_WORDS.get(r["bound_by"], "-") if r["decode"] else "- (not decoded)"] for r in mine]
        out += [f"### {corpus} ({mine[0]['codec']})", "",
                table(["layout", "codec", "cache", "workers", "samples/s", "read ms/sample (p50 / p90)",
                       "decode ms/sample (p50 / p90)", "read CPU ms", "decode CPU ms", "bound by"], body,
                      markdown=True), ""]
    return out


def au_section(all_rows: list[dict]) -> list[str]:
    body = []
    for r in all_rows:
        if r["kind"] != "loader":
            continue
        need = au_model.min_compute(r["_run"]) if r["au"] is None else None
        body.append([r["corpus"], r["layout"], r["cache"], f"{r['workers']} {r['worker_kind'][0]}", str(r["batch_size"]),
                     fmt(r["compute_ms"] or None, ".3g"),
                     "-" if r["au"] is None else
                     f"{r['au']:.1%} ({'reaches' if r['au'] >= au_model.AU_TARGET else 'under'} 90 %)",
                     fmt_ms(need) if r["au"] is None else "-"])
    if not body:
        return []
    return ["## Accelerator utilization", "",
            "AU = emulated compute / running time per epoch (MLPerf), the first batch's wait excluded. Runs with "
            "--compute-ms show it measured; runs without show the smallest compute per batch predicted to keep "
            "AU >= 90 % (bench/au.py: the recorded batch arrivals replayed with a step after each batch, the "
            "loader's workers and prefetch depth as they run). au_predicted.png: AU against compute per batch.", "",
            table(["corpus", "layout", "cache", "workers", "batch", "compute ms/batch", "AU measured",
                   "needs for AU >= 90 %"], body, markdown=True), ""]


def repeats_section(all_rows: list[dict]) -> list[str]:
    reps = [r for r in all_rows if r["repeats_rel_range"] is not None]
    if not reps:
        return []
    body = [[r["corpus"], r["layout"], r["cache"], str(r["workers"]),
             ", ".join(f"{x:,.1f}" for x in replication(r["_run"])[0]), f"{r['repeats_rel_range']:.1%}",
             "yes" if r["repeats_rel_range"] <= REPLICATE else "NO"] for r in reps]
    ok = sum(r["repeats_rel_range"] <= REPLICATE for r in reps)
    return ["## Repeats (MLPerf's rule: runs within 5 %)", "",
            f"{ok} of {len(reps)} runs replicate within {REPLICATE:.0%} ((max - min) / min of the repeats' MB/s; "
            "warm-up repeats dropped).", "",
            table(["corpus", "layout", "cache", "workers", "MB/s per repeat", "spread", "within 5 %"], body,
                  markdown=True), ""]


def write_report(files, out: Path, extra: list[str] = ()) -> Path:
    results = [Results.load(f) for f in files]
    out = Path(out)
    for res in results:
        corpus = res.corpus.get("path")
        if corpus and inside(out, corpus):
            raise UsageError(f"--out {out} is inside the corpus directory {corpus}: results are never written "
                             f"onto the directory under test; choose another")
    check_writable("--out", out)  # made if missing; a file there, or no permission, is one line
    all_rows = rows(results)
    pngs = [p for p in (plot_throughput(all_rows, out / "throughput.png"),
                        plot_latency_cdf(all_rows, out / "latency_cdf.png"),
                        plot_workers(primary_view(all_rows), out / "workers.png"),
                        au_model.plot_au(au_entries(all_rows), out / "au_predicted.png"),
                        plot_capped(all_rows, out / "capped.png")) if p]
    write_csv(all_rows, out / "results.csv")
    meta = results[0].metadata
    host, fs, ver = meta.get("host", {}), meta.get("filesystem", {}), meta.get("versions", {})
    answer_lines = answer(results)
    md = ["# layoutbench report", "", "## Answer", "",
          "Per corpus and regime, the layouts ranked by MB/s (each its best worker setting), as a ratio to the "
          "best; \"within noise\" where its range (repeats, or epochs with one repeat) overlaps the best's. Then "
          "the compute per batch each layout needs for AU >= 90 % (predicted from its batch arrival times and "
          "prefetch depth; see the AU section). Then, per corpus, whether its runs were I/O-bound or "
          "decode-bound (see Read and decode).", ""] + [f"- {a}" for a in answer_lines] + [""]
    md += [
          f"Host {host.get('name')}: {host.get('cpu')}, {host.get('cores')} cores, "
          f"{fmt((host.get('ram_bytes') or 0) / 2**30, '.1f')} GiB RAM, kernel {host.get('kernel')}. "
          f"Filesystem {fs.get('fstype')} on {fs.get('source')} (device {fs.get('device')}, read-ahead "
          f"{fs.get('read_ahead_kb')} KiB). "
          + ", ".join(f"{k} {v}" for k, v in ver.items()) + ".", "",
          "Samples/s and MB/s are steady-state medians (epochs after each loader's first; cold runs open a "
          "new loader every epoch, so theirs include start-up); range = (max - min) / median over those "
          "epochs. x floor = MB/s over the fastest floor of the same layout's files at the same "
          "cache state and concurrency (see below). ttfb = time to the first batch of a loader's first epoch (worker start-up included). "
          "p99 batch = time the consumer waited for a batch; p99 sample = per-sample read+decode time from "
          "the timing epoch. resident = page-cache residency just before the epochs (cold: the highest, "
          "warm: the lowest, before or after). x memcpy = MB/s over one numpy copy's bandwidth; x pread = "
          "samples/s over single-threaded preads of one sample at random offsets, same cache state.", "",
          "## Throughput", "",
          table(MAIN_HEADER, [main_row(r) for r in all_rows], markdown=True), ""]
    if order := order_lines(all_rows):  # runs that did not fully shuffle: how random their order was
        md += ["## Order randomness", "", "Displacement = mean |reading position - stored position| over a full "
               "shuffle's; same shard = consecutive samples read from one shard (streaming layouts).", ""]
        md += [f"- {line}" for line in order] + [""]
    md += ["## Storage and I/O", "",
           table(["corpus", "layout", "cache", "workers", "x memcpy", "x pread", "bytes on disk", "files",
                  "read_bytes / payload", "read syscalls / sample", "CPU us / sample", "first epoch samples/s"],
                 [[r["corpus"], run_label(r), r["cache"], str(r["workers"]), fmt(r["memcpy_ratio"], ".2f"),
                   fmt(r["pread_ratio"], ".2f"), fmt(r["bytes_on_disk"]), fmt(r["files"]),
                   fmt(r["read_bytes_per_payload_byte"], ".3f"), fmt(r["syscr_per_sample"], ".2f"),
                   fmt(r["cpu_us_per_sample"], ",.1f"), fmt(r["first_epoch_samples_per_s"])] for r in all_rows],
                 markdown=True), ""]
    ck = [r for r in all_rows if r["checkpoint_writes"]]
    if ck:
        md += ["## Checkpoints", "", table(["corpus", "layout", "cache", "writes", "MB/s (write+fsync)", "read:write bytes"],
                                          [[r["corpus"], r["layout"], r["cache"], str(r["checkpoint_writes"]),
                                            fmt(r["checkpoint_mb_per_s"], ",.1f"), fmt(r["read_write_ratio"], ",.1f")]
                                           for r in ck], markdown=True), ""]
    md += split_section(all_rows, results)
    md += capped_section(all_rows)
    md += list(extra) + ([""] if extra else [])
    md += bound_section(all_rows, results)
    md += au_section(all_rows)
    md += repeats_section(all_rows)
    md += floors_section(results)
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    if not any(p.name == "workers.png" for p in pngs):
        md += ["(No throughput-against-workers plot: no run measured one layout at several worker counts.)", ""]
    notes = [n for res in results for n in res.notes]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Commands", ""] + [f"- `{' '.join(res.metadata.get('command', []))}` -> {f}" for f, res in zip(files, results)]
    md += ["", f"Files: {', '.join(str(f) for f in files)}; CSV: results.csv.", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path

"""Reports from results files: a summary table, report.md, a CSV and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from generator.errors import UsageError

from .result import Results, steady_epochs, summarize
from .config import check_writable, inside

CSV_FIELDS = ("corpus", "preset", "count", "sample_bytes", "layout", "kind", "cache", "workers", "worker_kind",
              "batch_size", "decode", "epochs", "repeats", "ranks", "samples_per_s", "samples_per_s_min",
              "samples_per_s_max", "mb_per_s", "floor_mb_per_s", "floor_ratio", "memcpy_ratio", "pread_ratio", "ttfb_s",
              "first_epoch_samples_per_s", "p50_ms", "p99_ms", "p99_9_ms", "max_ms", "sample_p50_ms",
              "sample_p99_ms", "cpu_us_per_sample", "read_bytes_per_payload_byte", "syscr_per_sample",
              "residency_min", "residency_max", "cache_ok", "bytes_on_disk", "files", "checkpoint_writes",
              "checkpoint_mb_per_s", "read_write_ratio", "shuffle", "displacement", "same_shard",
              "same_shard_shuffled")


def corpus_name(res: Results) -> str:
    spec = res.corpus.get("spec", {})
    return f"{spec.get('preset') or 'custom'}-{spec.get('count')}"


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
                "workers": c.workers, "worker_kind": c.worker_kind, "batch_size": c.batch_size, "decode": c.decode,
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
                "read_write_ratio": s["checkpoint"]["read_write_ratio"], "shuffle": c.shuffle,
                "displacement": s["order"]["displacement"], "same_shard": s["order"]["same_shard"],
                "same_shard_shuffled": s["order"]["same_shard_shuffled"], "_run": run, "_results": res, "_summary": s,
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


def main_row(r: dict) -> list[str]:
    workers = f"{r['workers']}{'' if r['kind'] == 'naive' else ' ' + r['worker_kind'][0]}" if r["workers"] else "0"
    resident = (f"{r['residency_max']:.0%}" if r["cache"] == "cold" else f"{r['residency_min']:.0%}"
                if r["residency_min"] is not None else "-")
    return [r["corpus"], r["layout"], r["cache"], workers, str(r["batch_size"]), fmt(r["samples_per_s"]), spread_pct(r),
            fmt(r["mb_per_s"], ",.1f"), fmt(r["floor_mb_per_s"], ",.0f"), fmt(r["floor_ratio"], ".2f"),
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
        pread = ", ".join(f"{p.cache} {p.samples_per_s:,.0f}/s" for p in f.pread)
        lines.append(f"floors {corpus_name(res)}: seq read MB/s: {seq}; pread {fmt(f.pread[0].sample_bytes if f.pread else None)} B: "
                     f"{pread}; memcpy {fmt(f.memcpy_mb_per_s)} MB/s; harness {fmt(f.null_us_per_sample, '.4f')} us/sample")
    return "\n".join(lines)


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
CACHE_COLORS = {"cold": "#4575b4", "warm": "#d73027", "asis": "#999999"}
CACHE_STYLES = {"cold": "--", "warm": "-", "asis": ":"}


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


def best_runs(all_rows: list[dict], corpus: str) -> dict[tuple[str, str], dict]:
    """One run per (layout, cache) of a corpus: the worker setting with the highest MB/s."""
    best = {}
    for r in all_rows:
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
            ax.annotate(f"{y:,.0f} ({y / ys[0]:.2f}x)", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
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
                        plot_workers(all_rows, out / "workers.png")) if p]
    write_csv(all_rows, out / "results.csv")
    meta = results[0].metadata
    host, fs, ver = meta.get("host", {}), meta.get("filesystem", {}), meta.get("versions", {})
    md = ["# layoutbench report", "",
          f"Host {host.get('name')}: {host.get('cpu')}, {host.get('cores')} cores, "
          f"{fmt((host.get('ram_bytes') or 0) / 2**30, '.1f')} GiB RAM, kernel {host.get('kernel')}. "
          f"Filesystem {fs.get('fstype')} on {fs.get('source')} (device {fs.get('device')}, read-ahead "
          f"{fs.get('read_ahead_kb')} KiB). "
          + ", ".join(f"{k} {v}" for k, v in ver.items()) + ".", "",
          "Samples/s and MB/s are steady-state medians (epochs after each loader's first; cold runs open a "
          "new loader every epoch, so theirs include start-up); range = (max - min) / median over those "
          "epochs. x floor = MB/s over the sequential-read floor of the same layout's files at the same "
          "cache state. ttfb = time to the first batch of a loader's first epoch (worker start-up included). "
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
                 [[r["corpus"], r["layout"], r["cache"], str(r["workers"]), fmt(r["memcpy_ratio"], ".2f"),
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
    md += list(extra) + ([""] if extra else [])
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

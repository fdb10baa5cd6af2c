"""The report's PNG plots (matplotlib, Agg), each written through save_figure: the verdict's
heatmap (each layout's ratio to the best, per corpus and regime), throughput by layout beside its floor, the batch
latency CDF, throughput against workers, epochs under a memory cap, and predicted AU against
compute per batch (bench.results.au).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.results import au as au_model
from bench.results import stats
from bench.results.outputs import PNG_SOFTWARE
from bench.results.result import steady_epochs

from .analysis import REGIMES, best_runs, fmt


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Every PNG of the report is written here, and only here: the figure saved to `path` (in
    write_report's staging directory: bench.results.outputs), marked as ours, and closed."""
    fig.savefig(path, dpi=110, format="png", metadata={"Software": PNG_SOFTWARE})
    _plt().close(fig)
    return path


def _layout_order() -> tuple[str, ...]:
    """Registered layouts in registration order, then their naive baselines."""
    from generator.layouts import layout_ids

    from bench.results.spec import naive_name

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
    return save_figure(fig, path)


def _grid(plt, n: int, height: float = 4.0):
    """Panels two to a row, so each stays readable however many corpora there are."""
    cols = min(2, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, height * rows + 0.8), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


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
    return save_figure(fig, path)


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
            parts = [e.capped for e in epochs]
            ax_hit.plot(xs, [c.hit_ratio if c is not None and c.hit_ratio is not None else np.nan for c in parts],
                        marker="o", color=color)
            ax_hit.plot(xs, [c.expected_hit_ratio if c is not None and c.expected_hit_ratio is not None else np.nan
                             for c in parts],
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


def au_entries(all_rows: list[dict]) -> list[tuple]:
    """(corpus, regime, layout, run) of each layout's best loader run, for the AU plot."""
    out = []
    loaders = [r for r in all_rows if r["kind"] == "loader"]
    for corpus in dict.fromkeys(r["corpus"] for r in all_rows):
        order = lambda kv: (REGIMES.index(kv[0][1]) if kv[0][1] in REGIMES else 9, kv[0][0])
        for (layout, cache), r in sorted(best_runs(loaders, corpus).items(), key=order):
            out.append((corpus, cache, layout, r["_run"]))
    return out


def plot_au(entries, path, target: float = au_model.AU_TARGET):
    """Predicted AU against compute per batch (log x), one panel per (corpus, regime), a line per
    layout; `entries` are (corpus, regime, layout, run). None when there is nothing to plot."""
    entries = [e for e in entries if au_model.epochs_for_prediction(e[3])]
    if not entries:
        return None
    plt = _plt()
    panels = list(dict.fromkeys((c, r) for c, r, _, _ in entries))
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 3.8 * rows + 0.6), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    grid = au_model.compute_grid()
    for ax, (corpus, regime) in zip(axes.flat, panels):
        for c, r, layout, run in entries:
            if (c, r) != (corpus, regime):
                continue
            ys = [au_model.predict(run, x) or 0.0 for x in grid]
            ax.plot(grid * 1e3, np.array(ys) * 100, label=layout)
        ax.axhline(target * 100, color="black", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_ylim(0, 102)
        ax.set_xlabel("compute per batch, ms (log scale)")
        ax.set_ylabel("predicted AU, %")
        ax.set_title(f"{corpus}, {regime}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Predicted accelerator utilization (dashed: {target:.0%})", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_verdict(v, path: Path) -> Path | None:
    """The verdict at a glance (v: bench.report.verdict.Verdict): a heatmap of each layout's MB/s
    over the best of its cell, layouts by (corpus, regime) cell, each annotated with its ratio; a
    star on the layouts within noise of the best; "not ok" where the layout's runs were left out;
    blank where not measured. None when no cell ranked a layout."""
    from .verdict import VERDICT_REGIMES

    cells = [c for c in v.cells() if c.ratios or c.excluded]
    if not any(c.ratios for c in cells):
        return None
    layouts = sorted({l for c in cells for l in (*c.ratios, *c.excluded)}, key=_layout_key)
    grid = np.full((len(layouts), len(cells)), np.nan)
    for j, c in enumerate(cells):
        for l, ratio in c.ratios.items():
            grid[layouts.index(l), j] = ratio
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.4, 2.4 + 1.05 * len(cells)), 2.0 + 0.42 * len(layouts)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for j, c in enumerate(cells):
        for i, l in enumerate(layouts):
            if l in c.ratios:
                ratio = c.ratios[l]
                ax.text(j, i, f"{ratio:.2f}" + ("*" if l in c.recommended else ""), ha="center", va="center",
                        fontsize=8, color="black" if ratio > 0.6 else "white")
            elif l in c.excluded:
                ax.text(j, i, "not ok", ha="center", va="center", fontsize=7, color="#b2182b")
    ax.set_yticks(range(len(layouts)))
    ax.set_yticklabels(layouts, fontsize=8)
    ax.set_xticks(range(len(cells)))
    ax.set_xticklabels([f"{c.corpus}\n{VERDICT_REGIMES[c.regime]}" + ("\n(bytes only)" if c.bytes_only else "")
                        for c in cells], fontsize=7, rotation=30, ha="right")
    ax.set_title("Each layout's MB/s over the best of its corpus and regime\n"
                 "(* within noise of the best; blank: not measured)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="ratio to the best")
    fig.tight_layout()
    return save_figure(fig, path)

"""Reports from results files: report.md (the verdict first: bench.report.verdict, its heatmap,
then the Answer and the evidence), the summary table `bench run` and
`make bench` print, and results.csv; the plots beside them come from bench.report.plots. Each
corpus's runs with a read/decode split (their timing epochs) get a line saying whether they were
I/O-bound or decode-bound (bench.results.result.SPLIT_RULE) and a table in "Read and decode".
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from generator.errors import LayoutbenchError, UsageError

from bench.results import au as au_model
from bench.results.outputs import PNG, REPORT, REPORT_MARK, Kind, Staging, csv_kind
from bench.results.result import SPLIT_RULE, Results
from bench.run.config import check_writable, inside

from .analysis import FLOOR_SLACK, REPLICATE, bounds, corpus_name, fmt, primary_view, replication, rows
from .plots import au_entries, plot_au, plot_capped, plot_latency_cdf, plot_throughput, plot_verdict, plot_workers
from .verdict import BOUND_WORDS, answer, fio_lines, fmt_ms, verdict, verdict_markdown

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
                       f"needed per steady epoch (over 1.2): see docs/methodology.md, Cache regimes")
        if forced:
            out.append("")
    small = [r for r in all_rows if r["_summary"].get("measures_page_cache")]
    if small:
        out += ["## The 5x rule", ""] + [
            f"- {r['corpus']} {r['layout']} {r['cache']}: corpus {r['_summary']['memory_ratio']:.2f}x the memory "
            f"available to it: measures the page cache, not storage" for r in small] + [""]
    return out


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
            "AU = emulated compute / running time per epoch (MLPerf), the first batch's wait included (an epoch here "
            "may be a few batches, where leaving it out would leave out nearly all the waiting). Runs with "
            "--compute-ms show it measured; runs without show the smallest compute per batch predicted to keep "
            "AU >= 90 % (bench/results/au.py: the recorded batch arrivals replayed with a step after each batch, the "
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


def write_markdown(text: str, path: Path) -> Path:
    """report.md is written here, and only here (in write_report's staging directory), its first
    line the mark that tells a report of ours (bench.results.outputs.REPORT_MARK)."""
    path.write_text(f"{REPORT_MARK}\n{text}")
    return path


def first_epoch_only(all_rows: list[dict]) -> list[str]:
    """A line naming the runs whose figures are their loader's first epochs (no epoch after it, as
    with --epochs 1): start-up included, not steady state; none when every run had one."""
    runs = [f"{r['corpus']} {run_label(r)} {r['cache']} w{r['workers']}" for r in all_rows
            if not r["steady_state"] and r["cache"] != "cold" and r["kind"] != "naive"]  # those are said above
    if not runs:
        return []
    return [f"Not steady state: {', '.join(runs)} had no epoch after their loader's first (e.g. --epochs 1), so "
            f"their figures are first-epoch medians, worker start-up included.", ""]


def output_kind(name: str) -> Kind:
    """What each file write_report makes is, for the check before it replaces anything."""
    if name == "report.md":
        return REPORT
    if name == "results.csv":
        return csv_kind(",".join(CSV_FIELDS))
    return PNG


HEATMAP = "verdict.png"


def write_report(files, out: Path, results: list[Results] | None = None, overwrite: bool = False) -> Path:
    """report.md, results.csv and the PNGs under `out` from results `files` (`results`: those
    files already loaded, in the same order). Returns report.md's path; report.md opens with
    bench.report.verdict.verdict(results). Everything is rendered into a staging directory first,
    then published: a file in `out` that this tool did not write is never replaced (unless
    `overwrite`), and a failure (a full disk) leaves `out` as it was (bench.results.outputs)."""
    results = [Results.load(f) for f in files] if results is None else list(results)
    out = Path(out)
    for res in results:
        corpus = res.corpus.get("path")
        if corpus and inside(out, corpus):
            raise UsageError(f"--out {out} is inside the corpus directory {corpus}: results are never written "
                             f"onto the directory under test; choose another")
    check_writable("--out", out)  # made if missing; a file there, or no permission, is one line
    with Staging(out, output_kind, overwrite) as stage:
        try:
            _render(files, stage.dir, results)
        except OSError as exc:  # a full disk while rendering: nothing of this report is left, out is as it was
            raise LayoutbenchError(f"cannot write the report under {out} ({exc.strerror}); nothing was replaced: "
                                   f"free space or choose another --out, and rerun") from None
        stage.publish()
    return out / "report.md"


def _render(files, out: Path, results: list[Results]) -> Path:
    """Every file of the report, written under `out`."""
    all_rows = rows(results)
    v = verdict(results)
    heatmap = plot_verdict(v, out / HEATMAP)
    pngs = [p for p in (plot_throughput(all_rows, out / "throughput.png"),
                        plot_latency_cdf(all_rows, out / "latency_cdf.png"),
                        plot_workers(primary_view(all_rows), out / "workers.png"),
                        plot_au(au_entries(all_rows), out / "au_predicted.png"),
                        plot_capped(all_rows, out / "capped.png")) if p]
    write_csv(all_rows, out / "results.csv")
    meta = results[0].metadata
    host, fs, ver = meta.get("host", {}), meta.get("filesystem", {}), meta.get("versions", {})
    answer_lines = answer(results)
    md = ["# layoutbench report", "", "## Verdict", ""] + verdict_markdown(v, heatmap.name if heatmap else None)
    md += ["## Answer", "",
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
          *first_epoch_only(all_rows),
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
    md += bound_section(all_rows, results)
    md += au_section(all_rows)
    md += repeats_section(all_rows)
    md += floors_section(results)
    md += ["## Plots", "", f"The verdict's heatmap ({HEATMAP}) is under the Verdict above." if heatmap else
           "(No verdict heatmap: no run of our loader was measured ok.)", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    if not any(p.name == "workers.png" for p in pngs):
        md += ["(No throughput-against-workers plot: no run measured one layout at several worker counts.)", ""]
    notes = [n for res in results for n in res.notes]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Commands", ""] + [f"- `{' '.join(res.metadata.get('command', []))}` -> {f}" for f, res in zip(files, results)]
    md += ["", f"Files: {', '.join(str(f) for f in files)}; CSV: results.csv.", ""]
    return write_markdown("\n".join(md), out / "report.md")

"""One flat row per run of some results files, and the rules every part of a report reads them by.

Contracts: a run above FLOOR_SLACK x its floor is flagged "floor too low" (the floor is wrong, not
the loader fast); two layouts are "within noise" when the throughput ranges of their repeats (or,
with one repeat, of their steady epochs) overlap (noise_range); runs replicate (MLPerf's rule) when
their repeats' MB/s lie within REPLICATE of each other ((max - min) / min: replication). Runs that
deliver payload bytes only (--decode no/both) are ranked apart from decoded ones ("payload bytes
only"), and the plots show the decoded runs of a corpus that has any (primary_view).
"""

from __future__ import annotations

from pathlib import Path

from bench.results.result import Results, steady_epochs, summarize

FLOOR_SLACK = 1.05  # a run above this x its floor: the floor is too low
REPLICATE = 0.05  # MLPerf: repeats within 5 %
FIO_SLACK = 0.25  # fio and our floor differing by more than this is reported
REGIMES = ("cold", "capped", "warm", "asis")  # the Answer's order; cold and warm always named


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
                "epochs": c.epochs, "repeats": c.repeats, "ranks": c.world, "steady_state": s["steady_state"],
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


def fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


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


def bounds(floors) -> list:
    """The bounding floor of each (layout, cache, streams) measured: the fastest way."""
    keys = dict.fromkeys((f.layout, f.cache, f.streams) for f in floors.at)
    return [floors.bound(*k) for k in keys]

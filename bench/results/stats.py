"""Statistics computed from raw measurements (never stored instead of them)."""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 99, 99.9)


def percentiles_ms(seconds) -> dict:
    """p50, p90, p99, p99_9 and max of raw latencies in seconds, in milliseconds; {} if none."""
    values = np.asarray(seconds, np.float64).ravel()
    if values.size == 0:
        return {}
    qs = np.percentile(values, PERCENTILES)
    out = {f"p{p:g}".replace(".", "_"): float(q) * 1e3 for p, q in zip(PERCENTILES, qs)}
    out["max"] = float(values.max()) * 1e3
    out["count"] = int(values.size)
    return out


def spread(values) -> dict:
    """Median and spread of repeated measurements: min, max, the interquartile range, and the
    range relative to the median (how far apart the repeats were)."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return {"n": 0, "median": None, "min": None, "max": None, "iqr": None, "rel_range": None}
    median = float(np.median(v))
    q1, q3 = np.percentile(v, (25, 75))
    return {"n": int(v.size), "median": median, "min": float(v.min()), "max": float(v.max()),
            "iqr": float(q3 - q1), "rel_range": float((v.max() - v.min()) / median) if median else None}


def median(values) -> float | None:
    v = np.asarray(values, np.float64).ravel()
    return float(np.median(v)) if v.size else None


def ratio(a, b) -> float | None:
    return float(a) / float(b) if a is not None and b else None

"""Summary statistics of latency samples: median and spread, never a single number."""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def percentile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted samples, q in [0, 100]."""
    if not sorted_xs:
        raise ValueError("no samples")
    pos = (len(sorted_xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(samples_s: Sequence[float]) -> dict[str, float]:
    """Median, p10/p90, mean, stdev (sample), CV (stdev/mean), min and max, all in seconds."""
    xs = sorted(float(x) for x in samples_s)
    if not xs:
        raise ValueError("no samples")
    mean = statistics.fmean(xs)
    stdev = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return {
        "latency_median_s": statistics.median(xs),
        "latency_p10_s": percentile(xs, 10),
        "latency_p90_s": percentile(xs, 90),
        "latency_mean_s": mean,
        "latency_stdev_s": stdev,
        "latency_cv": stdev / mean if mean > 0 else 0.0,
        "latency_min_s": xs[0],
        "latency_max_s": xs[-1],
        "n_samples": len(xs),
    }

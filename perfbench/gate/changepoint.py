"""Steps in a metric's history: where a series of runs changed level, by how much, how surely.

Detection is ruptures' PELT (a well-kept library; E-divisive is not hand-rolled here) on the log
of the values, scaled by a robust estimate of the run-to-run noise (the MAD of successive
differences, which a step barely moves), with a minimum segment length so a single spike is
never a step. Each candidate step is then tested as Apache Otava does, with a t-test between the
two segments around it (deterministic, unlike E-divisive's permutation test); steps that do not
reach the significance level are dropped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

MIN_SEGMENT = 5
P_MAX = 0.001
#: PELT penalty per change, in units of the noise variance times log(n) (a BIC-like choice).
PENALTY = 4.0


@dataclass
class Step:
    index: int  # first run of the new level
    before: float  # median of the segment before
    after: float  # median of the segment after
    change_pct: float
    p_value: float
    confidence: float  # 1 - p

    def as_dict(self) -> dict:
        return asdict(self)


def noise_sigma(logs) -> float:
    """Robust run-to-run noise of log values: MAD of successive differences / sqrt(2)."""
    import numpy as np

    d = np.diff(logs)
    if len(d) == 0:
        return 0.0
    mad = float(np.median(np.abs(d - np.median(d)))) * 1.4826
    return mad / math.sqrt(2)


def detect(values: Sequence[float], *, min_segment: int = MIN_SEGMENT, p_max: float = P_MAX,
           penalty: float = PENALTY) -> list[Step]:
    """Change points of a positive series (one value per run, oldest first)."""
    import numpy as np
    import ruptures as rpt

    x = np.log(np.asarray([v for v in values], dtype=float))
    n = len(x)
    if n < 2 * min_segment:
        return []
    sigma = noise_sigma(x) or float(np.std(x)) or 1e-12
    z = (x - np.median(x)) / sigma
    # A spike is clipped to 3 sigma around the rolling median (which follows a step but not a
    # spike): one slow run can neither make a segment nor hide a step in the t-test.
    trend = _rolling_median(z, min_segment)
    z = np.clip(z - trend, -3, 3) + trend
    bkps = rpt.Pelt(model="l2", min_size=min_segment, jump=1).fit(z.reshape(-1, 1)).predict(
        pen=penalty * math.log(n))
    edges = [0, *bkps[:-1], n]
    return _tested(x, z * sigma + np.median(x), edges, p_max)


def _rolling_median(z, k: int):
    import numpy as np

    half = k // 2
    pad = np.pad(z, half, mode="edge")
    return np.array([np.median(pad[i:i + 2 * half + 1]) for i in range(len(z))])


def _tested(x, clipped, edges: list[int], p_max: float) -> list[Step]:
    """Keep the steps whose neighbouring segments differ (Welch t-test on the spike-clipped logs,
    p < p_max); sizes are the medians of the real values."""
    import numpy as np
    from scipy.stats import ttest_ind

    out = []
    for i in range(1, len(edges) - 1):
        a, b = x[edges[i - 1]:edges[i]], x[edges[i]:edges[i + 1]]
        p = float(ttest_ind(clipped[edges[i - 1]:edges[i]], clipped[edges[i]:edges[i + 1]],
                            equal_var=False).pvalue)
        if not math.isfinite(p):
            p = 0.0 if abs(np.median(b) - np.median(a)) > 0 else 1.0
        if p < p_max:
            before, after = float(np.exp(np.median(a))), float(np.exp(np.median(b)))
            out.append(Step(edges[i], before, after, (after / before - 1) * 100, p, 1 - p))
    return out


def series(runs: list[dict], metric: str, point: str) -> "object":
    """One point's metric over runs as a DataFrame: created_at, run_id, commit, branch, value."""
    import statistics

    import pandas as pd

    from perfbench.gate.compare import point_key, values

    rows = []
    for run in runs:
        for p in run["points"]:
            if p.get("status") == "ok" and point_key(p) == point:
                vals = values(p, metric)
                if vals:
                    subj = run.get("subject") or {}
                    rows.append({"created_at": run["created_at"], "run_id": run["run_id"],
                                 "commit": subj.get("commit") or run.get("commit"), "branch": subj.get("branch"),
                                 "value": statistics.median(vals)})
    return pd.DataFrame(rows, columns=["created_at", "run_id", "commit", "branch", "value"])

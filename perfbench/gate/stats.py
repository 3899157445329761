"""One benchmark point compared between a base and a candidate: a verdict with known error rates.

Why these statistics (asv, nvbench, Bencher and Conbench are the anchors; see docs/ci.md):

* the ratio of medians, with a two-level bootstrap confidence interval: runs are resampled first,
  then samples within each run. Samples of one run share that run's machine state, so resampling
  samples alone would call every run-to-run wobble significant (asv's A/A ratios of 0.6-1.5);
* Mann-Whitney U on the raw samples, as asv does, and an effect size (Hodges-Lehmann shift and
  Cliff's delta) so a tiny but "significant" change reads as tiny;
* a minimum effect: the larger of the user's threshold and the measured noise floor. A change
  below it is never a regression, however small its p-value; it is `ambiguous`.

Verdicts (nvbench's robust compare, by name): `same` (not significant), `slower` / `faster`
(significant and at least the minimum effect; for a metric where higher is better, slower means
it dropped), `ambiguous` (significant but below the minimum effect, or too few samples for the
test to reach the significance level at all).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

VERDICTS = ("same", "faster", "slower", "ambiguous")
#: Default significance level of the Mann-Whitney test and 1 - level of the confidence interval.
ALPHA = 0.01
N_BOOT = 2000
#: A worker pair whose ratio sits this far (log scale) from the other pairs' median, and more than
#: OUTLIER_MADS robust deviations, is set aside (at most a third of the pairs): a process can
#: settle 10-20% slower for its whole life (scripts/bench_gate_pairs.py, docs/ci.md).
OUTLIER_PAIR = 0.04
OUTLIER_MADS = 3.0


@dataclass
class Comparison:
    """The comparison of one point and metric. Ratios are candidate / base."""

    n_base: int
    n_cand: int
    groups_base: int
    groups_cand: int
    median_base: float | None
    median_cand: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    change_pct: float | None  # (ratio - 1) x 100: the metric's own change, signed
    worse_pct: float | None  # how much worse the candidate is, in % (negative: better)
    p_value: float | None
    hl_shift: float | None  # Hodges-Lehmann: median of candidate - base differences, metric units
    cliffs_delta: float | None
    min_effect_pct: float
    verdict: str
    reason: str
    test: str = "mann-whitney"
    mw_p_value: float | None = None  # Mann-Whitney U on the raw samples, whatever decided
    pairs_set_aside: list[float] | None = None  # interleaved: outlier worker pairs' ratios, left out
    pair_ratios: list[float] | None = None  # interleaved: every worker pair's own ratio, in order

    def as_dict(self) -> dict:
        return asdict(self)


def min_possible_p(n1: int, n2: int) -> float:
    """The smallest two-sided p-value Mann-Whitney U can give with these sample sizes."""
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, math.exp(math.log(2.0) - math.log(math.comb(n1 + n2, n1))))


def _pad(groups: Sequence[Sequence[float]]):
    """Groups of unequal length as one NaN-padded 2-D array plus their lengths."""
    import numpy as np

    lens = np.array([len(g) for g in groups])
    out = np.full((len(groups), int(lens.max())), np.nan)
    for i, g in enumerate(groups):
        out[i, :len(g)] = g
    return out, lens


def _boot_medians(padded, lens, rows, rng):
    """Pooled medians of bootstrap replicates: `rows` (B x G) picks groups, then each picked group
    is resampled within itself to its own length."""
    import numpy as np

    n = lens[rows]  # B x G
    width = padded.shape[1]
    u = rng.random((rows.shape[0], rows.shape[1], width))
    idx = np.minimum((u * n[..., None]).astype(int), n[..., None] - 1)
    vals = padded[rows[..., None], idx]
    vals[np.arange(width)[None, None, :] >= n[..., None]] = np.nan
    return np.nanmedian(vals.reshape(rows.shape[0], -1), axis=1)


def bootstrap_ratio_ci(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], *,
                       paired: bool = False, confidence: float = 1 - ALPHA, n_boot: int = N_BOOT,
                       seed: int = 0) -> tuple[float, float]:
    """Two-level bootstrap interval of median(cand) / median(base). `paired`: the groups are
    interleaved rounds, resampled together so each round's machine state cancels out."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pb, lb = _pad(base)
    pc, lc = _pad(cand)
    rows_b = rng.integers(0, len(base), (n_boot, len(base)))
    rows_c = rows_b if paired else rng.integers(0, len(cand), (n_boot, len(cand)))
    ratios = _boot_medians(pc, lc, rows_c, rng) / _boot_medians(pb, lb, rows_b, rng)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(ratios[np.isfinite(ratios)], [tail, 100 - tail])
    return float(lo), float(hi)


def hodges_lehmann(base: Sequence[float], cand: Sequence[float], max_pairs: int = 1_000_000) -> float:
    """Median of all candidate - base differences (a subsample of them past `max_pairs`)."""
    import numpy as np

    b, c = np.asarray(base, float), np.asarray(cand, float)
    if len(b) * len(c) > max_pairs:
        rng = np.random.default_rng(0)
        return float(np.median(rng.choice(c, max_pairs) - rng.choice(b, max_pairs)))
    return float(np.median(np.subtract.outer(c, b)))


def compare_groups(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], *,
                   higher_is_better: bool = False, min_effect: float = 0.05, alpha: float = ALPHA,
                   paired: bool = False, clusters: int = 1, seed: int = 0) -> Comparison:
    """Compare samples grouped by run (or by interleaved round). `min_effect` is a fraction.
    `clusters`: paired rounds come from this many worker pairs, in equal consecutive shares."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    base = [list(map(float, g)) for g in base if len(g)]
    cand = [list(map(float, g)) for g in cand if len(g)]
    b = np.concatenate(base) if base else np.array([])
    c = np.concatenate(cand) if cand else np.array([])
    empty = Comparison(len(b), len(c), len(base), len(cand), None, None, None, None, None, None, None,
                       None, None, None, min_effect * 100, "ambiguous", "")
    if len(b) == 0 or len(c) == 0:
        empty.reason = "no samples on one side"
        return empty
    mb, mc = float(np.median(b)), float(np.median(c))
    empty.median_base, empty.median_cand = mb, mc
    if mb <= 0 or mc <= 0:
        empty.reason = "a median is zero or negative: no ratio"
        return empty
    ratio = mc / mb
    u = mannwhitneyu(c, b, alternative="two-sided")
    delta = 2 * float(u.statistic) / (len(b) * len(c)) - 1
    per_pair, aside = None, []
    if paired and len(base) == len(cand) and len(base) >= 2:
        ratio, (lo, hi), p, test, per_pair, aside = _paired(base, cand, alpha, seed, clusters)
    else:
        lo, hi = bootstrap_ratio_ci(base, cand, confidence=1 - alpha, seed=seed)
        p, test = float(u.pvalue), "mann-whitney"
        if all(len(g) == 1 for g in base + cand) and len(base) >= 3:
            p, test = _prediction_p(b, c), "prediction-t"  # one value per run: memory, energy
    worse = (1 / ratio - 1) if higher_is_better else (ratio - 1)
    out = Comparison(len(b), len(c), len(base), len(cand), mb, mc, ratio, lo, hi, (ratio - 1) * 100,
                     worse * 100, p, hodges_lehmann(b, c), delta, min_effect * 100, "", "", test, float(u.pvalue))
    out.verdict, out.reason = _verdict(out, alpha, min_effect)
    out.pair_ratios = per_pair
    if aside:
        out.pairs_set_aside = aside
        out.reason += (f"; {len(aside)} of {clusters} worker pairs set aside as outliers (ratio "
                       + ", ".join(f"{r:.3f}" for r in aside) + ")")
    return out


def _paired(base, cand, alpha: float, seed: int, clusters: int = 1):
    """Interleaved rounds: the ratio is the median over rounds of each round's ratio of medians
    (so the machine state a round shares cancels), its test Wilcoxon's signed-rank test on the
    rounds' log ratios (the paired counterpart of Mann-Whitney). The interval is a bootstrap over
    worker pairs, then rounds within each: two processes of the same code differ by a few percent
    (memory layout, placement), an effect that only fresh pairs of processes average out. Outlier
    pairs (`outlier_pairs`) are left out of all three. Also returns every pair's ratio and the
    ratios of those set aside."""
    import numpy as np
    from scipy.stats import wilcoxon

    d = np.log([np.median(c) / np.median(b) for b, c in zip(base, cand)])
    k = clusters if clusters > 1 and len(d) % clusters == 0 else 1
    per = len(d) // k
    per_pair = [float(np.exp(v)) for v in np.median(d.reshape(k, per), axis=1)]
    aside = outlier_pairs(d.reshape(k, per))
    if aside:
        keep = [j for j in range(k) if j not in aside]
        d, k = d.reshape(k, per)[keep].ravel(), len(keep)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, k, (N_BOOT, k))[..., None] * per + rng.integers(0, per, (N_BOOT, k, per))
    boots = np.median(d[picks.reshape(N_BOOT, -1)], axis=1)
    tail = alpha / 2 * 100
    lo, hi = np.exp(np.percentile(boots, [tail, 100 - tail]))
    p = 1.0 if not np.any(d) else float(wilcoxon(d).pvalue)
    return (float(np.exp(np.median(d))), (float(lo), float(hi)), p, "wilcoxon-paired", per_pair,
            [float(np.exp(v)) for v in aside.values()])


def outlier_pairs(d_by_pair) -> dict[int, float]:
    """{pair index: its median log ratio} for the worker pairs that sit apart from the rest: more
    than OUTLIER_PAIR and OUTLIER_MADS robust deviations from the median pair, at most a third
    of the pairs (none below 4). Such a pair holds a process that settled slow for its life; a
    true change moves every pair alike, so setting the odd one aside never hides it."""
    import numpy as np

    k = len(d_by_pair)
    if k < 4:
        return {}
    per_pair = np.median(d_by_pair, axis=1)
    dev = np.abs(per_pair - np.median(per_pair))
    bound = max(OUTLIER_PAIR, OUTLIER_MADS * 1.4826 * float(np.median(dev)))  # 1.4826 MAD = 1 SD (normal)
    worst = [int(j) for j in np.argsort(-dev, kind="stable")[: k // 3]]
    return {j: float(per_pair[j]) for j in sorted(worst) if dev[j] > bound}


def _prediction_p(base, cand) -> float:
    """Two-sided p of the candidate runs' mean log value against the spread of the base runs
    (a t prediction test, Conbench's lookback z-score done with Student's t). For metrics with
    one value per run, where Mann-Whitney needs dozens of runs to reach any significance."""
    import numpy as np
    from scipy.stats import t

    lb, lc = np.log(base), np.log(cand)
    s = float(np.std(lb, ddof=1))
    diff = float(lc.mean() - lb.mean())
    if s == 0:
        return 0.0 if abs(diff) > 1e-12 else 1.0
    return float(2 * t.sf(abs(diff) / (s * math.sqrt(1 / len(lc) + 1 / len(lb))), len(lb) - 1))


def _verdict(cmp: Comparison, alpha: float, min_effect: float) -> tuple[str, str]:
    floor_p = {"prediction-t": 0.0, "wilcoxon-paired": math.ldexp(2.0, -cmp.groups_base)}.get(
        cmp.test, min_possible_p(cmp.n_base, cmp.n_cand))
    if floor_p >= alpha:
        return "ambiguous", (f"too few samples ({cmp.n_base} vs {cmp.n_cand}): the test cannot reach "
                             f"p < {alpha:g} (its smallest p is {floor_p:.3g})")
    excludes_one = cmp.ci_low > 1 or cmp.ci_high < 1
    if cmp.p_value >= alpha or not excludes_one:
        why = f"p = {cmp.p_value:.2g}" if cmp.p_value >= alpha else "the confidence interval holds 1"
        return "same", f"no significant change ({why})"
    if abs(cmp.worse_pct) < min_effect * 100:
        return "ambiguous", (f"significant (p = {cmp.p_value:.2g}) but {abs(cmp.worse_pct):.1f}% is below "
                             f"the minimum effect of {min_effect * 100:.1f}%")
    if cmp.worse_pct > 0:
        return "slower", f"{cmp.worse_pct:.1f}% worse (p = {cmp.p_value:.2g})"
    return "faster", f"{-cmp.worse_pct:.1f}% better (p = {cmp.p_value:.2g})"


def aa_far_end(ratio: float, ci_low: float, ci_high: float) -> float:
    """The largest change an A/A comparison could not rule out: the far end of its interval
    (or the ratio itself, if further). `gate calibrate` stores the largest over its rounds as
    the noise floor, below which the gate never reports a regression."""
    return max(abs(ci_low - 1), abs(ci_high - 1), abs(ratio - 1))


def prediction_floor(run_values: Sequence[float], confidence: float = 1 - ALPHA) -> float | None:
    """How far one new run may land from the mean of `run_values` by chance (fraction, two-sided
    prediction interval on log values). The history's own spread: None below 3 runs."""
    import numpy as np
    from scipy.stats import t

    v = np.log([x for x in run_values if x and x > 0])
    if len(v) < 3:
        return None
    s = float(np.std(v, ddof=1))
    half = float(t.ppf(1 - (1 - confidence) / 2, len(v) - 1)) * s * math.sqrt(1 + 1 / len(v))
    return math.exp(half) - 1


def geomean(ratios: Sequence[float]) -> float | None:
    """Geometric mean of ratios (None for none)."""
    xs = [r for r in ratios if r and r > 0 and math.isfinite(r)]
    return math.exp(sum(math.log(r) for r in xs) / len(xs)) if xs else None

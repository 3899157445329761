"""The comparison statistics: verdicts, intervals, effect sizes, too-few-samples, geomean."""

from __future__ import annotations

import numpy as np
import pytest

from perfbench.gate.stats import compare_groups, geomean, min_possible_p, outlier_pairs, prediction_floor


def _g(level, n=30, noise=0.01, seed=0, groups=1):
    rng = np.random.default_rng(seed)
    return [(level * np.exp(rng.normal(0, noise, n))).tolist() for _ in range(groups)]


def test_a_clear_slowdown_is_slower_with_an_interval_around_it():
    c = compare_groups(_g(1.0, seed=1), _g(1.2, seed=2), min_effect=0.05)
    assert c.verdict == "slower" and c.ci_low > 1.1 and c.ci_high < 1.3 and c.p_value < 1e-6
    assert c.cliffs_delta == pytest.approx(1.0) and c.hl_shift == pytest.approx(0.2, abs=0.02)


def test_same_code_is_same():
    assert compare_groups(_g(1.0, seed=1), _g(1.0, seed=2), min_effect=0.05).verdict == "same"


def test_significant_but_below_the_minimum_effect_is_ambiguous():
    c = compare_groups(_g(1.0, n=400, noise=0.002, seed=1), _g(1.01, n=400, noise=0.002, seed=2), min_effect=0.05)
    assert c.verdict == "ambiguous" and "below the minimum effect" in c.reason


def test_too_few_samples_is_ambiguous_whatever_the_ratio():
    c = compare_groups([[1.0, 1.0]], [[3.0, 3.0]], min_effect=0.05)
    assert c.verdict == "ambiguous" and "too few samples" in c.reason
    assert min_possible_p(2, 2) == pytest.approx(2 / 6)


def test_higher_is_better_reverses_the_direction():
    c = compare_groups(_g(100, seed=1), _g(80, seed=2), higher_is_better=True, min_effect=0.05)
    assert c.verdict == "slower" and c.worse_pct == pytest.approx(25, abs=2)


def test_run_level_noise_widens_the_two_level_interval():
    """Five base runs at different levels: the interval must cover the between-run spread."""
    rng = np.random.default_rng(0)
    base = [(lvl * np.exp(rng.normal(0, 0.005, 30))).tolist() for lvl in (0.9, 1.0, 1.1, 0.95, 1.05)]
    flat = compare_groups([sum(base, [])], _g(1.0, seed=3), min_effect=0.0)
    nested = compare_groups(base, _g(1.0, seed=3), min_effect=0.0)
    assert (nested.ci_high - nested.ci_low) > 2 * (flat.ci_high - flat.ci_low)


def test_paired_rounds_cancel_a_drifting_machine():
    """Rounds drift by +-20% but both sides share each round: the paired interval stays narrow."""
    rng = np.random.default_rng(0)
    drift = [0.8, 1.2, 0.9, 1.1, 1.0, 0.85, 1.15, 0.95, 1.05, 0.9]
    base = [(d * np.exp(rng.normal(0, 0.01, 20))).tolist() for d in drift]
    cand = [(d * 1.1 * np.exp(rng.normal(0, 0.01, 20))).tolist() for d in drift]
    paired = compare_groups(base, cand, paired=True, min_effect=0.05)
    unpaired = compare_groups(base, cand, paired=False, min_effect=0.05)
    assert paired.verdict == "slower" and paired.ci_low > 1.05
    assert (paired.ci_high - paired.ci_low) < (unpaired.ci_high - unpaired.ci_low)


def test_one_value_per_run_uses_the_prediction_test():
    c = compare_groups([[100.0], [100.5], [99.5], [100.2]], [[110.0]], min_effect=0.02)
    assert c.test == "prediction-t" and c.verdict == "slower"
    assert compare_groups([[100.0], [100.0], [100.0]], [[100.0]], min_effect=0.02).verdict == "same"


def test_prediction_floor_and_geomean():
    assert prediction_floor([1.0, 1.0]) is None
    assert 0.05 < prediction_floor([1.0, 1.02, 0.98, 1.01, 0.99]) < 0.15
    assert geomean([2.0, 0.5]) == pytest.approx(1.0) and geomean([]) is None


def _pairs(ratio: float, biases, rounds: int = 30, seed: int = 0):
    """Interleaved rounds from len(biases) worker pairs: each pair's candidate off by its bias."""
    rng = np.random.default_rng(seed)
    base, cand = [], []
    for bias in biases:
        for _ in range(rounds):
            lvl = rng.uniform(0.9, 1.1)  # the round's machine state, shared by both sides
            base.append((lvl * np.exp(rng.normal(0, 0.01, 5))).tolist())
            cand.append((lvl * ratio * bias * np.exp(rng.normal(0, 0.01, 5))).tolist())
    return base, cand


def test_a_worker_pair_that_settled_slow_is_set_aside():
    """One of six pairs holds a base process 14% slow for life: a true +5% must still be seen,
    and the report names the pair it left out."""
    base, cand = _pairs(1.05, [1.0, 1.005, 0.995, 1 / 1.14, 1.0, 1.01])
    c = compare_groups(base, cand, paired=True, clusters=6, min_effect=0.03)
    assert c.verdict == "slower" and c.ci_low > 1.02, c
    assert c.pairs_set_aside and c.pairs_set_aside[0] < 0.95 and "set aside" in c.reason
    assert 1.04 < c.ratio < 1.06


def test_pairs_that_agree_are_all_kept_and_aa_stays_same():
    base, cand = _pairs(1.0, [1.0, 1.01, 0.99, 1.0, 1.005, 0.995], seed=1)
    c = compare_groups(base, cand, paired=True, clusters=6, min_effect=0.03)
    assert c.pairs_set_aside is None and c.verdict in ("same", "ambiguous")
    base, cand = _pairs(1.0, [1.0, 1.13, 1.0, 0.99, 1.0, 1.01], seed=2)  # A/A with one slow candidate process
    c = compare_groups(base, cand, paired=True, clusters=6, min_effect=0.03)
    assert c.verdict in ("same", "ambiguous") and c.pairs_set_aside


def test_outlier_pairs_needs_four_pairs_and_sets_aside_at_most_a_third():
    assert outlier_pairs(np.log([[1.0], [1.2], [1.0]])) == {}
    assert list(outlier_pairs(np.log([[1.0], [1.2], [1.0], [1.01]]))) == [1]
    assert len(outlier_pairs(np.log([[1.0], [1.2], [0.8], [1.01], [1.0], [0.99]]))) == 2
    assert outlier_pairs(np.log([[1.0], [1.2], [0.8], [1.3], [1.0], [0.99]])) == {}  # half deviate: just noisy

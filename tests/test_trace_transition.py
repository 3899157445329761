"""Batch-sweep transition: TKLQT leaving its baseline, gpu_util crossing 0.5, latency knee."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbench.errors import InputError
from perfbench.trace import analyze, detect_transition
from perfbench.trace.transition import latency_knee, methods_agree, tklqt_transition, util_transition

H100 = Path(__file__).resolve().parent / "fixtures" / "traces" / "h100"
README_MEDIANS_MS = {1: 16.28, 2: 20.01, 4: 20.82, 8: 21.19, 16: 22.36, 32: 25.45, 64: 48.58, 128: 94.57}


@pytest.fixture(scope="module")
def sweep():
    return [analyze(H100 / f"llama1b_prefill_eager_b{b}.json.gz") for b in (1, 16, 64)]


def test_h100_sweep_transition_from_traces(sweep):
    tr = detect_transition([1, 16, 64], sweep)
    # README: latency flat to b16, then grows; b16 still has gpu_util ~0.34
    assert tr.transition_batch == 64
    assert tr.methods == {"tklqt": 64, "gpu_util": 64, "latency": 64}
    assert tr.agree and tr.latency_source == "trace"


def test_h100_sweep_transition_with_timed_medians(sweep):
    tr = detect_transition([1, 16, 64], sweep, [README_MEDIANS_MS[b] * 1e3 for b in (1, 16, 64)])
    assert tr.methods["latency"] == 64 and tr.latency_source == "timed"
    assert tr.as_dict() == {"transition_batch": 64, "methods": {"tklqt": 64, "gpu_util": 64, "latency": 64}, "agree": True}


def test_latency_knee_on_the_full_readme_sweep():
    bs = list(README_MEDIANS_MS)
    # b1 -> b2 jumps 23% (different kernels) and b32 is 1.56x b1, but the knee is b64
    assert latency_knee(bs, [README_MEDIANS_MS[b] for b in bs]) == 64


def test_tklqt_rule():
    assert tklqt_transition([1, 2, 4, 8], [100, 150, 280, 5000]) == (8, 100)
    assert tklqt_transition([1, 2, 4, 8], [100, 90, 280, 5000]) == (4, 90)  # baseline = min of first two
    assert tklqt_transition([1, 2], [100, 200]) == (None, 100)
    assert tklqt_transition([1, 2], [None, None]) == (None, None)


def test_util_rule():
    assert util_transition([1, 2, 4], [0.1, 0.5, 0.9]) == 2
    assert util_transition([1, 2, 4], [None, 0.2, 0.3]) is None


def test_agree_rule():
    bs = [1, 2, 4, 8]
    assert methods_agree(bs, {"a": 4, "b": 4, "c": 8})  # within one sweep step
    assert not methods_agree(bs, {"a": 2, "b": 8})
    assert methods_agree(bs, {"a": 8, "b": None})  # none = beyond the last point
    assert not methods_agree(bs, {"a": 2, "b": None})
    assert methods_agree(bs, {"a": 2, "b": None}, evaluated=["a"])  # b had no data


def test_dict_points_and_errors():
    pts = [{"tklqt_us": 10, "gpu_util": 0.1}, {"tklqt_us": 11, "gpu_util": 0.2}, {"tklqt_us": 100, "gpu_util": 0.7}]
    tr = detect_transition([1, 2, 4], pts)
    assert tr.methods == {"tklqt": 4, "gpu_util": 4, "latency": None}
    assert tr.agree and tr.latency_source is None
    with pytest.raises(InputError):
        detect_transition([1, 2], pts)
    with pytest.raises(InputError):
        detect_transition([4, 2, 1], pts)
    with pytest.raises(InputError):
        detect_transition([1, 2, 4], pts, [1.0])


def test_cpu_only_points_do_not_crash():
    pts = [{"tklqt_us": None, "gpu_util": None}] * 2
    tr = detect_transition([1, 2], pts)
    # nothing to judge: no method evaluated, so the nulls mean "not judged", and agree is vacuous
    assert tr.transition_batch is None and tr.evaluated == [] and tr.as_full_dict()["evaluated"] == []
    assert tr.agree

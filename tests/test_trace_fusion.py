"""Fusion candidates from launch order, and the launch saving of a compiled run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfbench.trace import analyze, compare_launch_saving, fusion_candidates

H100 = Path(__file__).resolve().parent / "fixtures" / "traces" / "h100"


def _trace(tmp_path: Path, names: list[str]) -> Path:
    """One launch per kernel, 100 us apart; launch call i takes 1 + (i % 4) us, and its kernel
    starts 2 us after the call returns (that queue time is not what a fusion saves)."""
    ev = []
    for i, n in enumerate(names):
        t = 100.0 * i
        ev.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": t, "dur": 1 + i % 4, "args": {"correlation": i}})
        ev.append({"ph": "X", "cat": "kernel", "name": n, "pid": 0, "tid": 7, "ts": t + 3 + i % 4, "dur": 1, "args": {"correlation": i}})
    p = tmp_path / "chain.json"
    p.write_text(json.dumps({"traceEvents": ev}))
    return p


def test_repeated_chain_is_the_top_candidate(tmp_path):
    names = ["A", "B", "C", "x", "A", "B", "C", "y", "A", "B", "C", "z"]
    a = analyze(_trace(tmp_path, names))
    fc = fusion_candidates(a, max_len=3)
    top = fc.iloc[0]
    assert top["chain"] == ("A", "B", "C") and top["length"] == 3
    assert top["occurrences"] == 3 and top["score"] == 6 and top["launches_saved"] == 6
    # saving = launch-call times of B and C (2 and 3 us) in each of the 3 occurrences; their queue
    # time (2 us each) is not saved
    assert top["launch_saving_us"] == pytest.approx(3 * (2 + 3))
    # kernels claimed by the top chain are not offered again as its sub-chains
    assert len(fc) == 1


def test_equal_scores_rank_by_launch_saving(tmp_path):
    # "A B C" and "B C x" both occur 3 times; "B C x" saves more launch time (calls 3 + 4 vs 2 + 3 us)
    a = analyze(_trace(tmp_path, ["A", "B", "C", "x"] * 3 + ["y"]))
    fc = fusion_candidates(a, max_len=3)
    assert fc.iloc[0]["chain"] == ("B", "C", "x")
    assert fc.iloc[0]["launch_saving_us"] == pytest.approx(3 * (3 + 4))


def test_occurrences_do_not_overlap(tmp_path):
    a = analyze(_trace(tmp_path, ["A"] * 7))
    fc = fusion_candidates(a, max_len=2)
    assert fc.iloc[0]["chain"] == ("A", "A") and fc.iloc[0]["occurrences"] == 3


def test_real_eager_trace_has_candidates():
    a = analyze(H100 / "llama1b_prefill_eager_b1.json.gz")
    fc = fusion_candidates(a, top=5)
    assert len(fc) == 5
    assert (fc["occurrences"] >= 2).all() and (fc["launch_saving_us"] > 0).all()
    assert fc["score"].is_monotonic_decreasing
    assert fc["launch_saving_us"].sum() < a.figures.launch_call_us


def test_gpu_bound_savings_are_launch_calls_not_queueing():
    """At b64 on the H100 the GPU is the bottleneck: TKLQT is mostly queueing behind earlier
    kernels, which a fused kernel would wait just the same. Savings stay within the launch calls."""
    a = analyze(H100 / "llama1b_prefill_eager_b64.json.gz")
    fc = fusion_candidates(a, top=10)
    assert len(fc) and (fc["launch_saving_us"] > 0).all()
    assert fc["launch_saving_us"].sum() <= a.figures.launch_call_us
    assert a.figures.launch_call_us < 0.01 * a.figures.tklqt_us


def test_compare_launch_saving_eager_vs_compiled():
    eager = analyze(H100 / "llama1b_prefill_eager_b1.json.gz")
    compiled = analyze(H100 / "llama1b_prefill_compiled_b1.json.gz")
    res = compare_launch_saving(eager, compiled)
    assert res["eager_launches"] == 673 and res["compiled_launches"] == 2
    assert res["launches_saved"] == 671
    assert res["tklqt_saved_us"] == pytest.approx(eager.figures.tklqt_us - compiled.figures.tklqt_us)
    assert res["tklqt_saved_ratio"] > 0.9
    assert res["compiled_graph_launches"] == 1
    # figures dicts work too (e.g. rows read back from a results store)
    assert compare_launch_saving(eager.as_dict(), compiled.as_dict()) == res

"""TKLQT and per-run figures: a hand-checkable synthetic trace, then the real H100 and public traces."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from perfbench.trace import FIGURE_KEYS, analyze, operator_table, profiler_overhead, top_kernels
from perfbench.trace.operators import NO_OP, attribute, enclosing

TRACES = Path(__file__).resolve().parent / "fixtures" / "traces"
H100 = TRACES / "h100"
PUBLIC = TRACES / "public"


def _x(cat, name, ts, dur, pid=1, tid=1, corr=None):
    e = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}
    if corr is not None:
        e["args"] = {"correlation": corr}
    return e


def _kernel(name, ts, dur, corr, kind="kernel", stream=7):
    return _x(kind, name, ts, dur, pid=0, tid=stream, corr=corr)


@pytest.fixture
def synthetic(tmp_path) -> Path:
    """Numbers chosen to be checked by hand (us, relative to 1000):

    call                    call span   first GPU start   gap   launch part   queue part
    cudaLaunchKernel #1     10..15      K1 30             20    5             15
    cudaLaunchKernel #2     40..44      K2 38 (skew!)      0    0              0   -> negative_clamped
    cudaGraphLaunch  #3     60..70      G1 75 (G2, G3)    15   10              5   (only G1 counts)
    cudaMemsetAsync  #4    100..102     M 101              1    1              0   (GPU starts before call end)
    (none)           #99                 O 120                                     -> orphan
    TKLQT = 36 = 16 launch-call + 20 queue.
    GPU busy: K1 30-50 (K2 38-48 inside), G 75-90, M 101-102, O 120-125 -> 41; span 30..125 = 95.
    Idle gaps: 50-75 (next G1, its call ended at 70 > 50: host wait 70 - 50 = 20; the GPU's pick-up
    70-75 is not), 90-101 (next M, call ends 102 > 90, capped at the gap's end: 11), 102-120 (next is
    an orphan: not host wait). idle_host_wait = 31.
    """
    t = 1000.0
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "python"}},
        _x("python_function", "nn.Module: Linear_0", t + 0, 56),
        _x("python_function", "torch/nn/modules/linear.py(124): forward", t + 0, 56),
        _x("cpu_op", "aten::linear", t + 0, 55),
        _x("cpu_op", "aten::mm", t + 5, 45),
        _x("cuda_runtime", "cudaLaunchKernel", t + 10, 5, corr=1),
        {"ph": "s", "id": 1, "pid": 1, "tid": 1, "ts": t + 10, "cat": "ac2g", "name": "ac2g"},
        _x("cuda_driver", "cuLaunchKernel", t + 40, 4, corr=2),
        _x("cuda_runtime", "cudaGraphLaunch", t + 60, 10, corr=3),
        _x("cpu_op", "aten::zero_", t + 95, 15),
        _x("cuda_runtime", "cudaMemsetAsync", t + 100, 2, corr=4),
        _kernel("K1", t + 30, 20, 1),
        {"ph": "f", "id": 1, "pid": 0, "tid": 7, "ts": t + 30, "cat": "ac2g", "name": "ac2g", "bp": "e"},
        _kernel("K2", t + 38, 10, 2),
        _kernel("G1", t + 75, 5, 3),
        _kernel("G2", t + 80, 5, 3),
        _kernel("G3", t + 85, 5, 3),
        _kernel("Memset (Device)", t + 101, 1, 4, kind="gpu_memset"),
        _kernel("O", t + 120, 5, 99),
    ]
    p = tmp_path / "synthetic.json"
    p.write_text(json.dumps({"schemaVersion": 1, "traceEvents": events}))
    return p


def test_synthetic_tklqt_by_hand(synthetic):
    a = analyze(synthetic)
    f = a.figures
    assert f.tklqt_us == pytest.approx(36.0)
    assert f.launch_call_us == pytest.approx(16.0)
    assert f.queue_us == pytest.approx(20.0)
    assert f.negative_clamped == 1
    assert f.orphans == 1
    assert f.launches == 4
    assert f.graph_launches == 1
    assert f.kernels == 6  # K1 K2 G1 G2 G3 O (the memset is not a kernel)
    assert f.akd_us == pytest.approx(50 / 6)
    assert f.gpu_busy_us == pytest.approx(41.0)
    assert f.gpu_span_us == pytest.approx(95.0)
    assert f.gpu_util == pytest.approx(41 / 95)
    assert f.idle_host_wait_us == pytest.approx(31.0)
    assert f.bound == "cpu"
    assert f.steps == 1 and f.has_gpu
    assert "orphan" in f.note and "clamped" in f.note
    # only the first activity of the graph launch carries a TKLQT term
    acts = a.acts
    g = acts[acts["call"] >= 0].groupby("call")["first"].sum()
    assert (g == 1).all()
    assert np.isnan(acts["tklqt_us"]).sum() == 3  # G2, G3 and the orphan


def test_synthetic_operator_attribution(synthetic):
    a = analyze(synthetic)
    attr = attribute(a)
    names = a.trace.gpu["name"].astype(str).tolist()
    by = dict(zip(names, attr["op"]))
    assert by["K1"] == "aten::mm" and by["K2"] == "aten::mm"
    assert dict(zip(names, attr["top_op"]))["K1"] == "aten::linear"
    assert by["G1"] == NO_OP  # the graph launch at 60 is outside every op
    assert by["Memset (Device)"] == "aten::zero_"
    assert by["O"].startswith("<orphan")
    mods = dict(zip(names, attr["module"]))
    assert mods["K1"] == mods["K2"] == "nn.Module: Linear_0" and mods["Memset (Device)"] == ""
    assert "torch/nn/modules/linear.py(124): forward" not in set(a.trace.host["name"].astype(str))  # plain stacks dropped
    by_mod = operator_table(a, "module").set_index("operator")
    assert by_mod.loc["nn.Module: Linear_0", "kernels"] == 2 and by_mod.loc["nn.Module: Linear_0", "calls"] == 1
    ops = operator_table(a).set_index("operator")
    assert ops.loc["aten::mm", "kernels"] == 2
    assert ops.loc["aten::mm", "calls"] == 1
    assert ops.loc["aten::mm", "cpu_time_us"] == pytest.approx(45)
    assert ops.loc["aten::mm", "launch_overhead_us"] == pytest.approx(20)
    assert ops["launch_overhead_us"].sum() == pytest.approx(a.figures.tklqt_us)
    top = operator_table(a, "top_op").set_index("operator")
    assert top.loc["aten::linear", "gpu_time_us"] == pytest.approx(30)


def test_enclosing_innermost_and_outermost():
    # thread 1: A[0,100) > B[10,50) > C[10,20) (same start as B); D[60,70); E zero-length at 80
    # thread 2: F[0,1000)
    thread = np.array([1, 1, 1, 1, 1, 2])
    start = np.array([0.0, 10, 10, 60, 80, 0])
    end = np.array([100.0, 50, 20, 70, 80, 1000])
    q_thread = np.array([1, 1, 1, 1, 1, 2, 3, 1])
    q_t = np.array([15.0, 30, 65, 80, 100, 500, 5, 0])
    inner, outer = enclosing(thread, start, end, q_thread, q_t)
    assert inner.tolist() == [2, 1, 3, 0, -1, 5, -1, 0]
    assert outer.tolist() == [0, 0, 0, 0, -1, 5, -1, 0]


# ------------------------------------------------------------------------------ real H100 traces


def _raw(path: Path) -> list[dict]:
    return json.loads(gzip.open(path).read())["traceEvents"]


def test_cuda_graph_counts_only_the_first_kernel_per_launch():
    path = H100 / "llama1b_prefill_compiled_b1.json.gz"
    f = analyze(path).figures
    raw = _raw(path)
    calls = {e["args"]["correlation"]: e for e in raw if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    gpu = [e for e in raw if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    graph = next(e for e in raw if e.get("name") == "cudaGraphLaunch")
    replayed = [e for e in gpu if e["args"]["correlation"] == graph["args"]["correlation"]]
    assert len(replayed) > 200  # one graph launch, hundreds of kernels
    first_start = {}
    for e in gpu:
        c = e["args"]["correlation"]
        if c in calls:
            first_start[c] = min(first_start.get(c, e["ts"]), e["ts"])
    expected = sum(max(0.0, ts - calls[c]["ts"]) for c, ts in first_start.items())
    naive = sum(max(0.0, e["ts"] - calls[e["args"]["correlation"]]["ts"]) for e in gpu if e["args"]["correlation"] in calls)
    assert f.tklqt_us == pytest.approx(expected, rel=1e-9)
    assert f.tklqt_us < naive / 20  # counting every replayed kernel would inflate TKLQT enormously
    assert f.graph_launches == 1 and f.launches == 2 and f.kernels == 251
    assert f.orphans == 0 and f.negative_clamped == 0


def test_three_step_trace_is_normalised_per_step():
    a3 = analyze(H100 / "llama1b_prefill_eager_b4_3steps.json.gz")
    f = a3.figures
    assert f.steps == 3
    ps = a3.per_step
    assert len(ps) == 3 and (ps["kernels"] == 638).all()
    assert f.kernels == pytest.approx(ps["kernels"].sum() / 3)
    assert f.tklqt_us == pytest.approx(ps["tklqt_us"].sum() / 3)
    assert f.gpu_busy_us == pytest.approx(ps["gpu_busy_us"].sum() / 3)
    assert f.idle_host_wait_us == pytest.approx(ps["idle_host_wait_us"].sum() / 3)
    assert f.gpu_util == pytest.approx(ps["gpu_busy_us"].sum() / ps["gpu_span_us"].sum())
    # per-step figures are of one forward pass, like the single-step b1/b16 traces
    for b in (1, 16):
        single = analyze(H100 / f"llama1b_prefill_eager_b{b}.json.gz").figures
        assert 0.8 < f.kernels / single.kernels < 1.25
        assert 0.3 < f.tklqt_us / single.tklqt_us < 3
    # totals over the trace are three times the reported figures
    sel = a3.acts["step"] >= 0
    assert np.nansum(a3.acts.loc[sel, "tklqt_us"]) / 3 == pytest.approx(f.tklqt_us)
    assert (a3.trace.gpu["kind"][sel.to_numpy()] == "kernel").sum() / 3 == pytest.approx(f.kernels)


@pytest.mark.parametrize("batch,bound", [(1, "cpu"), (16, "cpu"), (64, "gpu")])
def test_eager_sweep_is_classified(batch, bound):
    f = analyze(H100 / f"llama1b_prefill_eager_b{batch}.json.gz").figures
    assert f.bound == bound
    assert f.orphans == 0 and f.negative_clamped == 0 and f.steps == 1


def test_eager_sweep_orders_as_expected():
    figs = [analyze(H100 / f"llama1b_prefill_eager_b{b}.json.gz").figures for b in (1, 16, 64)]
    util = [f.gpu_util for f in figs]
    assert util[0] < util[1] < 0.5 < util[2]
    assert figs[0].tklqt_us < figs[1].tklqt_us < figs[2].tklqt_us
    assert figs[2].queue_us > 100 * figs[0].queue_us  # the GPU-bound run queues its kernels
    assert figs[0].idle_host_wait_us > 0.8 * (figs[0].gpu_span_us - figs[0].gpu_busy_us)
    assert figs[0].akd_us < figs[1].akd_us < figs[2].akd_us


def test_profiler_overhead_of_the_b1_trace():
    a = analyze(H100 / "llama1b_prefill_eager_b1.json.gz")
    ov = profiler_overhead(a, 16_280.0)
    assert set(ov) == {"traced_span_us", "timed_median_us", "profiler_overhead_ratio"}
    assert 30_000 < ov["traced_span_us"] < 40_000  # ~33-36 ms traced vs 16.28 ms timed
    assert 1.8 < ov["profiler_overhead_ratio"] < 2.5


def test_top_kernels_and_operator_invariants():
    a = analyze(H100 / "llama1b_prefill_eager_b4_3steps.json.gz")
    tk = top_kernels(a, 5)
    assert list(tk.columns) == ["name", "count", "total_us", "mean_us", "share"]
    assert len(tk) == 5 and tk["total_us"].is_monotonic_decreasing
    assert 0 < tk["share"].sum() <= 1
    ops = operator_table(a)
    assert list(ops.columns) == ["operator", "calls", "kernels", "gpu_time_us", "cpu_time_us", "launch_overhead_us"]
    assert ops["launch_overhead_us"].sum() == pytest.approx(a.figures.tklqt_us)
    assert ops["kernels"].sum() == pytest.approx(a.figures.kernels)
    assert "aten::mm" in set(ops["operator"])


# ------------------------------------------------------------------------------ public traces


def _sane(f) -> None:
    d = f.as_dict()
    assert tuple(d) == FIGURE_KEYS
    assert f.has_gpu and f.tklqt_us >= 0 and f.kernels > 0 and f.launches > 0
    assert f.tklqt_us == pytest.approx(f.launch_call_us + f.queue_us)
    assert 0 < f.gpu_util <= 1
    assert f.gpu_busy_us <= f.gpu_span_us + 1e-6
    assert 0 <= f.idle_host_wait_us <= f.gpu_span_us - f.gpu_busy_us + 1e-3
    assert f.bound in ("cpu", "gpu")


def test_a100_old_kineto_two_streams():
    a = analyze(PUBLIC / "a100_simple_add.json.gz")
    _sane(a.figures)
    assert a.trace.gpu["stream"].nunique() == 2
    assert a.figures.orphans == 0


def test_cudagraph_multi_launch_with_kernels_from_outside_the_window():
    a = analyze(PUBLIC / "cudagraph_multi_launch_rank0.json.gz")
    f = a.figures
    _sane(f)
    assert f.steps == 5
    assert f.orphans > 0 and "orphan" in f.note  # launched before the window: counted, not dropped
    assert f.graph_launches > 0
    # every graph launch contributes exactly one TKLQT term however many kernels it replays
    first = a.acts[a.acts["first"]]
    assert first["call"].is_unique


def test_triton_cu_launch_kernel_is_joined():
    f = analyze(PUBLIC / "triton_example.json.gz").figures
    _sane(f)
    assert f.launches == 1 and f.kernels == 1 and f.orphans == 0
    assert f.tklqt_us == pytest.approx(2413669097444.592 - 2413669097399.166, abs=1e-3)


def test_amd_hip_launches_are_joined():
    a = analyze(PUBLIC / "amd_mi250_rocm62.json.gz")
    f = a.figures
    _sane(f)
    assert f.orphans == 0
    launchers = set(a.trace.calls["name"].to_numpy()[a.acts["call"][a.acts["call"] >= 0]].astype(str))
    assert {"hipLaunchKernel", "hipExtModuleLaunchKernel", "hipMemcpyWithStream"} <= launchers
    assert f.steps == 1 and "no GPU work not counted" in f.note  # the stub ProfilerStep#2


def test_ns_resolution_trace():
    f = analyze(PUBLIC / "ns_resolution.json.gz").figures
    _sane(f)
    assert f.steps == 5
    assert f.bound == "gpu" and f.queue_us > f.launch_call_us  # deep GPU queues


def test_cpu_only_trace_says_so():
    a = analyze(PUBLIC / "cpu_only.json.gz")
    assert tuple(a.as_dict()) == FIGURE_KEYS
    d = a.as_full_dict()
    assert d["has_gpu"] is False and d["bound"] is None
    for k in ("tklqt_us", "launch_call_us", "queue_us", "akd_us", "gpu_busy_us", "gpu_span_us", "gpu_util", "idle_host_wait_us"):
        assert d[k] is None, k
    assert d["kernels"] == 0 and d["launches"] == 0
    assert "no GPU activity" in d["note"]
    assert operator_table(a).empty and top_kernels(a).empty


@pytest.mark.parametrize("name", ["public/cudagraph_multi_launch_rank0.json.gz", "h100/llama1b_prefill_eager_b1.json.gz"])
def test_figures_do_not_depend_on_event_order(tmp_path, name):
    """Activities that start together (ties) must not be resolved by their order in the file."""
    with gzip.open(TRACES / name, "rt") as fh:
        doc = json.load(fh)
    doc["traceEvents"] = doc["traceEvents"][::-1]
    rev = tmp_path / "reversed.json"
    rev.write_text(json.dumps(doc))
    a, b = analyze(TRACES / name).figures.as_dict(), analyze(rev).figures.as_dict()
    for k in FIGURE_KEYS:
        if isinstance(a[k], float):
            assert b[k] == pytest.approx(a[k], rel=1e-9), k
        else:
            assert b[k] == a[k], k


def test_negative_gaps_outside_steps_are_counted(tmp_path):
    """negative_clamped is a data-quality total for the whole trace, like orphans."""
    t = 1000.0
    events = [
        _x("user_annotation", "ProfilerStep#1", t, 50),
        _x("cuda_runtime", "cudaLaunchKernel", t + 10, 5, corr=1),
        _kernel("K1", t + 20, 5, 1),
        _x("cuda_runtime", "cudaLaunchKernel", t + 200, 5, corr=2),  # outside the step, skewed
        _kernel("K2", t + 190, 5, 2),
    ]
    p = tmp_path / "neg.json"
    p.write_text(json.dumps({"traceEvents": events}))
    f = analyze(p).figures
    assert f.negative_clamped == 1 and f.kernels == 1

"""Kernel-level figures of one trace: the launch join, TKLQT and its parts, GPU busy/idle, bound.

Definitions live in `perfbench.trace`'s module docstring and docs/tracer.md; this module is the
vectorised implementation (sort + searchsorted, no per-event Python objects). No torch import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfbench.errors import InputError
from perfbench.trace.parse import DROP_REASONS, Trace, load_trace

#: Keys of the per-run figures, in output order. Other tools parse these; do not rename.
FIGURE_KEYS = (
    "tklqt_us",
    "launch_call_us",
    "queue_us",
    "kernels",
    "launches",
    "akd_us",
    "gpu_busy_us",
    "gpu_span_us",
    "gpu_util",
    "idle_host_wait_us",
    "steps",
    "orphans",
    "negative_clamped",
    "dropped",
    "graph_launches",
    "bound",
)
#: Also kept with stored runs and in `trace run` (not part of the analyze/sweep JSON contract):
#: whether the trace has GPU activity, and the sentence on what the reader should know.
EXTRA_KEYS = ("has_gpu", "note")

#: A run is CPU-bound when the GPU is idle more than this share of its span (gpu_util below it).
UTIL_BOUND = 0.5
#: ... or when waiting on the host is at least this share of the GPU span.
HOST_WAIT_BOUND = 0.5
#: A trace is refused when more than this share of its GPU activities carry a correlation id that
#: several launch calls share: which call launched them is then a guess, and TKLQT with it.
MAX_AMBIGUOUS_SHARE = 0.05
#: Keys of `RunFigures.dropped`: the reader's (parse.DROP_REASONS), then the join's and TKLQT's.
DROPPED_KEYS = DROP_REASONS + ("ambiguous_correlation", "negative_gap")


@dataclass
class RunFigures:
    """Per-run figures: per-iteration averages over ProfilerStep windows (the whole trace counts as
    one iteration when it has none). `orphans`, `negative_clamped` and `dropped` are totals for the
    trace: data-quality counters, not workload figures. `dropped` counts, per reason (DROPPED_KEYS),
    the values dropped or clamped: bad_ts / bad_dur (events dropped), negative_dur (clamped to 0),
    bad_correlation (treated as missing), ambiguous_correlation (GPU activities left unjoined),
    negative_gap (= negative_clamped). GPU figures are None without GPU data."""

    tklqt_us: float | None
    launch_call_us: float | None
    queue_us: float | None
    kernels: float
    launches: float
    akd_us: float | None
    gpu_busy_us: float | None
    gpu_span_us: float | None
    gpu_util: float | None
    idle_host_wait_us: float | None
    steps: int
    orphans: int
    negative_clamped: int
    graph_launches: float
    bound: str | None
    has_gpu: bool
    note: str = ""
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROPPED_KEYS, 0))

    def as_dict(self) -> dict[str, Any]:
        """Exactly FIGURE_KEYS (the JSON contract), JSON-ready (plain floats/ints, None for missing)."""
        return {k: _plain(getattr(self, k)) for k in FIGURE_KEYS}

    def as_full_dict(self) -> dict[str, Any]:
        """FIGURE_KEYS plus EXTRA_KEYS: what perfbench stores and `trace run` prints."""
        return {k: _plain(getattr(self, k)) for k in FIGURE_KEYS + EXTRA_KEYS}


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    return v


@dataclass
class Analysis:
    """Everything derived from one trace. `acts` has one row per GPU activity (same order as
    `trace.gpu`): the launching call (`call`, -1 for orphans), its step (-1 outside every step),
    whether it is the first activity of its call (`first`, the one TKLQT counts) and, on first rows,
    the TKLQT term and its two parts. `per_step` has the figures of each iteration."""

    trace: Trace
    figures: RunFigures
    acts: pd.DataFrame
    per_step: pd.DataFrame
    traced_span_us: float | None
    outside_steps: int
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return self.figures.as_dict()

    def as_full_dict(self) -> dict[str, Any]:
        return self.figures.as_full_dict()


def join_launches(trace: Trace) -> np.ndarray:
    """Index into `trace.calls` of the API call that enqueued each GPU activity (-1: orphan, or a
    correlation id that several calls share, see `launch_join`)."""
    return launch_join(trace)[0]


def launch_join(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """(call index per GPU activity, -1 if none; mask of activities left unjoined because several
    calls carry their correlation id).

    Joined on `args.correlation`, whatever the call's name: cudaLaunchKernel(ExC), cuLaunchKernel(Ex),
    cudaGraphLaunch, cudaMemcpyAsync, cudaMemsetAsync, hipLaunchKernel, hipExtModuleLaunchKernel, ...
    CUPTI gives every API call its own id, so the name list never needs updating; a duplicated id
    among the calls is a broken or merged trace, and such an activity is not guessed at."""
    gcorr = trace.gpu["correlation"].to_numpy()
    ccorr = trace.calls["correlation"].to_numpy()
    out = np.full(len(gcorr), -1, dtype=np.int64)
    ambiguous = np.zeros(len(gcorr), dtype=bool)
    if len(ccorr) == 0 or len(gcorr) == 0:
        return out, ambiguous
    order = np.argsort(ccorr, kind="stable")
    sorted_c = ccorr[order]
    pos = np.searchsorted(sorted_c, gcorr, side="left")
    pos_c = np.minimum(pos, len(sorted_c) - 1)
    hit = (sorted_c[pos_c] == gcorr) & (gcorr >= 0)
    nxt = np.minimum(pos_c + 1, len(sorted_c) - 1)
    ambiguous = hit & (nxt > pos_c) & (sorted_c[nxt] == gcorr)
    hit &= ~ambiguous
    out[hit] = order[pos_c[hit]]
    return out, ambiguous


def _check_ambiguity(trace: Trace, ambiguous: np.ndarray) -> int:
    """Refuse (InputError) when too many activities cannot be joined for duplicated ids."""
    n_amb = int(ambiguous.sum())
    if n_amb and n_amb > MAX_AMBIGUOUS_SHARE * len(ambiguous):
        ids = np.unique(trace.gpu["correlation"].to_numpy()[ambiguous])
        raise InputError(
            f"{trace.path}: {n_amb} of {len(ambiguous)} GPU activities carry a correlation id that several launch "
            f"calls share ({len(ids)} such ids, e.g. {int(ids[0])}): which call launched them cannot be told, so "
            "TKLQT and the launch counts would be wrong; refused"
        )
    return n_amb


def _step_of(starts: np.ndarray, ends: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Window index containing each time (start <= t <= end), -1 if none. Windows must not overlap."""
    if len(starts) == 0:
        return np.full(len(t), -1, dtype=np.int64)
    idx = np.searchsorted(starts, t, side="right") - 1
    ok = idx >= 0
    ok[ok] &= t[ok] <= ends[idx[ok]]
    return np.where(ok, idx, -1)


def analyze(source: Trace | str | Path, *, max_bytes: int | None = None) -> Analysis:
    """Per-run figures of one trace (see the package docstring for the definitions). `max_bytes`:
    see `load_trace`. Raises InputError when the trace cannot support the figures."""
    trace = source if isinstance(source, Trace) else load_trace(source, max_bytes=max_bytes)
    gpu, calls = trace.gpu, trace.calls
    n = len(gpu)
    g_ts = gpu["ts_us"].to_numpy()
    g_dur = np.maximum(gpu["dur_us"].to_numpy(), 0.0)  # load_trace clamps already; a Trace built by hand may not
    g_end = g_ts + g_dur
    is_kernel = (gpu["kind"].cat.codes.to_numpy() == 0)

    call, ambiguous = launch_join(trace)
    n_ambiguous = _check_ambiguity(trace, ambiguous)
    launched = call >= 0
    c_ts_all = calls["ts_us"].to_numpy()
    c_dur_all = np.maximum(calls["dur_us"].to_numpy(), 0.0)
    c_ts = np.full(n, np.nan)
    c_dur = np.full(n, np.nan)
    c_ts[launched] = c_ts_all[call[launched]]
    c_dur[launched] = c_dur_all[call[launched]]

    # Iteration windows: ProfilerStep#N if present, else the whole trace.
    steps_df = trace.steps
    if len(steps_df):
        s_start = steps_df["ts_us"].to_numpy()
        s_end = s_start + steps_df["dur_us"].to_numpy()
        key_t = np.where(launched, c_ts, g_ts)  # launch time decides; orphans go by GPU start
        step = _step_of(s_start, s_end, key_t)
        n_steps = len(steps_df)
        step_ids = steps_df["step"].to_numpy()
    else:
        step = np.zeros(n, dtype=np.int64)
        n_steps = 1
        step_ids = np.array([0])
        s_start = s_end = None
    dropped_steps = 0
    if len(steps_df) and n:
        # A step that enqueues no GPU work in a GPU trace is the stub the profiler opens just
        # before it stops (or a warm-up fragment): averaging over it would halve every figure.
        counts = np.bincount(step[step >= 0], minlength=n_steps)
        keep = counts > 0
        if keep.any() and not keep.all():
            remap = np.cumsum(keep) - 1
            step = np.where(step >= 0, remap[np.maximum(step, 0)], -1)
            step_ids = step_ids[keep]
            s_start, s_end = s_start[keep], s_end[keep]
            dropped_steps = int((~keep).sum())
            n_steps = int(keep.sum())
    in_step = step >= 0

    # First activity of each launching call (a graph replay enqueues the rest on the GPU itself).
    first = np.zeros(n, dtype=bool)
    if launched.any():
        li = np.flatnonzero(launched)
        order = li[np.lexsort((g_ts[li], call[li]))]
        c_sorted = call[order]
        is_first = np.ones(len(order), dtype=bool)
        is_first[1:] = c_sorted[1:] != c_sorted[:-1]
        first[order[is_first]] = True
    _check_shared_launches(trace, call, launched & ~first)

    gap = g_ts - c_ts  # NaN for orphans
    neg = first & (gap < 0)
    total = np.where(first, np.maximum(gap, 0.0), np.nan)
    lc_part = np.where(first, np.minimum(c_dur, total), np.nan)
    q_part = total - lc_part

    acts = pd.DataFrame(
        {
            "call": call,
            "step": np.where(in_step, step, -1),
            "first": first,
            "ts_us": g_ts,
            "end_us": g_end,
            "call_ts_us": c_ts,
            "call_end_us": c_ts + c_dur,
            "tklqt_us": total,
            "launch_call_us": lc_part,
            "queue_us": q_part,
            "negative": neg,
        }
    )

    per_step = _per_step(acts, is_kernel, n_steps, step_ids)
    orphans = int((~launched & ~ambiguous).sum())
    neg_count = int(neg.sum())  # a data-quality total for the trace, like orphans
    has_gpu = n > 0
    sel = in_step
    outside = int((~in_step).sum()) if len(steps_df) else 0

    def per_it(x: float) -> float:
        return x / n_steps

    if has_gpu and sel.any():
        tk = float(np.nansum(total[sel]))
        kernels = float((is_kernel & sel).sum())
        kdur = g_dur[is_kernel & sel]
        launches = float((first & sel).sum())
        graph = _graph_calls(trace, call[first & sel])
        busy = float(per_step["gpu_busy_us"].sum())
        span = float(per_step["gpu_span_us"].sum())
        hw = float(per_step["idle_host_wait_us"].sum())
        util = min(1.0, max(0.0, busy / span)) if span > 0 else None  # busy <= span by construction
        figs = RunFigures(
            tklqt_us=per_it(tk),
            launch_call_us=per_it(float(np.nansum(lc_part[sel]))),
            queue_us=per_it(float(np.nansum(q_part[sel]))),
            kernels=per_it(kernels),
            launches=per_it(launches),
            akd_us=float(kdur.mean()) if len(kdur) else None,
            gpu_busy_us=per_it(busy),
            gpu_span_us=per_it(span),
            gpu_util=util,
            idle_host_wait_us=per_it(hw),
            steps=int(n_steps),
            orphans=orphans,
            negative_clamped=neg_count,
            graph_launches=per_it(float(graph)),
            bound=classify_bound(util, hw / span if span > 0 else None),
            has_gpu=True,
        )
    else:
        figs = RunFigures(
            tklqt_us=None,
            launch_call_us=None,
            queue_us=None,
            kernels=0.0,
            launches=0.0,
            akd_us=None,
            gpu_busy_us=None,
            gpu_span_us=None,
            gpu_util=None,
            idle_host_wait_us=None,
            steps=int(n_steps),
            orphans=orphans,
            negative_clamped=0,
            graph_launches=0.0,
            bound=None,
            has_gpu=has_gpu,
        )
    span_us = _traced_span(trace, acts, s_start, s_end)
    figs.dropped = {**trace.dropped, "ambiguous_correlation": n_ambiguous, "negative_gap": figs.negative_clamped}
    figs.note = _note(trace, figs, outside, dropped_steps)
    return Analysis(trace=trace, figures=figs, acts=acts, per_step=per_step, traced_span_us=span_us, outside_steps=outside)


def classify_bound(gpu_util: float | None, host_wait_share: float | None) -> str | None:
    """`cpu` when the GPU sits idle for most of its span (gpu_util < 0.5) or spends at least half of
    its span waiting for launch calls (host-wait share >= 0.5); otherwise `gpu`. None without GPU
    data. Why gpu_util alone is the primary test: whatever the idle cause, a GPU busy less than half
    the time cannot be the bottleneck of an iteration it only occupies half of."""
    if gpu_util is None:
        return None
    if gpu_util < UTIL_BOUND or (host_wait_share is not None and host_wait_share >= HOST_WAIT_BOUND):
        return "cpu"
    return "gpu"


def _is_graph_launch(trace: Trace, calls_idx: np.ndarray) -> np.ndarray:
    """Whether each of these calls replays a CUDA/HIP graph (its name contains GraphLaunch)."""
    names = trace.calls["name"]
    if len(calls_idx) == 0:
        return np.zeros(0, dtype=bool)
    graph_codes = np.flatnonzero(names.cat.categories.astype(str).str.contains("GraphLaunch", regex=False))
    return np.isin(names.cat.codes.to_numpy()[calls_idx], graph_codes)


def _graph_calls(trace: Trace, calls_idx: np.ndarray) -> int:
    return int(_is_graph_launch(trace, calls_idx).sum())


def _check_shared_launches(trace: Trace, call: np.ndarray, later: np.ndarray) -> None:
    """Refuse when many GPU activities share one launch call that is no graph replay: a
    cudaLaunchKernel enqueues one kernel, so their correlation ids are broken and TKLQT, which
    counts each call once, would swallow real launches."""
    if not later.any():
        return
    shared = int((~_is_graph_launch(trace, call[later])).sum())
    if shared > MAX_AMBIGUOUS_SHARE * len(call):
        raise InputError(
            f"{trace.path}: {shared} of {len(call)} GPU activities share the correlation id of a launch call that is "
            "not a graph replay (such a call launches one kernel): the correlation ids are broken, so TKLQT and the "
            "launch counts would be wrong; refused"
        )


def _per_step(acts: pd.DataFrame, is_kernel: np.ndarray, n_steps: int, step_ids: np.ndarray) -> pd.DataFrame:
    """Busy union, span and host-wait idle of each iteration, vectorised across iterations."""
    step = acts["step"].to_numpy()
    sel = np.flatnonzero(step >= 0)
    busy = np.zeros(n_steps)
    span = np.zeros(n_steps)
    hw = np.zeros(n_steps)
    tk = np.zeros(n_steps)
    kern = np.zeros(n_steps)
    if len(sel):
        ts = acts["ts_us"].to_numpy()[sel]
        end = acts["end_us"].to_numpy()[sel]
        st = step[sel]
        call_end = acts["call_end_us"].to_numpy()[sel]
        order = np.lexsort((-np.nan_to_num(call_end, nan=-np.inf), ts, st))  # ties: file order never matters
        ts, end, st, call_end = ts[order], end[order], st[order], call_end[order]
        new_step = np.ones(len(st), dtype=bool)
        new_step[1:] = st[1:] != st[:-1]
        grp_start = np.flatnonzero(new_step)
        cm = pd.Series(end).groupby(st).cummax().to_numpy()  # running max of end within a step
        prev_cm = np.r_[-np.inf, cm[:-1]]
        seg_new = new_step | (ts > prev_cm)
        seg_idx = np.flatnonzero(seg_new)
        seg_end = cm[np.r_[seg_idx[1:] - 1, len(st) - 1]]
        seg_start = ts[seg_idx]
        seg_step = st[seg_idx]
        np.add.at(busy, seg_step, seg_end - seg_start)
        first_ts = ts[grp_start]
        last_end = np.maximum.reduceat(end, grp_start)
        span[st[grp_start]] = last_end - first_ts
        # host-wait idle: the part of an idle gap before the launch call of the work that ends it
        # returned (the work was not yet enqueued while the GPU ran dry). Of the activities that
        # start together at the gap's end, the latest call counts (sorted first among the ties).
        # After that call returns, the rest of the gap is the GPU's own pick-up latency.
        later = ~new_step[seg_idx]
        gap_start = prev_cm[seg_idx]
        enqueued = np.minimum(call_end[seg_idx], seg_start)  # NaN stays NaN: an orphan's wait is unknown
        with np.errstate(invalid="ignore"):
            waits = later & (enqueued > gap_start)
        np.add.at(hw, seg_step[waits], (enqueued - gap_start)[waits])
        tkl = acts["tklqt_us"].to_numpy()[sel]
        np.add.at(tk, step[sel], np.nan_to_num(tkl))
        np.add.at(kern, step[sel], is_kernel[sel].astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        util = np.where(span > 0, np.clip(busy / np.where(span > 0, span, 1), 0.0, 1.0), np.nan)
    return pd.DataFrame(
        {
            "step": step_ids,
            "tklqt_us": tk,
            "kernels": kern,
            "gpu_busy_us": busy,
            "gpu_span_us": span,
            "gpu_util": util,
            "idle_host_wait_us": hw,
        }
    )


def _traced_span(trace: Trace, acts: pd.DataFrame, s_start: np.ndarray | None, s_end: np.ndarray | None) -> float | None:
    """Wall time of one traced iteration: ProfilerStep windows (extended to the end of their GPU
    work) averaged, or, without steps, first host event to last host/GPU end."""
    if s_start is not None and len(s_start):
        e = s_end.copy()
        st = acts["step"].to_numpy()
        ok = st >= 0
        if ok.any():
            gend = np.full(len(s_start), -np.inf)
            np.maximum.at(gend, st[ok], acts["end_us"].to_numpy()[ok])
            e = np.maximum(e, gend)
        return float(np.mean(e - s_start))
    starts, ends = [], []
    for df in (trace.host, trace.calls):
        if len(df):
            starts.append(df["ts_us"].min())
            ends.append((df["ts_us"] + df["dur_us"]).max())
    if len(acts):
        ends.append(acts["end_us"].max())
    if not starts:
        return None
    return float(max(ends) - min(starts))


def _note(trace: Trace, f: RunFigures, outside: int, dropped_steps: int = 0) -> str:
    parts = []
    if not f.has_gpu:
        parts.append("no GPU activity in this trace (CPU-only profile): GPU figures are null")
    if f.orphans:
        parts.append(f"{f.orphans} GPU activities have no launching call in the trace (orphans; not in TKLQT)")
    if f.negative_clamped:
        parts.append(f"{f.negative_clamped} launches started on the GPU before their call (clock skew), clamped to 0")
    read = _dropped_sentence(f.dropped)
    if read:
        parts.append(read)
    if outside:
        parts.append(f"{outside} GPU activities fall outside every ProfilerStep window and are excluded")
    if len(trace.steps) == 0:
        parts.append("no ProfilerStep markers: the whole trace is one iteration")
    elif f.steps > 1:
        parts.append(f"figures are per-iteration averages over {f.steps} ProfilerStep windows")
    if dropped_steps:
        parts.append(f"{dropped_steps} ProfilerStep window(s) with no GPU work not counted")
    devices = trace.gpu["device"].nunique() if len(trace.gpu) else 0
    if devices > 1:
        parts.append(f"{devices} GPUs in one trace: busy time is their union")
    return "; ".join(parts)


_DROPPED_TEXT = {
    "bad_ts": "events with an unusable timestamp dropped",
    "bad_dur": "events with an unusable duration dropped",
    "negative_dur": "negative durations clamped to 0",
    "bad_correlation": "unusable correlation ids treated as missing",
    "ambiguous_correlation": "GPU activities with a correlation id several calls share left unjoined",
}


def _dropped_sentence(dropped: dict[str, int]) -> str:
    """The reader's and the join's drops, for `note` (negative_gap has its own sentence)."""
    said = [f"{dropped[k]} {text}" for k, text in _DROPPED_TEXT.items() if dropped.get(k)]
    return "data dropped or clamped: " + ", ".join(said) if said else ""


def profiler_overhead(analysis: Analysis, timed_median_us: float) -> dict[str, float | None]:
    """Traced iteration span against the untraced (timed) median: a ratio well above 1 is the
    profiler's own cost, not the workload's (H100 Llama-1B b1: ~33 ms traced vs 16.28 ms timed)."""
    span = analysis.traced_span_us
    ratio = span / timed_median_us if span is not None and timed_median_us and timed_median_us > 0 else None
    return {"traced_span_us": span, "timed_median_us": float(timed_median_us), "profiler_overhead_ratio": ratio}

"""Which operator launched each kernel, and the per-operator and per-kernel tables.

The host events of one thread nest (a cpu_op's children lie inside it), so "the innermost op
containing time t" is found without walking a tree: an op's depth is the number of ops of its thread
still open when it starts, and the innermost op containing t is the last op at depth D-1 starting
at or before t, where D is the number of ops open at t. Both are sort + searchsorted over the whole
trace at once. Ops that break nesting (rare rounding overlaps) fail the final containment check and
leave the launch unattributed rather than wrongly attributed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfbench.trace.metrics import Analysis

NO_OP = "<no operator>"
NO_MODULE = "<no nn.Module>"
ORPHAN = "<orphan: launch not in trace>"
_STEP_PREFIX = "ProfilerStep#"


def enclosing(
    thread: np.ndarray, start: np.ndarray, end: np.ndarray, q_thread: np.ndarray, q_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query (thread, time): index of the innermost and of the outermost interval of the
    same thread that contains it (start <= t < end), -1 where none does. Intervals must nest per
    thread; zero-length ones are ignored (they contain no launch)."""
    nq = len(q_t)
    inner = np.full(nq, -1, dtype=np.int64)
    outer = np.full(nq, -1, dtype=np.int64)
    valid = np.flatnonzero(end > start)
    if len(valid) == 0 or nq == 0:
        return inner, outer
    th_all, th_codes = np.unique(np.concatenate([thread[valid], q_thread]), return_inverse=True)
    ith = th_codes[: len(valid)]
    qth = th_codes[len(valid):]
    s = start[valid].astype(np.float64)
    e = end[valid].astype(np.float64)
    lo = min(s.min(), float(np.min(q_t)))
    hi = max(e.max(), float(np.max(q_t)))
    width = (hi - lo) + 1.0
    # one sortable key per (thread, time): threads occupy disjoint ranges
    ks = ith * width + (s - lo)
    ke = ith * width + (e - lo)
    kq = qth * width + (q_t - lo)
    order = np.lexsort((-e, s, ith))  # by thread, start, longest first (parents before children)
    ks_sorted = ks[order]
    ke_sorted = np.sort(ke)
    # depth of each interval = opened before it (same thread) - closed at or before its start
    th_sorted = ith[order]
    thread_first = np.searchsorted(th_sorted, th_sorted, side="left")
    rank = np.arange(len(order)) - thread_first
    closed = np.searchsorted(ke_sorted, ks_sorted, side="right") - np.searchsorted(ke_sorted, th_sorted * width, side="left")
    depth = rank - closed
    # index intervals by (thread, depth, start)
    maxd = int(depth.max()) + 2 if len(depth) else 1
    key2 = (th_sorted * maxd + depth) * width + (ks_sorted - th_sorted * width)
    o2 = np.argsort(key2, kind="stable")
    key2_sorted = key2[o2]
    depth2 = depth[o2]
    # open intervals at each query time
    opened = np.searchsorted(ks_sorted, kq, side="right") - np.searchsorted(ks_sorted, qth * width, side="left")
    closed_q = np.searchsorted(ke_sorted, kq, side="right") - np.searchsorted(ke_sorted, qth * width, side="left")
    d = opened - closed_q
    has = d > 0

    def lookup(level: np.ndarray) -> np.ndarray:
        q = (qth * maxd + level) * width + (q_t - lo)
        pos = np.searchsorted(key2_sorted, q, side="right") - 1
        ok = has & (pos >= 0)
        p0 = np.maximum(pos, 0)
        ok &= depth2[p0] == level
        cand = np.where(ok, order[o2[p0]], 0)
        idx = valid[cand]
        ok &= (start[idx] <= q_t) & (q_t < end[idx]) & (thread[idx] == q_thread)
        return np.where(ok, idx, -1)

    inner = lookup(np.maximum(d - 1, 0))
    outer = lookup(np.zeros(nq, dtype=np.int64))
    return inner, outer


def _thread_key(pid: np.ndarray, tid: np.ndarray) -> np.ndarray:
    return pid.astype(np.int64) * (1 << 32) + (tid.astype(np.int64) & 0xFFFFFFFF)


def attribute(analysis: Analysis) -> pd.DataFrame:
    """Per GPU activity: `op` (innermost cpu_op/user_annotation containing the launch call on the
    same thread), `top_op` (outermost one), `module` (innermost `nn.Module:` python_function, when
    the trace was taken with with_modules/with_stack), and `op_idx` (row in trace.host). Cached."""
    cached = analysis._cache.get("attribution")
    if cached is not None:
        return cached
    trace = analysis.trace
    host, calls = trace.host, trace.calls
    call = analysis.acts["call"].to_numpy()
    launched = call >= 0
    ci = call[launched]
    q_thread = _thread_key(calls["pid"].to_numpy()[ci], calls["tid"].to_numpy()[ci])
    q_t = calls["ts_us"].to_numpy()[ci]
    h_thread = _thread_key(host["pid"].to_numpy(), host["tid"].to_numpy())
    h_s = host["ts_us"].to_numpy()
    h_e = h_s + host["dur_us"].to_numpy()
    kind = host["kind"].to_numpy()
    names = host["name"]
    is_step = names.astype(str).str.startswith(_STEP_PREFIX).to_numpy() if len(host) else np.zeros(0, dtype=bool)
    op_mask = ((kind == "cpu_op") | (kind == "user_annotation")) & ~is_step
    mod_mask = kind == "python_function"
    n = len(call)
    out_inner = np.full(n, -1, dtype=np.int64)
    out_outer = np.full(n, -1, dtype=np.int64)
    out_mod = np.full(n, -1, dtype=np.int64)
    for mask, targets in ((op_mask, (out_inner, out_outer)), (mod_mask, (out_mod, None))):
        idx = np.flatnonzero(mask)
        if len(idx) == 0 or len(ci) == 0:
            continue
        inner, outer = enclosing(h_thread[idx], h_s[idx], h_e[idx], q_thread, q_t)
        t_in, t_out = targets
        t_in[launched] = np.where(inner >= 0, idx[np.maximum(inner, 0)], -1)
        if t_out is not None:
            t_out[launched] = np.where(outer >= 0, idx[np.maximum(outer, 0)], -1)
    name_arr = names.astype(object).to_numpy() if len(host) else np.empty(0, dtype=object)

    def label(ix: np.ndarray, none: str) -> np.ndarray:
        out = np.where(ix >= 0, name_arr[np.maximum(ix, 0)] if len(name_arr) else none, none)
        out[~launched] = ORPHAN
        return out

    df = pd.DataFrame(
        {
            "op_idx": out_inner,
            "top_idx": out_outer,
            "op": label(out_inner, NO_OP),
            "top_op": label(out_outer, NO_OP),
            "module": label(out_mod, ""),
        }
    )
    analysis._cache["attribution"] = df
    return df


def operator_table(analysis: Analysis, level: str = "op") -> pd.DataFrame:
    """One row per operator (level: `op` innermost, `top_op` outermost, `module`), per iteration:
    calls (op instances that launched GPU work), kernels, gpu_time_us (summed activity durations),
    cpu_time_us (inclusive duration of those instances), launch_overhead_us (the TKLQT of the
    launches inside them: the column sums to the run's tklqt_us). Sorted by gpu_time_us."""
    if level not in ("op", "top_op", "module"):
        raise ValueError(f"level must be op, top_op or module, not {level!r}")
    cols = ["operator", "calls", "kernels", "gpu_time_us", "cpu_time_us", "launch_overhead_us"]
    acts = analysis.acts
    if len(acts) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "operator" else float) for c in cols})
    attr = attribute(analysis)
    trace = analysis.trace
    sel = acts["step"].to_numpy() >= 0
    S = analysis.figures.steps or 1
    label = attr[level].to_numpy()[sel]
    if level == "module":
        label = np.where(label == "", NO_MODULE, label)
    gpu = trace.gpu
    df = pd.DataFrame(
        {
            "operator": label,
            "kernel": (gpu["kind"].to_numpy()[sel] == "kernel").astype(float),
            "gpu": gpu["dur_us"].to_numpy()[sel],
            "tklqt": np.nan_to_num(acts["tklqt_us"].to_numpy()[sel]),
        }
    )
    g = df.groupby("operator", sort=False).agg(kernels=("kernel", "sum"), gpu_time_us=("gpu", "sum"), launch_overhead_us=("tklqt", "sum"))
    # calls and cpu time: the distinct host instances behind the rows (innermost level only has
    # exact instances; for the other levels use the instance found the same way)
    inst = _instances(analysis, attr, level, sel)
    host = trace.host
    if len(inst):
        inst_df = pd.DataFrame({"operator": host["name"].astype(object).to_numpy()[inst], "dur": host["dur_us"].to_numpy()[inst]})
        ig = inst_df.groupby("operator", sort=False).agg(calls=("dur", "size"), cpu_time_us=("dur", "sum"))
        g = g.join(ig, how="left")
    else:
        g["calls"] = np.nan
        g["cpu_time_us"] = np.nan
    g = g.reset_index()
    for c in ("kernels", "gpu_time_us", "launch_overhead_us", "calls", "cpu_time_us"):
        g[c] = g[c].astype(float) / S
    g = g[cols].sort_values(["gpu_time_us", "launch_overhead_us"], ascending=False).reset_index(drop=True)
    return g


def _instances(analysis: Analysis, attr: pd.DataFrame, level: str, sel: np.ndarray) -> np.ndarray:
    """Distinct host-event rows of the chosen level that launched GPU work in the analysed steps."""
    if level == "op":
        idx = attr["op_idx"].to_numpy()[sel]
        return np.unique(idx[idx >= 0])
    trace = analysis.trace
    acts = analysis.acts
    call = acts["call"].to_numpy()[sel]
    call = call[call >= 0]
    if len(call) == 0:
        return np.empty(0, dtype=np.int64)
    calls = trace.calls
    host = trace.host
    kind = host["kind"].to_numpy()
    is_step = host["name"].astype(str).str.startswith(_STEP_PREFIX).to_numpy()
    mask = (kind == "python_function") if level == "module" else (((kind == "cpu_op") | (kind == "user_annotation")) & ~is_step)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return np.empty(0, dtype=np.int64)
    h_thread = _thread_key(host["pid"].to_numpy(), host["tid"].to_numpy())
    s = host["ts_us"].to_numpy()
    e = s + host["dur_us"].to_numpy()
    inner, outer = enclosing(
        h_thread[idx], s[idx], e[idx], _thread_key(calls["pid"].to_numpy()[call], calls["tid"].to_numpy()[call]), calls["ts_us"].to_numpy()[call]
    )
    pick = inner if level == "module" else outer
    pick = pick[pick >= 0]
    return np.unique(idx[pick])


def top_kernels(analysis: Analysis, k: int = 10) -> pd.DataFrame:
    """The k kernels with the most GPU time, per iteration: name, count, total_us, mean_us, share
    (of all kernel time). Names are the full demangled kernel names."""
    cols = ["name", "count", "total_us", "mean_us", "share"]
    gpu = analysis.trace.gpu
    sel = (analysis.acts["step"].to_numpy() >= 0) & (gpu["kind"].to_numpy() == "kernel")
    if not sel.any():
        return pd.DataFrame({c: pd.Series(dtype=object if c == "name" else float) for c in cols})
    S = analysis.figures.steps or 1
    df = pd.DataFrame({"name": gpu["name"].to_numpy()[sel], "dur": gpu["dur_us"].to_numpy()[sel]})
    g = df.groupby("name", observed=True, sort=False)["dur"].agg(["size", "sum", "mean"])
    total = g["sum"].sum()
    out = pd.DataFrame(
        {
            "name": g.index.astype(str),
            "count": g["size"].to_numpy() / S,
            "total_us": g["sum"].to_numpy() / S,
            "mean_us": g["mean"].to_numpy(),
            "share": g["sum"].to_numpy() / total if total > 0 else np.nan,
        }
    )
    return out.sort_values("total_us", ascending=False).head(k).reset_index(drop=True)

"""Kernel-fusion candidates from launch order, and the launch saving a compiled run really got.

A chain of kernels that recurs back-to-back on a stream pays one launch per kernel on every
occurrence; fusing it into one kernel keeps one launch. So candidates are the frequent n-grams of
kernel names per stream, in launch order, scored like SODA's proximity score: occurrences weighted
by chain length, here `score = occurrences x (length - 1)` = the launches a fusion would remove.
Occurrences are counted without overlap, and chains are picked greedily by score so that the
kernels of one occurrence are claimed by a single candidate (otherwise every shifted window of one
repeated transformer layer would fill the list). `launch_saving_us` sums, over the occurrences, the
launch-call time (the API call's duration) of every kernel but the first: the host time a fusion
saves. Not their whole TKLQT term: its queue part is time spent waiting behind earlier GPU work,
which a fused kernel would wait just the same (at b64 on the H100 that is nearly all of TKLQT).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from perfbench.trace.metrics import Analysis, RunFigures


def _kernel_sequence(analysis: Analysis) -> pd.DataFrame:
    """Kernels of the analysed steps in launch order per stream (call time, then GPU start)."""
    gpu = analysis.trace.gpu
    acts = analysis.acts
    sel = (gpu["kind"].to_numpy() == "kernel") & (acts["step"].to_numpy() >= 0)
    idx = np.flatnonzero(sel)
    call_ts = acts["call_ts_us"].to_numpy()[idx]
    ts = acts["ts_us"].to_numpy()[idx]
    order_t = np.where(np.isnan(call_ts), ts, call_ts)
    stream = (gpu["device"].to_numpy()[idx].astype(np.int64) << 32) + gpu["stream"].to_numpy()[idx].astype(np.int64)
    o = np.lexsort((ts, order_t, stream))
    idx = idx[o]
    return pd.DataFrame(
        {
            "row": idx,
            "stream": stream[o],
            "code": gpu["name"].cat.codes.to_numpy()[idx].astype(np.int64),
            # graph-replayed kernels (no call of their own) have NaN: replaying them costs no launch
            "launch_us": np.nan_to_num(acts["launch_call_us"].to_numpy()[idx]),
            "step": acts["step"].to_numpy()[idx],
        }
    )


def fusion_candidates(analysis: Analysis, *, min_len: int = 2, max_len: int = 8, min_count: int = 2, top: int = 10) -> pd.DataFrame:
    """Top fusion candidates: chain (tuple of kernel names), length, occurrences (non-overlapping,
    per iteration), score (occurrences x (length-1)), launches_saved and launch_saving_us (per
    iteration). Chains never cross streams or iterations."""
    cols = ["chain", "length", "occurrences", "score", "launches_saved", "launch_saving_us"]
    seq = _kernel_sequence(analysis)
    S = analysis.figures.steps or 1
    n = len(seq)
    if n < min_len:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    code = seq["code"].to_numpy()
    group = seq["stream"].to_numpy() * 1_000_003 + seq["step"].to_numpy()
    tk = seq["launch_us"].to_numpy()
    cs = np.r_[0.0, np.cumsum(tk)]  # prefix sums of the launch-call times
    cands = []  # (overlapping count * (L-1), saving, first start, L, start positions)
    mult = np.uint64(0x9E3779B97F4A7C15)
    for L in range(min_len, min(max_len, n) + 1):
        m = n - L + 1
        same = group[: m] == group[L - 1 :]
        h = np.zeros(m, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(L):
                h = h * mult + code[j : j + m].astype(np.uint64) + np.uint64(1)
        valid = np.flatnonzero(same)
        if len(valid) == 0:
            continue
        hv = h[valid]
        order = np.argsort(hv, kind="stable")
        hs = hv[order]
        bounds = np.flatnonzero(np.r_[True, hs[1:] != hs[:-1], True])
        counts = np.diff(bounds)
        for gi in np.flatnonzero(counts >= min_count):
            starts = np.sort(valid[order[bounds[gi] : bounds[gi + 1]]])
            saving = float((cs[starts + L] - cs[starts + 1]).sum())
            cands.append((len(starts) * (L - 1), saving, int(starts[0]), L, starts))
    # ties: the larger launch saving, then the chain that occurs first (deterministic)
    cands.sort(key=lambda c: (-c[0], -c[1], c[2], -c[3]))
    claimed = np.zeros(n, dtype=bool)
    cat = analysis.trace.gpu["name"].cat.categories
    rows = []
    for _, _, _, L, starts in cands[:5000]:
        picked = []
        last_end = -1
        for s in starts:  # non-overlapping, and not inside an occurrence already claimed
            if s >= last_end and not claimed[s : s + L].any():
                picked.append(s)
                last_end = s + L
        if len(picked) < min_count:
            continue
        for s in picked:
            claimed[s : s + L] = True
        p = np.asarray(picked)
        saving = float(sum(tk[s + 1 : s + L].sum() for s in p))
        first = p[0]
        rows.append(
            {
                "chain": tuple(str(cat[c]) for c in code[first : first + L]),
                "length": L,
                "occurrences": len(p) / S,
                "score": len(p) * (L - 1) / S,
                "launches_saved": len(p) * (L - 1) / S,
                "launch_saving_us": saving / S,
            }
        )
        if len(rows) >= top:
            break
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    return pd.DataFrame(rows, columns=cols).sort_values(["score", "launch_saving_us"], ascending=False).reset_index(drop=True)


def _fig(f: Any, key: str) -> float | None:
    if isinstance(f, Mapping):
        v = f.get(key)
    else:
        v = getattr(getattr(f, "figures", f), key, None)
    return None if v is None else float(v)


def compare_launch_saving(eager_figs: RunFigures | Analysis | Mapping[str, Any], compiled_figs: RunFigures | Analysis | Mapping[str, Any]) -> dict[str, float | None]:
    """Measured launch saving of a compiled (fused / CUDA-graph) run against eager on the same
    workload: TKLQT and launches saved, absolute and as a share of eager. Per iteration, like the
    figures it takes."""
    out: dict[str, float | None] = {}
    for key, short in (("tklqt_us", "tklqt"), ("launches", "launches"), ("kernels", "kernels")):
        e, c = _fig(eager_figs, key), _fig(compiled_figs, key)
        out[f"eager_{key}"] = e
        out[f"compiled_{key}"] = c
        if short != "kernels":
            saved = None if e is None or c is None else e - c
            out[f"{short}_saved" + ("_us" if key == "tklqt_us" else "")] = saved
            out[f"{short}_saved_ratio"] = None if saved is None or not e else saved / e
    out["compiled_graph_launches"] = _fig(compiled_figs, "graph_launches")
    return out

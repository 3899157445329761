"""Throughput-landscape analysis: best, default, gain over default, peaks, importance, and the
gain from re-tuning on other hardware.

Pure functions over a trials DataFrame (one row per trial; parameter columns named by their path,
the metric column by the metric's name, which carries its unit: `tokens_per_s`,
`latency_median_s`, ...), so they can be unit-tested on synthetic landscapes and reused by the
dashboard. Only completed (feasible) trials have a metric; failed and infeasible ones have NaN.

Definitions (docs/sweeps.md has the same):

* gain of A over B: metric(A)/metric(B) - 1 when maximising, metric(B)/metric(A) - 1 when
  minimising, so a positive gain always means "A is better by that fraction";
* peak: a measured plateau (connected cells of equal metric; usually one cell) that no measured
  grid neighbour beats strictly, reported once by its first cell; neighbours are +-1 index step
  along one parameter axis (values in the order the spec lists them); a failed or infeasible
  neighbour counts as worse; unmeasured neighbours are ignored, and a point with no measured
  neighbour is not a peak unless it is the best measured point or the grid is a single point;
* importance: first-order (main-effect) variance share, fANOVA-like: for each parameter, the
  count-weighted variance of the metric's marginal means over that parameter's values, divided by
  the metric's total variance. Shares lie in [0, 1]; their sum is at most 1 on a full grid and the
  rest is interaction. Ranged parameters are binned into up to 5 quantile bins of at least 3
  trials first. Where every value (or bin) holds a single trial the share is not estimable (every
  parameter would "explain" all the variance) and is null.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from perfbench.errors import InputError

IMPORTANCE_METHOD = ("first-order variance share of the marginal means (fANOVA-like main effects; "
                     "ranged parameters in up to 5 quantile bins of >= 3 trials; null where every "
                     "value or bin holds a single trial)")
#: Trials per quantile bin of a ranged parameter, at least: fewer would make every bin one trial.
MIN_PER_BIN = 3


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def value_key(v: Any) -> str:
    """Value identity across types and float noise (1 == 1.0; 0.1+0.2 == 0.3)."""
    if isinstance(v, float) and not isinstance(v, bool):
        if math.isnan(v):
            return "nan"
        if v.is_integer():
            return json.dumps(int(v))
        return json.dumps(float(f"{v:.12g}"))
    return json.dumps(v, sort_keys=True, default=str)


def trials_frame(trials: list[dict[str, Any]], params: list[str], metric: str) -> pd.DataFrame:
    """One row per trial: `trial_index`, `status`, one column per parameter, the metric (NaN unless
    completed), `peak_memory_bytes`, `wall_s`, `measure_s`, `overhead_s`, `run_id`, `hardware_id`,
    `reason`."""
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial_index": t["trial_index"], "status": t["status"]}
        for p in params:
            row[p] = _hashable(t["params"].get(p))
        ok = t["status"] == "completed" and t.get("metric") is not None
        row[metric] = float(t["metric"]) if ok else math.nan
        row["peak_memory_bytes"] = t.get("peak_memory_bytes")
        row["wall_s"] = t.get("wall_s")
        row["measure_s"] = t.get("measure_s")
        row["overhead_s"] = (t["wall_s"] - t["measure_s"]) if t.get("wall_s") is not None and t.get(
            "measure_s") is not None else None
        row["run_id"] = t.get("run_id")
        row["hardware_id"] = t.get("hardware_id")
        row["reason"] = t.get("reason")
        rows.append(row)
    cols = ["trial_index", "status", *params, metric, "peak_memory_bytes", "wall_s", "measure_s",
            "overhead_s", "run_id", "hardware_id", "reason"]
    df = pd.DataFrame(rows, columns=cols)
    for p in params:  # keep values as given (pandas would turn None into NaN in a str column)
        df[p] = pd.Series([r[p] for r in rows], index=df.index, dtype=object)
    for c in (metric, "wall_s", "measure_s", "overhead_s"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def gain(better_value: float | None, reference: float | None, goal: str) -> float | None:
    """How much better `better_value` is than `reference`, as a fraction (see module doc)."""
    if better_value is None or reference is None:
        return None
    if any(isinstance(x, float) and math.isnan(x) for x in (better_value, reference)):
        return None
    if goal == "maximize":
        return better_value / reference - 1 if reference else None
    return reference / better_value - 1 if better_value else None


def measured_trials(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Completed trials with a metric (a frame without `status` counts every row with a metric)."""
    ok = df[metric].notna()
    if "status" in df:
        ok &= df["status"] == "completed"
    return df[ok]


def _status(row: pd.Series, metric: str) -> str:
    if "status" in row.index:
        return row["status"]
    return "completed" if not pd.isna(row[metric]) else "failed"


def _opt(row: pd.Series, key: str) -> Any:
    v = row.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else unhash(v)


def _point(row: pd.Series, params: list[str], metric: str) -> dict[str, Any]:
    return {"params": {p: unhash(row[p]) for p in params}, "metric": float(row[metric]),
            "run_id": _opt(row, "run_id"), "trial_index": _opt(row, "trial_index")}


def unhash(v: Any) -> Any:
    """A parameter value back from a frame cell (JSON for lists/maps; pandas' NaN for None)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    if hasattr(v, "item"):  # numpy scalar -> plain Python for JSON
        return v.item()
    return v


def best_point(df: pd.DataFrame, params: list[str], metric: str, goal: str) -> dict[str, Any] | None:
    """The best completed trial (ties: the earliest)."""
    m = measured_trials(df, metric)
    if m.empty:
        return None
    idx = m[metric].idxmax() if goal == "maximize" else m[metric].idxmin()
    return _point(m.loc[idx], params, metric)


def find_row(df: pd.DataFrame, params: list[str], assignment: dict[str, Any]) -> pd.Series | None:
    """The trial with exactly this assignment (values compared by `value_key`), or None."""
    want = {p: value_key(unhash(assignment[p])) for p in params}
    for _, row in df.iterrows():
        if all(value_key(unhash(row[p])) == want[p] for p in params):
            return row
    return None


def default_point(df: pd.DataFrame, params: list[str], metric: str, default: dict[str, Any] | None,
                  axes: dict[str, list[Any]] | None = None,
                  note: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """The base workload's own setting and its metric, or (None, why not)."""
    if default is None:
        return None, note or "the base workload has no single setting of every parameter"
    if axes:
        off = [f"{p}={default[p]!r}" for p in params if p in axes
               and value_key(default[p]) not in {value_key(v) for v in axes[p]}]
        if off:
            return None, (f"the base workload's setting ({', '.join(off)}) is not on the sweep's grid; "
                          "add it to the values to measure the gain over the default")
    row = find_row(df, params, default)
    if row is None:
        return None, f"the default setting ({_label(default)}) was not measured in this sweep"
    status = _status(row, metric)
    out = {"params": {p: default[p] for p in params}, "status": status,
           "metric": None if pd.isna(row[metric]) or status != "completed" else float(row[metric]),
           "run_id": _opt(row, "run_id"), "trial_index": _opt(row, "trial_index")}
    if out["metric"] is None:
        return out, f"the default setting's trial is {status}: {_opt(row, 'reason')}"
    return out, None


def _label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def find_peaks(df: pd.DataFrame, axes: dict[str, list[Any]], metric: str, goal: str) -> list[dict[str, Any]]:
    """Local optima on the grid (see module doc), best first."""
    params = list(axes)
    index = {p: {value_key(v): i for i, v in enumerate(vals)} for p, vals in axes.items()}
    cells: dict[tuple[int, ...], tuple[str, float | None, pd.Series]] = {}
    for _, row in df.iterrows():
        try:
            pos = tuple(index[p][value_key(unhash(row[p]))] for p in params)
        except KeyError:  # a value no longer on the grid
            continue
        status = _status(row, metric)
        if status == "completed" and not pd.isna(row[metric]):
            cells[pos] = ("ok", float(row[metric]), row)
        elif status in ("failed", "infeasible"):
            cells[pos] = ("bad", None, row)
    single = all(len(v) == 1 for v in axes.values())
    ok = {pos: (value, row) for pos, (kind, value, row) in cells.items() if kind == "ok"}
    if not ok:
        return []
    better = (lambda a, b: a > b) if goal == "maximize" else (lambda a, b: a < b)

    def neighbours(pos):
        for d in range(len(params)):
            for step in (-1, 1):
                q = list(pos)
                q[d] += step
                yield tuple(q)

    # Plateaus: connected cells of equal value. A plateau is a peak when none of its cells has a
    # strictly better measured neighbour; it is reported once, by its first cell in grid order.
    plateau = {pos: pos for pos in ok}

    def root(p):
        while plateau[p] != p:
            plateau[p] = plateau[plateau[p]]
            p = plateau[p]
        return p

    for pos, (value, _) in ok.items():
        for q in neighbours(pos):
            if q in ok and ok[q][0] == value:
                a, b = root(pos), root(q)
                plateau[max(a, b)] = min(a, b)
    beaten, seen = set(), {}
    for pos, (value, _) in ok.items():
        r = root(pos)
        for q in neighbours(pos):
            n = cells.get(q)
            if n is None:
                continue
            seen[r] = True
            if n[0] == "ok" and better(n[1], value):
                beaten.add(r)
    best_pos = min(ok, key=lambda p: (-ok[p][0] if goal == "maximize" else ok[p][0], p))
    out = []
    for r in sorted({root(p) for p in ok}):
        # No measured neighbour at all: nothing to compare with, so not a peak, except the best
        # measured point (on a sparse random/bayes grid it may have no measured neighbour).
        if r in beaten or not (seen.get(r) or single or r == root(best_pos)):
            continue
        out.append(_point(ok[r][1], params, metric))
    out.sort(key=lambda p: p["metric"], reverse=goal == "maximize")
    return out


def importance(df: pd.DataFrame, params: list[str], metric: str,
               ranged: set[str] | None = None) -> dict[str, float | None]:
    """Main-effect variance share per parameter (see module doc); 0 when the metric is constant.

    None where it cannot be estimated: with one trial per value (or per bin) the marginal means
    are the trials themselves and every parameter would explain all of the variance."""
    m = measured_trials(df, metric)
    out = {p: 0.0 for p in params}
    if len(m) < 2:
        return out
    y = m[metric].astype(float)
    total = float(((y - y.mean()) ** 2).sum())
    if total <= 0:
        return out
    for p in params:
        if ranged and p in ranged:
            x = pd.to_numeric(m[p], errors="coerce")
            bins = min(5, x.nunique(), len(x) // MIN_PER_BIN)
            if x.nunique() > 1 and bins < 2:
                out[p] = None
                continue
            groups = pd.qcut(x, q=bins, duplicates="drop") if x.nunique() > 1 else x
        else:
            groups = m[p].map(lambda v: value_key(unhash(v)))
        stats = y.groupby(groups, observed=True).agg(["mean", "count"])
        if len(stats) > 1 and stats["count"].max() < 2:
            out[p] = None  # one trial per value: nothing to average
            continue
        share = float((stats["count"] * (stats["mean"] - y.mean()) ** 2).sum()) / total
        out[p] = round(min(1.0, max(0.0, share)), 6)
    return out


def summarize(sweep_row: dict[str, Any], sweep: Any) -> dict[str, Any]:
    """The `sweep show` JSON for a stored sweep (`sweep_row` from SweepDB.get_sweep, `sweep` the
    rebuilt spec from `sweep_from_json`)."""
    params, metric, goal = sweep.param_names, sweep.metric, sweep.goal
    trials = sweep_row["trials"]
    df = trials_frame(trials, params, metric)
    counts = df["status"].value_counts().to_dict()
    n_failed = int(counts.get("failed", 0) + counts.get("infeasible", 0))
    best = best_point(df, params, metric, goal)
    default_params, why = sweep.default_params()
    axes = sweep.axes() if sweep.discrete else None
    default, default_note = default_point(df, params, metric, default_params, axes, why)
    gain_default = gain(best["metric"], default["metric"], goal) if best and default else None
    if axes:
        peaks, peaks_note = find_peaks(df, axes, metric, goal), None
    else:
        peaks = None
        peaks_note = ("peaks need a grid: every parameter must list `values` (ranged parameters: "
                      f"{', '.join(n for n, p in sweep.params.items() if not p.discrete)})")
    ranged = {n for n, p in sweep.params.items() if not p.discrete}
    results = []
    for t in trials:
        over = (t["wall_s"] - t["measure_s"]) if t.get("wall_s") is not None and t.get("measure_s") is not None else None
        results.append({"trial_index": t["trial_index"], "params": t["params"], "status": t["status"],
                        "metric": t["metric"], "peak_memory_bytes": t["peak_memory_bytes"],
                        "run_id": t["run_id"], "hardware_id": t.get("hardware_id"), "reason": t["reason"],
                        "wall_s": t["wall_s"], "measure_s": t["measure_s"], "overhead_s": over,
                        "attempts": t["attempts"]})
    return {
        "sweep_id": sweep_row["sweep_id"], "name": sweep_row["name"], "method": sweep_row["method"],
        "status": sweep_row["status"], "reason": sweep_row["reason"],
        "metric": {"name": metric, "goal": goal}, "hardware_id": sweep_row["hardware_id"],
        "spec_hash": sweep_row["spec_hash"], "workload": sweep.base.name,
        "created_at": sweep_row["created_at"], "updated_at": sweep_row["updated_at"],
        "parameters": params,
        "trials": len(trials), "planned": sweep.planned_trials(),
        "completed": int(counts.get("completed", 0)), "failed": n_failed,
        "infeasible": int(counts.get("infeasible", 0)),
        "pending": int(counts.get("pending", 0) + counts.get("running", 0)),
        "best": best,
        "default": default, "default_note": default_note,
        "gain_over_default": gain_default,
        "peaks": peaks, "peaks_note": peaks_note,
        "importance": importance(df, params, metric, ranged), "importance_method": IMPORTANCE_METHOD,
        "results": results,
    }


def compare(a: dict[str, Any], b: dict[str, Any], df_a: pd.DataFrame, df_b: pd.DataFrame) -> dict[str, Any]:
    """Two summaries of the same sweep on two machines: the best of each, and the gain from
    re-tuning on each rather than reusing the other's best (the paper's 9.16% / 13.7% figure):
    gain_on_b = metric_B(best_B) / metric_B(best_A) - 1 when maximising (mirrored when minimising)."""
    if a["metric"] != b["metric"]:
        raise InputError(f"the sweeps optimise different metrics ({a['metric']} vs {b['metric']}); "
                         "compare the same sweep run on two machines")
    if sorted(a["parameters"]) != sorted(b["parameters"]):
        raise InputError(f"the sweeps vary different parameters ({', '.join(a['parameters'])} vs "
                         f"{', '.join(b['parameters'])}); compare the same sweep run on two machines")
    metric, goal, params = a["metric"]["name"], a["metric"]["goal"], a["parameters"]
    notes = []
    if a["hardware_id"] == b["hardware_id"]:
        notes.append("both sweeps ran on the same hardware (hardware_id); the gain measures noise "
                     "and settings, not a hardware change")
    if a["spec_hash"] != b["spec_hash"]:
        notes.append("the sweep specs differ (spec_hash); parameters and metric match, but the base "
                     "workloads or values may not")

    def cross(best: dict | None, df: pd.DataFrame, on: str) -> tuple[dict | None, float | None, dict | None]:
        if best is None:
            return None, None, None
        row = find_row(df, params, best["params"])
        if row is None:
            notes.append(f"the other machine's best ({_label(best['params'])}) was not measured on {on}")
            return {"params": best["params"], "measured": False, "status": None, "metric": None}, None, None
        status = _status(row, metric)
        value = None if pd.isna(row[metric]) or status != "completed" else float(row[metric])
        if value is None:
            notes.append(f"the other machine's best ({_label(best['params'])}) is {status} on "
                         f"{on}: {_opt(row, 'reason')}")
        return ({"params": best["params"], "measured": True, "status": status, "metric": value,
                 "run_id": _opt(row, "run_id")}, value, row)

    a_on_b, a_on_b_value, _ = cross(a["best"], df_b, "B")
    b_on_a, b_on_a_value, _ = cross(b["best"], df_a, "A")
    gain_b = gain(b["best"]["metric"], a_on_b_value, goal) if b["best"] else None
    gain_a = gain(a["best"]["metric"], b_on_a_value, goal) if a["best"] else None
    # A failed/infeasible reused setting: re-tuning is what makes it work at all.
    return {
        "metric": {"name": metric, "goal": goal}, "parameters": params,
        "a": {"sweep_id": a["sweep_id"], "name": a["name"], "hardware_id": a["hardware_id"], "best": a["best"]},
        "b": {"sweep_id": b["sweep_id"], "name": b["name"], "hardware_id": b["hardware_id"], "best": b["best"]},
        "same_best": bool(a["best"] and b["best"] and find_row(
            pd.DataFrame([{p: _hashable(v) for p, v in a["best"]["params"].items()}]), params,
            b["best"]["params"]) is not None),
        "a_best_on_b": a_on_b, "gain_from_retuning_on_b": gain_b,
        "b_best_on_a": b_on_a, "gain_from_retuning_on_a": gain_a,
        "notes": notes,
    }


def load_sweep_data(store: Any, sweep_id: str) -> tuple[dict[str, Any], pd.DataFrame, Any]:
    """(summary, trials frame, Sweep) of a stored sweep: what `sweep show`, `plot`, `compare` and
    the dashboard start from. `store` is an open ResultsStore."""
    from perfbench.sweep.db import SweepDB
    from perfbench.sweep.spec import sweep_from_json

    row = SweepDB(store).get_sweep(sweep_id)
    sweep = sweep_from_json(row["spec"])
    summary = summarize(row, sweep)
    return summary, trials_frame(row["trials"], sweep.param_names, sweep.metric), sweep

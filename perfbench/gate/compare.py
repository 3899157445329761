"""Sets of runs compared point by point: one row per (benchmark point, metric), as a DataFrame.

A point is matched between the two sides by its workload and shape (batch, seq_len, new_tokens).
When each side holds one workload under different names (Llamafile against Ollama on one board,
say) the shape alone matches them: a plain comparison table across backends or hardware.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from perfbench.gate.stats import ALPHA, compare_groups, geomean, prediction_floor
from perfbench.schema import FIELDS

#: Metrics with one value per measured step (the rest have one value per run).
SAMPLED = ("latency_median_s", "tokens_per_s")
DEFAULT_METRICS = ("latency_median_s",)


def point_key(p: dict) -> str:
    """`b1-s64-n0`: a point's shape, the same on every backend and machine."""
    return f"b{p['batch_size']}-s{p['seq_len']}-n{p['new_tokens']}"


def check_metric(metric: str) -> None:
    """A metric must be a schema field with a direction (higher or lower is better)."""
    from perfbench.errors import InputError

    f = FIELDS.get(metric)
    if f is None or not f.is_metric:
        allowed = ", ".join(n for n, x in FIELDS.items() if x.is_metric)
        raise InputError(f"unknown metric {metric!r}; allowed: {allowed}")


def values(point: dict, metric: str) -> list[float]:
    """A point's raw values of `metric`: every step for sampled metrics, else the point's one value."""
    samples = [s for s in point.get("samples_s") or [] if s and s > 0]
    if metric == "latency_median_s" and samples:
        return samples
    if metric == "tokens_per_s" and samples and point.get("tokens_per_step"):
        return [point["tokens_per_step"] / s for s in samples]
    v = point.get(metric)
    return [float(v)] if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else []


def groups(run: dict, point: dict, metric: str) -> list[list[float]]:
    """The point's values grouped by run, or by interleaved round (`subject.interleave.block`)."""
    vals = values(point, metric)
    block = ((run.get("subject") or {}).get("interleave") or {}).get("block")
    if block and metric in SAMPLED and len(vals) > block:
        return [vals[i:i + block] for i in range(0, len(vals), block)]
    return [vals] if vals else []


def _by_key(runs: list[dict], with_name: bool) -> dict[tuple, list[tuple[dict, dict]]]:
    out: dict[tuple, list[tuple[dict, dict]]] = {}
    for run in runs:
        for p in run.get("points", []):
            if p.get("status") == "ok":
                key = ((run["name"],) if with_name else ()) + (point_key(p),)
                out.setdefault(key, []).append((run, p))
    return out


def match_by_name(base: list[dict], cand: list[dict]) -> bool:
    """Match points by workload name too, unless each side is one workload under another name."""
    nb, nc = {r["name"] for r in base}, {r["name"] for r in cand}
    return not (len(nb) == 1 and len(nc) == 1 and nb != nc)


def compare_runs(base: list[dict], cand: list[dict], *, metrics: Iterable[str] = DEFAULT_METRICS,
                 thresholds: dict[str, float] | None = None, floors: dict[tuple, float] | None = None,
                 alpha: float = ALPHA, paired: bool = False, history_floor: bool = False):
    """Every point on both sides, every metric: a pandas DataFrame (see `stats.Comparison`).

    `thresholds`: metric -> minimum effect (fraction, default 5%); `floors`: (point_key, metric)
    -> noise floor (fraction); `history_floor`: also widen the minimum effect to the base runs'
    own spread (a single candidate run against the history, no interleaving)."""
    import pandas as pd

    thresholds, floors = thresholds or {}, floors or {}
    with_name = match_by_name(base, cand)
    kb, kc = _by_key(base, with_name), _by_key(cand, with_name)
    rows = []
    for key in [k for k in kb if k in kc]:
        for metric in metrics:
            rows.append(_row(key, kb[key], kc[key], metric, thresholds, floors, alpha, paired, history_floor))
    df = pd.DataFrame([r for r in rows if r is not None])
    df.attrs["only_base"] = [" ".join(k) for k in kb if k not in kc]
    df.attrs["only_candidate"] = [" ".join(k) for k in kc if k not in kb]
    return df


def _row(key, base_pts, cand_pts, metric, thresholds, floors, alpha, paired, history_floor) -> dict | None:
    f = FIELDS[metric]
    gb = [g for run, p in base_pts for g in groups(run, p, metric)]
    gc = [g for run, p in cand_pts for g in groups(run, p, metric)]
    if not gb or not gc:
        return None
    effect, source = _min_effect(key[-1], metric, thresholds, floors, base_pts, history_floor)
    pairs = ((run_c := cand_pts[0][0]).get("subject") or {}).get("interleave", {}).get("pairs", 1)
    cmp = compare_groups(gb, gc, higher_is_better=bool(f.higher_is_better), min_effect=effect,
                         alpha=alpha, paired=paired, clusters=int(pairs or 1))
    run_b = base_pts[0][0]
    label = key[0] if len(key) == 2 else f"{run_b['name']} vs {run_c['name']}"
    return {"benchmark": f"{label} {key[-1]}", "workload": label, "point": key[-1], "metric": metric,
            "unit": f.unit or "", "runs_base": ",".join(dict.fromkeys(r["run_id"] for r, _ in base_pts)),
            "runs_candidate": ",".join(dict.fromkeys(r["run_id"] for r, _ in cand_pts)),
            "spec_hash": run_c.get("spec_hash"), "hardware_id": run_c.get("hardware_id"),
            **cmp.as_dict(), "min_effect_source": source}


def _min_effect(pk: str, metric: str, thresholds: dict, floors: dict, base_pts, history_floor: bool):
    """The larger of the user's threshold, the calibrated noise floor and the history's spread,
    with the name of the one that decided it (reports say it, never hide it)."""
    options = [(thresholds.get(metric, 0.05), "threshold")]
    if floors.get((pk, metric)) is not None:
        options.append((floors[(pk, metric)], "noise floor"))
    if history_floor:
        per_run = [_run_value(p, metric) for _, p in base_pts]
        spread = prediction_floor([v for v in per_run if v])
        if spread is not None:
            options.append((spread, "history spread"))
    return max(options)


def _run_value(p: dict, metric: str) -> float | None:
    import statistics

    vals = values(p, metric)
    return statistics.median(vals) if vals else None


def summary(df) -> dict[str, Any]:
    """Geomean of the ratios over the points present on both sides, per metric, and what was
    left out (points on one side only)."""
    out: dict[str, Any] = {"metrics": {}, "only_base": df.attrs.get("only_base", []),
                           "only_candidate": df.attrs.get("only_candidate", [])}
    if df.empty:
        return out
    for metric, sub in df.groupby("metric", sort=False):
        out["metrics"][metric] = {
            "geomean_ratio": geomean(sub["ratio"].dropna().tolist()), "points": int(len(sub)),
            "verdicts": {v: int((sub["verdict"] == v).sum()) for v in ("same", "faster", "slower", "ambiguous")},
        }
    return out


#: Filter keys of `select_runs`: KEY:VALUE pairs, comma separated.
FILTER_KEYS = ("name", "spec", "hardware", "branch", "commit", "role", "backend", "last")


def select_runs(store, expr: str, what: str = "BASE") -> list[dict]:
    """Runs by id (`ID[,ID...]`, unique prefixes allowed) or by filter
    (`name:tiny-llama-cpu,branch:main,last:5`), full runs with points, oldest first."""
    from perfbench.errors import InputError

    parts = [x.strip() for x in expr.split(",") if x.strip()]
    if not parts:
        raise InputError(f"{what}: give run ids (ID[,ID...]) or a filter (KEY:VALUE,...; keys: "
                         f"{', '.join(FILTER_KEYS)})")
    if not any(":" in x for x in parts):
        return [store.get_run(x) for x in dict.fromkeys(parts)]
    filt = {}
    for x in parts:
        k, sep, v = x.partition(":")
        if not sep or k not in FILTER_KEYS or not v:
            raise InputError(f"{what}: bad filter {x!r}; use KEY:VALUE with KEY one of {', '.join(FILTER_KEYS)}")
        filt[k] = v
    try:
        last = int(filt.pop("last", 0))
    except ValueError:
        raise InputError(f"{what}: last: must be a whole number of runs, got {filt.get('last')!r}") from None
    runs = [r for r in store.find_runs(name=filt.get("name"), hardware_id=filt.get("hardware"))
            if _matches(r, filt)]
    full = [store.get_run(r["run_id"]) for r in runs]
    if "backend" in filt:
        full = [r for r in full if (r["spec"].get("backend") or {}).get("name") == filt["backend"]]
    full = full[-last:] if last > 0 else full
    if not full:
        raise InputError(f"{what}: no completed run in {store.path} matches {expr!r}")
    return full


def _matches(run: dict, filt: dict) -> bool:
    subj = run.get("subject") or {}
    checks = {"spec": lambda v: (run.get("spec_hash") or "").startswith(v),
              "branch": lambda v: subj.get("branch") == v,
              "commit": lambda v: (subj.get("commit") or run.get("commit") or "").startswith(v),
              "role": lambda v: subj.get("role") == v}
    return all(checks[k](v) for k, v in filt.items() if k in checks)

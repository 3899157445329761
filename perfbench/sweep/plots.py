"""Landscape plots: static files for reports (matplotlib: PNG + SVG) and plotly figures for the
dashboard (plotly is the `dashboard` extra, imported only when a plotly function is called).

Every function takes the trials DataFrame of `landscape.trials_frame`. 2-D slices hold every
other parameter at the best trial's value, so a slice always passes through the best point.
Axis order follows the sweep spec's `values` (so neighbours on the plot are grid neighbours).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from perfbench.errors import InputError
from perfbench.textsafe import label
from perfbench.sweep.landscape import measured_trials, unhash, value_key, best_point

#: At most this many parameter pairs get heatmaps/contours (every pair of a 6-D sweep is 15).
MAX_PAIRS = 6


#: A declared axis longer than this is drawn over its measured values only: a heatmap of a
#: 2,000 x 2,000 grid with ten measured trials is four million empty cells, not a picture.
MAX_DECLARED_AXIS = 200


def _axis_values(df: pd.DataFrame, p: str, axes: dict[str, list[Any]] | None) -> list[Any]:
    if axes and p in axes and len(axes[p]) <= MAX_DECLARED_AXIS:
        return list(axes[p])
    vals = [unhash(v) for v in df[p].dropna().unique()]
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=lambda v: json.dumps(v, default=str))


def _is_numeric_axis(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def slice_frame(df: pd.DataFrame, x: str, y: str, params: list[str], metric: str, goal: str,
                axes: dict[str, list[Any]] | None = None,
                fixed: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A 2-D slice as a table (rows: y values, columns: x values, cells: metric, NaN where not
    measured or failed), with the other parameters fixed at `fixed` (default: the best trial's)."""
    if fixed is None:
        best = best_point(df, params, metric, goal)
        fixed = {p: v for p, v in (best["params"].items() if best else []) if p not in (x, y)}
    m = measured_trials(df, metric)
    for p, v in fixed.items():
        if p in (x, y):
            continue
        m = m[m[p].map(lambda u: value_key(unhash(u))) == value_key(v)]
    xs, ys = _axis_values(df, x, axes), _axis_values(df, y, axes)
    table = pd.DataFrame(math.nan, index=range(len(ys)), columns=range(len(xs)))
    xi = {value_key(v): i for i, v in enumerate(xs)}
    yi = {value_key(v): i for i, v in enumerate(ys)}
    for _, row in m.iterrows():
        i, j = yi.get(value_key(unhash(row[y]))), xi.get(value_key(unhash(row[x])))
        if i is not None and j is not None:
            table.iat[i, j] = float(row[metric])
    table.index = [str(v) for v in ys]
    table.columns = [str(v) for v in xs]
    table.index.name, table.columns.name = y, x
    return table, {p: v for p, v in fixed.items() if p not in (x, y)}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def _fixed_label(fixed: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in fixed.items())


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        p = out / f"{stem}.{ext}"
        fig.savefig(p, dpi=120, bbox_inches="tight")
        paths.append(p)
    return paths


def plot_sweep(df: pd.DataFrame, params: list[str], metric: str, goal: str, out_dir: str | Path, *,
               axes: dict[str, list[Any]] | None = None, title: str = "") -> list[Path]:
    """Write heatmaps and contours of 2-D slices (a line plot for a 1-D sweep) and a parallel
    coordinates plot, each as PNG and SVG. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    matplotlib.rcParams["text.parse_math"] = False  # names are data: a `$` is a dollar sign
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if measured_trials(df, metric).empty:
        raise InputError("no completed trials to plot yet")
    cmap = "viridis" if goal == "maximize" else "viridis_r"
    if len(params) == 1:
        p = params[0]
        m = measured_trials(df, metric)
        xs = _axis_values(df, p, axes)
        vals = {value_key(unhash(r[p])): r[metric] for _, r in m.iterrows()}
        fig, ax = plt.subplots(figsize=(6, 4))
        pos = list(range(len(xs)))
        ax.plot(pos, [vals.get(value_key(v), math.nan) for v in xs], marker="o")
        ax.set_xticks(pos, [str(v) for v in xs])
        ax.set_xlabel(p)
        ax.set_ylabel(metric)
        ax.set_title(title or f"{metric} vs {p}")
        ax.grid(alpha=0.3)
        written += _save(fig, out, f"line_{_safe(p)}")
        plt.close(fig)
    for x, y in list(itertools.combinations(params, 2))[:MAX_PAIRS]:
        table, fixed = slice_frame(df, x, y, params, metric, goal, axes)
        sub = f"{title}\n" if title else ""
        sub += f"{metric} over {x} x {y}" + (f"  ({_fixed_label(fixed)})" if fixed else "")
        z = table.values.astype(float)
        measured = ~pd.isna(z)
        if measured.sum() < 0.5 * measured.size:
            # A sparse slice (random/bayes trials rarely share the other parameters' values): every
            # trial as a point, coloured by the metric, so nothing measured is left off the page.
            written += _scatter(df, x, y, metric, axes, out, f"{title}\n" if title else "", plt, cmap)
        if measured.sum() < 2:
            continue  # a one-cell heatmap says nothing; the scatter above has the trials
        # Heatmap
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(table.columns), 1.2 + 0.6 * len(table.index)))
        fig.set_size_inches(max(5, fig.get_size_inches()[0]), max(3.5, fig.get_size_inches()[1]))
        im = ax.imshow(table.values.astype(float), cmap=cmap, aspect="auto", origin="lower")
        ax.set_xticks(range(len(table.columns)), list(table.columns), rotation=45, ha="right")
        ax.set_yticks(range(len(table.index)), list(table.index))
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(sub, fontsize=9)
        for (i, j), v in _cells(table):
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, color="white")
        fig.colorbar(im, ax=ax, label=metric)
        written += _save(fig, out, f"heatmap_{_safe(x)}__{_safe(y)}")
        plt.close(fig)
        # Contour: needs a 2x2 block of measured cells, or there is nothing to draw between
        block = (measured[:-1, :-1] & measured[1:, :-1] & measured[:-1, 1:] & measured[1:, 1:]).any() \
            if z.shape[0] >= 2 and z.shape[1] >= 2 else False
        if block:
            import numpy as np

            fig, ax = plt.subplots(figsize=(6, 4.5))
            zz = np.ma.masked_invalid(z)
            cs = ax.contourf(range(z.shape[1]), range(z.shape[0]), zz, levels=12, cmap=cmap)
            ax.contour(range(z.shape[1]), range(z.shape[0]), zz, levels=12, colors="k", linewidths=0.3)
            ax.set_xticks(range(len(table.columns)), list(table.columns), rotation=45, ha="right")
            ax.set_yticks(range(len(table.index)), list(table.index))
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            ax.set_title(sub, fontsize=9)
            fig.colorbar(cs, ax=ax, label=metric)
            written += _save(fig, out, f"contour_{_safe(x)}__{_safe(y)}")
            plt.close(fig)
    written += _parallel(df, params, metric, goal, out, axes, title, plt, cmap)
    return written


def _scatter(df: pd.DataFrame, x: str, y: str, metric: str, axes, out: Path, title: str, plt, cmap) -> list[Path]:
    """All measured trials over two parameters (positions as in the parallel-coordinates plot)."""
    m = measured_trials(df, metric)
    if len(m) < 2:
        return []
    xs, xt, xl = _positions(m, x, axes)
    ys, yt, yl = _positions(m, y, axes)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sc = ax.scatter(xs, ys, c=m[metric].astype(float), cmap=cmap, s=40, edgecolors="k", linewidths=0.3)
    ax.set_xticks(xt, xl, rotation=45, ha="right")
    ax.set_yticks(yt, yl)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{title}{metric}, every measured trial ({len(m)})", fontsize=9)
    fig.colorbar(sc, ax=ax, label=metric)
    paths = _save(fig, out, f"scatter_{_safe(x)}__{_safe(y)}")
    plt.close(fig)
    return paths


def _cells(table: pd.DataFrame):
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            v = table.iat[i, j]
            if not pd.isna(v):
                yield (i, j), float(v)


def _positions(df: pd.DataFrame, p: str, axes: dict[str, list[Any]] | None) -> tuple[pd.Series, list, list]:
    """A parameter as numbers in [0, 1] (numeric: scaled values; otherwise: index in its order)."""
    vals = _axis_values(df, p, axes)
    if _is_numeric_axis(vals) and len(vals) > 1:
        lo, hi = min(vals), max(vals)
        log = lo > 0 and hi / lo >= 16  # batch sizes and the like read better on a log axis
        f = (lambda v: (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))) if log else \
            (lambda v: (v - lo) / (hi - lo))
        s = df[p].map(lambda v: f(float(unhash(v))))
        ticks = vals if len(vals) <= 8 else [vals[0], vals[len(vals) // 2], vals[-1]]
        return s, [f(float(v)) for v in ticks], [str(v) for v in ticks]
    idx = {value_key(v): i for i, v in enumerate(vals)}
    n = max(1, len(vals) - 1)
    s = df[p].map(lambda v: idx.get(value_key(unhash(v)), math.nan) / n)
    return s, [i / n for i in range(len(vals))], [str(v) for v in vals]


def _parallel(df, params, metric, goal, out, axes, title, plt, cmap) -> list[Path]:
    m = measured_trials(df, metric)
    if m.empty:
        return []
    cols = [*params, metric]
    fig, ax = plt.subplots(figsize=(1.8 * len(cols) + 1, 4.5))
    pos = {}
    ticks = {}
    for p in params:
        s, tv, tl = _positions(m, p, axes)
        pos[p], ticks[p] = s, (tv, tl)
    y = m[metric].astype(float)
    lo, hi = float(y.min()), float(y.max())
    pos[metric] = (y - lo) / (hi - lo) if hi > lo else y * 0 + 0.5
    ticks[metric] = ([0, 0.5, 1] if hi > lo else [0.5],
                     [f"{lo:.3g}", f"{(lo + hi) / 2:.3g}", f"{hi:.3g}"] if hi > lo else [f"{lo:.3g}"])
    norm = plt.Normalize(lo, hi if hi > lo else lo + 1)
    colors = plt.get_cmap(cmap)
    for k in m.index:
        ax.plot(range(len(cols)), [pos[c][k] for c in cols], color=colors(norm(y[k])), alpha=0.8, lw=1.2)
    for i, c in enumerate(cols):
        ax.axvline(i, color="0.4", lw=0.8)
        tv, tl = ticks[c]
        for v, lab in zip(tv, tl):
            ax.text(i + 0.03, v, lab, fontsize=7, va="center")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(cols) - 0.6)
    ax.set_title(title or f"parallel coordinates: {metric}", fontsize=9)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=colors)
    fig.colorbar(sm, ax=ax, label=metric)
    paths = _save(fig, out, "parallel_coordinates")
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------------
# plotly (dashboard)
# --------------------------------------------------------------------------------------------------


def _go():
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise InputError("interactive sweep plots need plotly: pip install 'perfbench[dashboard]' "
                         "(the `dashboard` extra)") from None
    return go


def plotly_heatmap(df: pd.DataFrame, x: str, y: str, params: list[str], metric: str, goal: str, *,
                   axes: dict[str, list[Any]] | None = None, fixed: dict[str, Any] | None = None):
    """An interactive heatmap of one 2-D slice (a plotly Figure)."""
    go = _go()
    table, fixed = slice_frame(df, x, y, params, metric, goal, axes, fixed)
    fig = go.Figure(go.Heatmap(z=table.values, x=[label(v) for v in table.columns], y=[label(v) for v in table.index],
                               colorscale="Viridis", reversescale=goal != "maximize",
                               colorbar={"title": label(metric)}, hoverongaps=False))
    fig.update_layout(title=label(f"{metric} over {x} x {y}" + (f" ({_fixed_label(fixed)})" if fixed else "")),
                      xaxis={"title": label(x), "type": "category"}, yaxis={"title": label(y), "type": "category"})
    return fig


def plotly_contour(df: pd.DataFrame, x: str, y: str, params: list[str], metric: str, goal: str, *,
                   axes: dict[str, list[Any]] | None = None, fixed: dict[str, Any] | None = None):
    """An interactive contour of one 2-D slice (axes by index, labelled with the values)."""
    go = _go()
    table, fixed = slice_frame(df, x, y, params, metric, goal, axes, fixed)
    fig = go.Figure(go.Contour(z=table.values, x=list(range(len(table.columns))),
                               y=list(range(len(table.index))), colorscale="Viridis",
                               reversescale=goal != "maximize", colorbar={"title": label(metric)},
                               connectgaps=False))
    fig.update_layout(
        title=label(f"{metric} over {x} x {y}" + (f" ({_fixed_label(fixed)})" if fixed else "")),
        xaxis={"title": label(x), "tickvals": list(range(len(table.columns))),
               "ticktext": [label(v) for v in table.columns]},
        yaxis={"title": label(y), "tickvals": list(range(len(table.index))),
               "ticktext": [label(v) for v in table.index]})
    return fig


def plotly_parallel(df: pd.DataFrame, params: list[str], metric: str, goal: str, *,
                    axes: dict[str, list[Any]] | None = None):
    """Interactive parallel coordinates of every completed trial, coloured by the metric."""
    go = _go()
    m = measured_trials(df, metric)
    dims = []
    for p in params:
        vals = _axis_values(df, p, axes)
        if _is_numeric_axis(vals):
            dims.append({"label": label(p), "values": [float(unhash(v)) for v in m[p]]})
        else:
            idx = {value_key(v): i for i, v in enumerate(vals)}
            dims.append({"label": label(p), "values": [idx.get(value_key(unhash(v))) for v in m[p]],
                         "tickvals": list(range(len(vals))), "ticktext": [label(v) for v in vals]})
    dims.append({"label": label(metric), "values": m[metric].astype(float).tolist()})
    fig = go.Figure(go.Parcoords(line={"color": m[metric].astype(float).tolist(), "colorscale": "Viridis",
                                       "reversescale": goal != "maximize", "showscale": True},
                                 dimensions=dims))
    fig.update_layout(title=label(f"parallel coordinates: {metric}"))
    return fig


def plotly_figures(df: pd.DataFrame, params: list[str], metric: str, goal: str, *,
                   axes: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """Every figure the dashboard shows for a sweep, by name."""
    figs = {"parallel_coordinates": plotly_parallel(df, params, metric, goal, axes=axes)}
    for x, y in list(itertools.combinations(params, 2))[:MAX_PAIRS]:
        figs[f"heatmap_{x}__{y}"] = plotly_heatmap(df, x, y, params, metric, goal, axes=axes)
        figs[f"contour_{x}__{y}"] = plotly_contour(df, x, y, params, metric, goal, axes=axes)
    return figs

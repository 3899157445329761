"""Sweeps: one sweep's throughput landscape (heatmap or contour over any two parameters), its trials
as parallel coordinates with the peaks and the default marked, parameter importance, and the gain
from re-tuning when the same sweep ran on other hardware (the hyperparameter paper's 9-14%).

Why a version stamp: a sweep in progress updates live on `refresh-tick`, but summarising 500 trials
on every tick would cost more than the 300 ms a callback may take. A cheap query of the sweep's
status and trial count decides whether anything changed; only then are the figures rebuilt.

URL: ?sweep=ID&x=PARAM&y=PARAM&view=heatmap|contour&vs=ID
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, callback, dcc, html

from perfbench.dashboard import source, style, urlstate
from perfbench.dashboard.components import controls, empty_state, error_panel, evidence, labelled, page_layout, url_mirror
from perfbench.dashboard.source import open_store
from perfbench.errors import PerfbenchError
from perfbench.schema import FIELDS
from perfbench.sweep import landscape, plots
from perfbench.textsafe import label, plain

PAGE = "sweeps"
VIEWS = ("heatmap", "contour")
EMPTY_COMMAND = "perfbench sweep run workloads/sweeps/tiny-grid.yaml"

urlstate.sync_url(f"{PAGE}-query")


# -- reading -------------------------------------------------------------------------------------


def list_sweeps(st: Any) -> list[dict[str, Any]]:
    """Every stored sweep, newest first (SweepDB's listing: counts in SQL, no trial parsing)."""
    from perfbench.sweep.db import SweepDB

    return SweepDB(st).list_sweeps()


def resolve(st: Any, given: str | None, sweeps: list[dict[str, Any]]) -> str:
    """The sweep the URL names (an id, a unique prefix or a name), else the newest. An unknown name
    raises InputError, which the page shows as an error panel."""
    ids = [s["sweep_id"] for s in sweeps]
    if not given:
        return ids[0]
    if given in ids:
        return given
    from perfbench.sweep.db import SweepDB

    return SweepDB(st).resolve_sweep_id(given)


def sweep_params(st: Any, sweep_id: str) -> list[str]:
    """The parameter names of a sweep, from its stored spec alone (no trials read)."""
    from perfbench.sweep.spec import sweep_from_json

    rows = st.query("SELECT spec_json FROM sweeps WHERE sweep_id=?", (sweep_id,), what="read a sweep")
    return sweep_from_json(json.loads(rows[0][0])).param_names if rows else []


def version(st: Any, sweep_ids: list[str]) -> list[Any]:
    """A stamp that changes whenever a trial finishes or a sweep's status changes."""
    out: list[Any] = []
    for sid in sweep_ids:
        rows = st.query("SELECT s.status, s.updated_at, COUNT(t.trial_key), MAX(t.ended_at),"
                        " SUM(t.status='completed'), SUM(t.status='running') FROM sweeps s LEFT JOIN sweep_trials t USING (sweep_id)"
                        " WHERE s.sweep_id=? GROUP BY s.sweep_id", (sid,), what="read a sweep's progress")
        out.append(list(rows[0]) if rows else None)
    return out


def options(sweeps: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"label": plain(f"{s['name']} · {s['status']} · {s['completed']}/{s['planned'] or s['trials']} trials"
                            f" · {s['hardware_id']} · {s['sweep_id']}"), "value": s["sweep_id"]} for s in sweeps]


# -- layout --------------------------------------------------------------------------------------


@page_layout(PAGE)
def layout(**query: Any) -> Any:
    with open_store() as st:
        sweeps = list_sweeps(st)
        if not sweeps:
            return empty_state("No sweeps in this store yet.", EMPTY_COMMAND)
        sweep_id = resolve(st, urlstate.text(query, "sweep"), sweeps)
        params = sweep_params(st, sweep_id)
        vs = urlstate.text(query, "vs")
        version_data = stamp(st, sweep_id, vs)
    x, y = pick_axes(params, urlstate.text(query, "x"), urlstate.text(query, "y"))
    opts = options(sweeps)
    return html.Div([
        *url_mirror(PAGE),
        dcc.Store(id="sweeps-version", data=version_data),
        controls(
            labelled("sweep", dcc.Dropdown(id="sweeps-pick", options=opts, value=sweep_id, clearable=False,
                                           style={"minWidth": "28rem"})),
            labelled("x", dcc.Dropdown(id="sweeps-x", options=_param_options(params), value=x, clearable=False)),
            labelled("y", dcc.Dropdown(id="sweeps-y", options=_param_options(params), value=y, clearable=False)),
            labelled("view", dcc.RadioItems(id="sweeps-view", value=urlstate.text(query, "view", "heatmap", VIEWS),
                                            options=[{"label": f" {v}", "value": v} for v in VIEWS], inline=True)),
            labelled("re-tuning gain vs", dcc.Dropdown(id="sweeps-vs", options=opts, value=vs, clearable=True,
                                                       placeholder="another sweep", style={"minWidth": "20rem"}))),
        html.Div(id="sweeps-summary"),
        html.Div([html.Div(dcc.Graph(id="sweeps-landscape"), className="pb-card"),
                  html.Div(dcc.Graph(id="sweeps-parallel"), className="pb-card"),
                  html.Div(dcc.Graph(id="sweeps-importance"), className="pb-card"),
                  html.Div([dcc.Graph(id="sweeps-retune"), html.Div(id="sweeps-retune-notes")], className="pb-card")],
                 className="pb-grid"),
        html.Div(id="sweeps-evidence"),
    ])


dash.register_page(__name__, path="/sweeps", name="Sweeps", order=4, title="perfbench · sweeps", layout=layout)


def _param_options(params: list[str]) -> list[dict[str, str]]:
    return [{"label": plain(p), "value": p} for p in params]


def pick_axes(params: list[str], x: str | None, y: str | None) -> tuple[str | None, str | None]:
    """Two different parameters: the asked ones where the sweep has them, else the first two."""
    if not params:
        return None, None
    x = x if x in params else params[0]
    rest = [p for p in params if p != x]
    y = y if y in rest else (rest[0] if rest else None)
    return x, y


# -- callbacks -----------------------------------------------------------------------------------


@callback(Output("sweeps-x", "options"), Output("sweeps-y", "options"), Output("sweeps-x", "value"),
          Output("sweeps-y", "value"), Input("sweeps-pick", "value"), State("sweeps-x", "value"),
          State("sweeps-y", "value"), prevent_initial_call=True)
def choose_sweep(sweep_id: str | None, x: str | None, y: str | None):
    """The axes a sweep offers; the current ones stay where the new sweep has them too."""
    try:
        with open_store() as st:
            params = sweep_params(st, sweep_id) if sweep_id else []
    except PerfbenchError:
        params = []
    x, y = pick_axes(params, x, y)
    return _param_options(params), _param_options(params), x, y


@callback(Output("sweeps-version", "data"), Input("sweeps-pick", "value"), Input("sweeps-vs", "value"),
          Input("refresh-tick", "n_intervals"), State("sweeps-version", "data"))
def watch(sweep_id: str | None, vs: str | None, _tick: int, current: Any):
    """A new stamp only when a trial finished or a status changed (see the module doc)."""
    try:
        with open_store() as st:
            new = stamp(st, sweep_id, vs)
    except PerfbenchError as exc:
        new = {"ids": [sweep_id, vs], "error": str(exc)}
    return dash.no_update if new == current else new


def stamp(st: Any, sweep_id: str | None, vs: str | None) -> dict[str, Any]:
    return {"ids": [sweep_id, vs], "v": version(st, [s for s in (sweep_id, vs) if s])}


@functools.lru_cache(maxsize=8)
def _cached(path: str, sweep_id: str, _stamp: str) -> tuple[dict[str, Any], pd.DataFrame, Any]:
    """load_sweep_data, kept while the sweep's stamp stands: changing the axes or the view does not
    summarise 500 trials again. Callers must not change what it returns."""
    with open_store() as st:
        return landscape.load_sweep_data(st, sweep_id)


def load(sweep_id: str, version_data: Any) -> tuple[dict[str, Any], pd.DataFrame, Any]:
    """The sweep's data, cached under the stamp the page last saw for it."""
    ids, stamps = (version_data or {}).get("ids") or [], (version_data or {}).get("v") or []
    known = dict(zip([i for i in ids if i], stamps))
    if sweep_id in known:
        return _cached(str(source.store_path()), sweep_id, json.dumps(known[sweep_id]))
    with open_store() as st:
        return landscape.load_sweep_data(st, sweep_id)


@callback(Output("sweeps-summary", "children"), Output("sweeps-landscape", "figure"),
          Output("sweeps-parallel", "figure"), Output("sweeps-importance", "figure"),
          Output("sweeps-evidence", "children"), Output("sweeps-query", "data"),
          Input("sweeps-version", "data"), Input("sweeps-x", "value"), Input("sweeps-y", "value"),
          Input("sweeps-view", "value"), State("sweeps-pick", "value"), State("sweeps-vs", "value"))
def update(version_data: Any, x: str | None, y: str | None, view: str, sweep_id: str | None, vs: str | None):
    """Every figure of the chosen sweep, and the query string that brings this view back."""
    view = view if view in VIEWS else "heatmap"
    query = urlstate.query_string({"sweep": sweep_id, "x": x, "y": y,
                                   "view": view if view != "heatmap" else None, "vs": vs})
    if not sweep_id:
        empty = style.empty_figure("Pick a sweep.")
        return None, empty, empty, empty, None, query
    try:
        summary, df, sweep = load(sweep_id, version_data)
        with open_store() as st:
            best_run = _best_run(st, summary)
    except PerfbenchError as exc:
        msg = style.empty_figure(str(exc))
        return error_panel(str(exc), "This sweep cannot be read"), msg, msg, msg, None, query
    axes = sweep.axes() if sweep.discrete else None
    return (summary_panel(summary), landscape_figure(df, summary, axes, x, y, view),
            parallel_figure(df, summary, axes), importance_figure(summary),
            evidence(best_run) if best_run else None, query)


@callback(Output("sweeps-retune", "figure"), Output("sweeps-retune-notes", "children"),
          Input("sweeps-version", "data"), Input("sweeps-pick", "value"), Input("sweeps-vs", "value"))
def update_retune(version_data: Any, sweep_id: str | None, vs: str | None):
    """The re-tuning gain, in its own callback: it reads a second sweep. (Picks are inputs, not
    states: the stamp's first check answers no_update, and Dash then skips callbacks that hang
    on the stamp alone.)"""
    if not sweep_id or not vs or vs == sweep_id:
        return retune_figure(None, None, None)
    try:
        a, df_a, _ = load(sweep_id, version_data)
        other = load(vs, version_data)
    except PerfbenchError as exc:
        return style.empty_figure(str(exc)), html.P(plain(str(exc)), className="pb-muted")
    return retune_figure(a, df_a, other)


def _best_run(st: Any, summary: dict[str, Any]) -> dict[str, Any] | None:
    run_id = (summary.get("best") or {}).get("run_id")
    try:
        return st.get_run(run_id) if run_id else None
    except PerfbenchError:
        return None


# -- pure figures --------------------------------------------------------------------------------


def metric_axis(metric: str) -> tuple[str, str | None]:
    """The metric's name and unit (tokens_per_s -> tokens/s)."""
    f = FIELDS.get(metric)
    return metric, f.unit if f else None


def param_unit(param: str) -> str | None:
    """A parameter's unit where its last path segment is a schema field (batch_size: sequences)."""
    f = FIELDS.get(param.rsplit(".", 1)[-1])
    return f.unit if f else None


def fmt(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def summary_panel(s: dict[str, Any]) -> html.Div:
    """The sweep in words: progress, best, default and the gain over it, peaks, notes."""
    metric, unit = metric_axis(s["metric"]["name"])
    best, default = s.get("best"), s.get("default")
    live = " (in progress: updates live)" if s["status"] == "running" else ""
    lines: list[Any] = [
        html.H3(plain(f"{s['name']} · {s['status']}{live}")),
        html.P(plain(f"{s['completed']} of {s['planned']} trials completed, {s['failed']} failed or infeasible, "
                     f"{s['pending']} pending · {s['method']} · {s['metric']['goal']} "
                     f"{metric} · hardware {s['hardware_id']} · workload {s['workload']}")),
        html.P(plain(f"best: {fmt(best['params'])} → {best['metric']:.4g} {unit or ''}" if best
                     else "best: no completed trial yet")),
        html.P(plain(_default_line(s, default, unit))),
    ]
    peaks = s.get("peaks")
    if peaks is not None:
        lines.append(html.P(plain(f"{len(peaks)} peak(s): " + "; ".join(
            f"{fmt(p['params'])} → {p['metric']:.4g}" for p in peaks[:8]) + (" …" if len(peaks) > 8 else ""))))
    elif s.get("peaks_note"):
        lines.append(html.P(plain(s["peaks_note"]), className="pb-muted"))
    if s.get("reason"):
        lines.append(html.P(plain(f"reason: {s['reason']}"), className="pb-muted"))
    return html.Div(lines, id="sweeps-summary-text")


def _default_line(s: dict[str, Any], default: dict[str, Any] | None, unit: str | None) -> str:
    if default and default.get("metric") is not None:
        g = s.get("gain_over_default")
        gain = f" · best is {g:+.1%} over it" if g is not None else ""
        return f"default: {fmt(default['params'])} → {default['metric']:.4g} {unit or ''}{gain}"
    return f"default: {s.get('default_note') or 'not measured'}"


def landscape_figure(df: pd.DataFrame, s: dict[str, Any], axes: dict[str, list[Any]] | None,
                     x: str | None, y: str | None, view: str = "heatmap") -> Any:
    """The metric over two parameters (others held at the best trial's values), peaks (stars) and
    the default (diamond) marked where they lie on the slice; a line for a one-parameter sweep."""
    metric, goal, params = s["metric"]["name"], s["metric"]["goal"], s["parameters"]
    if landscape.measured_trials(df, metric).empty:
        return style.empty_figure("No completed trials yet.")
    if x not in params:
        return style.empty_figure("Pick the parameters to plot.")
    if y not in params or y == x:
        return line_figure(df, s, axes, x)
    make = plots.plotly_contour if view == "contour" else plots.plotly_heatmap
    fig = make(df, x, y, params, metric, goal, axes=axes)
    fixed = {p: v for p, v in (s["best"] or {}).get("params", {}).items() if p not in (x, y)}
    _mark_points(fig, fixed, x, y, s, view)
    held = f" (held: {fmt(fixed)})" if fixed else ""
    m, unit = metric_axis(metric)
    fig.update_layout(template=style.TEMPLATE, title={"text": label(f"{m} over {x} × {y}{held}")},
                      margin={"l": 70, "r": 20, "t": 50, "b": 60}, legend={"orientation": "h", "y": -0.25})
    fig.update_xaxes(title={"text": label(_titled(x, param_unit(x)))})
    fig.update_yaxes(title={"text": label(_titled(y, param_unit(y)))})
    fig.update_traces(colorbar={"title": {"text": label(_titled(m, unit))}}, selector={"type": view})
    return fig


def _titled(name: str, unit: str | None) -> str:
    return f"{name} ({unit})" if unit else name


def _mark_points(fig: Any, fixed: dict[str, Any], x: str, y: str, s: dict[str, Any], view: str) -> None:
    """Peaks and the default on the slice (the slice holds the other parameters at the best's)."""
    import plotly.graph_objects as go

    if view == "contour":
        cols, rows = list(fig.layout.xaxis.ticktext), list(fig.layout.yaxis.ticktext)
    else:
        cols, rows = list(fig.data[0].x), list(fig.data[0].y)
    marks = [("peak", p, "star", "#ffffff") for p in (s.get("peaks") or [])]
    if s.get("default"):
        marks.append(("default", s["default"], "diamond-open", "#D55E00"))
    seen = set()
    for kind, point, symbol, colour in marks:
        params = point["params"]
        if any(landscape.value_key(params.get(p)) != landscape.value_key(v) for p, v in fixed.items()):
            continue  # not on this slice
        cx, cy = label(params.get(x)), label(params.get(y))  # the figure's labels are escaped already
        if cx not in cols or cy not in rows:
            continue
        px, py = (cols.index(cx), rows.index(cy)) if view == "contour" else (cx, cy)
        value = point.get("metric")
        fig.add_trace(go.Scatter(
            x=[px], y=[py], mode="markers", name=kind, legendgroup=kind, showlegend=kind not in seen,
            marker={"symbol": symbol, "size": 16, "color": colour, "line": {"color": "#000", "width": 1.5}},
            hovertext=[label(f"{kind}: {fmt(params)}" + (f" → {value:.4g}" if value is not None else ""))],
            hoverinfo="text"))
        seen.add(kind)


def line_figure(df: pd.DataFrame, s: dict[str, Any], axes: dict[str, list[Any]] | None, x: str) -> Any:
    """A one-parameter sweep: the metric along its only axis."""
    import plotly.graph_objects as go

    metric = s["metric"]["name"]
    m = landscape.measured_trials(df, metric)
    order = [landscape.value_key(v) for v in (axes or {}).get(x, [])]
    m = m.assign(_k=m[x].map(lambda v: landscape.value_key(landscape.unhash(v))))
    if order:
        m = m.assign(_o=m["_k"].map({k: i for i, k in enumerate(order)})).sort_values("_o")
    name, unit = metric_axis(metric)
    fig = style.figure(f"{name} against {x}")
    fig.add_trace(go.Scatter(x=[label(landscape.unhash(v)) for v in m[x]], y=m[metric], mode="lines+markers",
                             name=label(name)))
    fig.update_layout(xaxis={**style.axis(label(x), param_unit(x), log=False), "type": "category"},
                      yaxis=style.axis(label(name), unit, m[metric]))
    return fig


def parallel_figure(df: pd.DataFrame, s: dict[str, Any], axes: dict[str, list[Any]] | None) -> Any:
    """Every completed trial as a line, coloured by the metric, with a `marked` axis that singles
    out the peaks, the default and the best (filter on it by dragging along that axis)."""
    metric, goal, params = s["metric"]["name"], s["metric"]["goal"], s["parameters"]
    m = landscape.measured_trials(df, metric)
    if m.empty:
        return style.empty_figure("No completed trials yet.")
    fig = plots.plotly_parallel(df, params, metric, goal, axes=axes)
    marks = trial_marks(m, s)
    dims = list(fig.data[0].dimensions)
    dims.append({"label": "marked", "values": [marks[i] for i in m.index], "tickvals": [0, 1, 2, 3],
                 "ticktext": ["trial", "peak", "default", "best"], "range": [0, 3]})
    name, unit = metric_axis(metric)
    fig.data[0].dimensions = dims
    fig.data[0].line.colorbar = {"title": {"text": label(_titled(name, unit))}}
    fig.update_layout(template=style.TEMPLATE, title={"text": label(f"parallel coordinates: {name} ({len(m)} trials)")},
                      margin={"l": 70, "r": 40, "t": 80, "b": 30})
    return fig


def trial_marks(m: pd.DataFrame, s: dict[str, Any]) -> dict[Any, int]:
    """Per completed trial: 0 trial, 1 peak, 2 default, 3 best (the highest role wins)."""
    out = {i: 0 for i in m.index}
    by_trial = {t: i for i, t in zip(m.index, m["trial_index"])}
    roles = [(1, p) for p in (s.get("peaks") or [])] + [(2, s.get("default")), (3, s.get("best"))]
    for code, point in roles:
        if point and point.get("trial_index") in by_trial:
            i = by_trial[point["trial_index"]]
            out[i] = max(out[i], code)
    return out


def importance_figure(s: dict[str, Any]) -> Any:
    """Main-effect variance share per parameter; `n/a` where it cannot be estimated."""
    import plotly.graph_objects as go

    imp = s.get("importance") or {}
    if not imp:
        return style.empty_figure("No parameters.")
    names = sorted(imp, key=lambda p: -(imp[p] or 0))
    fig = style.figure("parameter importance (first-order variance share)")
    fig.add_trace(go.Bar(x=[label(p) for p in names], y=[imp[p] or 0 for p in names],
                         text=["n/a" if imp[p] is None else f"{imp[p]:.0%}" for p in names], textposition="auto",
                         marker_color="#0072B2", hovertext=[label(s.get("importance_method", ""))] * len(names)))
    fig.update_layout(xaxis={**style.axis("parameter", None, log=False), "type": "category"},
                      yaxis={**style.axis("share of the metric's variance", "fraction", log=False),
                             "range": [0, 1], "tickformat": ".0%"})
    return fig


def retune_figure(s: dict[str, Any] | None, df: pd.DataFrame | None, other: tuple | None) -> tuple[Any, Any]:
    """The gain from re-tuning on each machine rather than reusing the other's best setting."""
    if s is None or other is None:
        return style.empty_figure("Pick another sweep (the same sweep on other hardware) to see the "
                                  "gain from re-tuning."), None
    s_b, df_b, _ = other
    try:
        c = landscape.compare(s, s_b, df, df_b)
    except PerfbenchError as exc:
        return style.empty_figure(str(exc)), html.P(plain(str(exc)), className="pb-muted")
    return retune_bars(c), html.Ul([html.Li(plain(n)) for n in c["notes"]], className="pb-muted")


def retune_bars(c: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    name, unit = metric_axis(c["metric"]["name"])
    sides = [("a", "b_best_on_a", "gain_from_retuning_on_a"), ("b", "a_best_on_b", "gain_from_retuning_on_b")]
    xs = [label(f"{k.upper()}: {c[k]['name']} · {c[k]['hardware_id']}") for k, _, _ in sides]
    own = [(c[k]["best"] or {}).get("metric") for k, _, _ in sides]
    reused = [(c[o] or {}).get("metric") for _, o, _ in sides]
    gains = [c[g] for _, _, g in sides]
    fig = style.figure("re-tuning gain: " + ", ".join(
        f"{k.upper()} {g:+.1%}" if g is not None else f"{k.upper()} n/a" for (k, _, _), g in zip(sides, gains)))
    fig.add_trace(go.Bar(name="re-tuned (own best)", x=xs, y=own, marker_color="#009E73"))
    fig.add_trace(go.Bar(name="other machine's best reused", x=xs, y=reused, marker_color="#7F7F7F",
                         text=["not measured" if v is None else "" for v in reused], textposition="outside"))
    fig.update_layout(barmode="group", xaxis={**style.axis("sweep", None, log=False), "type": "category"},
                      yaxis=style.axis(label(name), unit, [v for v in own + reused if v is not None]))
    return fig


def report_figures(st: Any, run_ids: list[str], sweep_ids: list[str]) -> list[tuple[str, Any]]:
    """The figures of this page for `perfbench report`: per sweep its first landscape slice, the
    parallel coordinates and the importance; for two sweeps, the re-tuning gain."""
    out: list[tuple[str, Any]] = []
    loaded = []
    for sid in sweep_ids:
        summary, df, sweep = landscape.load_sweep_data(st, sid)
        loaded.append((summary, df, sweep))
        axes = sweep.axes() if sweep.discrete else None
        x, y = pick_axes(summary["parameters"], None, None)
        name = summary["name"]
        out += [(f"Sweep {name}: landscape", landscape_figure(df, summary, axes, x, y)),
                (f"Sweep {name}: parallel coordinates", parallel_figure(df, summary, axes)),
                (f"Sweep {name}: parameter importance", importance_figure(summary))]
    for (a, df_a, _), b in itertools.combinations(loaded, 2):
        if a["metric"] != b[0]["metric"] or sorted(a["parameters"]) != sorted(b[0]["parameters"]):
            continue  # not the same sweep on two machines: no re-tuning gain to show
        fig, _ = retune_figure(a, df_a, b)
        out.append((f"Re-tuning gain: {a['name']} vs {b[0]['name']}", fig))
    return out

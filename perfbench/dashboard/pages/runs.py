"""Runs: every run in a filterable, server-side paged table; selected runs plotted against batch
size (median with its p10-p90 band), their raw samples as box plots, failed and noisy points marked.

URL: ?model=..&backend=..&hardware=..&phase=..&dtype=..&status=..&since=YYYY-MM-DD&until=..&q=TEXT
&runs=ID,ID&page=N
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, callback, dash_table, dcc, html

from perfbench.dashboard import style, urlstate
from perfbench.dashboard.components import controls, empty_state, error_panel, evidence, labelled, page_layout, url_mirror
from perfbench.dashboard.data import FILTERS, MAX_SELECTED, RunFilter, filter_options, points_frame, run_label, scoped_runs
from perfbench.dashboard.source import open_store
from perfbench.errors import PerfbenchError
from perfbench.textsafe import label, plain

PAGE = "runs"
PAGE_SIZE = 25
#: A point is marked noisy above this coefficient of variation of its samples.
NOISY_CV = 0.1
TABLE_COLUMNS = [("run_id", "run"), ("name", "name"), ("status", "status"), ("model", "model"),
                 ("backend", "backend"), ("hardware_name", "hardware"), ("phase", "phase"), ("dtype", "dtype"),
                 ("points_ok", "ok"), ("points_failed", "failed"), ("created_at", "started (UTC)")]
_POINT_FIELDS = ["batch_size", "seq_len", "new_tokens", "status", "error", "latency_median_s", "latency_p10_s",
                 "latency_p90_s", "latency_cv", "tokens_per_s", "samples_s", "n_samples"]

urlstate.sync_url(f"{PAGE}-query")


@page_layout(PAGE)
def layout(**query: Any) -> Any:
    with open_store() as st:
        runs = scoped_runs(st)
    if runs.empty:
        return empty_state("No runs in this store yet.", "perfbench run workloads/tiny-llama-cpu.yaml")
    opts = filter_options(runs)
    selected = urlstate.items(query, "runs", MAX_SELECTED)
    dropdowns = [labelled(key, dcc.Dropdown(id=f"runs-f-{key}", options=opts[key], value=urlstate.items(query, key),
                                             multi=True, placeholder="all")) for key in FILTERS]
    return html.Div([
        *url_mirror(PAGE),
        dcc.Store(id="runs-selected", data=selected),
        controls(*dropdowns,
                 labelled("since", dcc.Input(id="runs-f-since", type="text", placeholder="YYYY-MM-DD",
                                             value=urlstate.text(query, "since") or "", debounce=True)),
                 labelled("until", dcc.Input(id="runs-f-until", type="text", placeholder="YYYY-MM-DD",
                                             value=urlstate.text(query, "until") or "", debounce=True)),
                 labelled("name or id", dcc.Input(id="runs-f-q", type="text", value=urlstate.text(query, "q") or "",
                                                  debounce=True))),
        html.Div(id="runs-count", className="pb-muted"),
        dash_table.DataTable(
            id="runs-table", columns=[{"name": n, "id": c} for c, n in TABLE_COLUMNS],
            page_action="custom", page_current=int(urlstate.number(query, "page", 0, 0, 1e6)), page_size=PAGE_SIZE,
            sort_action="custom", sort_mode="single", sort_by=[], row_selectable="multi", selected_row_ids=selected,
            style_table={"overflowX": "auto"}, style_cell={"fontSize": "0.85rem", "textAlign": "left"},
            style_data_conditional=[{"if": {"filter_query": '{status} = "failed"'}, "color": "#D55E00"},
                                    {"if": {"filter_query": '{status} = "running"'}, "color": "#0072B2"},
                                    {"if": {"filter_query": '{status} = "interrupted"'}, "color": "#B07800"}]),
        html.Div([html.Div(dcc.Graph(id="runs-batch"), className="pb-card"),
                  html.Div(dcc.Graph(id="runs-tokens"), className="pb-card"),
                  html.Div(dcc.Graph(id="runs-samples"), className="pb-card")], className="pb-grid"),
        html.Div(id="runs-evidence"),
    ])


dash.register_page(__name__, path="/", name="Runs", order=0, title="perfbench · runs", layout=layout)


def _sorted(df: pd.DataFrame, sort_by: list[dict] | None) -> pd.DataFrame:
    allowed = {c for c, _ in TABLE_COLUMNS}
    if sort_by and sort_by[0].get("column_id") in allowed:
        return df.sort_values(sort_by[0]["column_id"], ascending=sort_by[0].get("direction") == "asc", kind="stable")
    return df


@callback(Output("runs-table", "data"), Output("runs-table", "page_count"), Output("runs-count", "children"),
          Output("runs-query", "data"), Output("runs-table", "selected_rows"),
          *[Input(f"runs-f-{k}", "value") for k in FILTERS],
          Input("runs-f-since", "value"), Input("runs-f-until", "value"), Input("runs-f-q", "value"),
          Input("runs-table", "page_current"), Input("runs-table", "sort_by"),
          Input("runs-selected", "data"), Input("refresh-tick", "n_intervals"))
def update_table(*args: Any):
    """The page of runs the filters select (server-side: only PAGE_SIZE rows reach the browser)."""
    values = dict(zip(FILTERS, args[:len(FILTERS)]))
    since, until, text, page, sort_by, selected, _tick = args[len(FILTERS):]
    state = {**{k: [str(x) for x in (v or [])][:MAX_SELECTED] for k, v in values.items()},
             "since": since, "until": until, "q": text}
    filt = RunFilter(values={k: state[k] for k in FILTERS}, since=_date(since), until=_date(until),
                     text=urlstate.text(state, "q"))
    with open_store() as st:
        runs = filt.apply(scoped_runs(st))
    runs = _sorted(runs, sort_by)
    pages = max(1, -(-len(runs) // PAGE_SIZE))
    page = min(int(page or 0), pages - 1)
    rows = runs.iloc[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    data = [{**{c: _cell(r[c]) for c, _ in TABLE_COLUMNS}, "id": r["run_id"]} for _, r in rows.iterrows()]
    query = urlstate.query_string({**state, "page": page or None, "runs": selected or []})
    chosen = set(selected or [])
    return data, pages, f"{len(runs):,} runs match", query, [i for i, r in enumerate(data) if r["id"] in chosen]


def _date(value: Any) -> str | None:
    """A YYYY-MM-DD bound typed in the page; anything else is ignored (no filter)."""
    import re

    text = str(value or "").strip()
    return text if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None


def _cell(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and pd.isna(v)) else (v if isinstance(v, (int, float)) else plain(v))


@callback(Output("runs-selected", "data"), Input("runs-table", "selected_row_ids"), State("runs-table", "data"),
          State("runs-selected", "data"), prevent_initial_call=True)
def remember_selection(ids: list[str] | None, data: list[dict] | None, before: list[str] | None) -> list[str]:
    """The selection across pages: this page's ticks, plus what was ticked on other pages."""
    on_page = {r["id"] for r in data or []}
    merged = list(dict.fromkeys([x for x in before or [] if x not in on_page] + list(ids or [])))[:MAX_SELECTED]
    if merged == (before or []):
        raise dash.exceptions.PreventUpdate
    return merged


@callback(Output("runs-evidence", "children", allow_duplicate=True), Input("runs-batch", "clickData"),
          Input("runs-tokens", "clickData"), prevent_initial_call=True)
def show_point(*clicks: dict | None):
    """A clicked point's evidence: its run's spec and provenance, and the command that measures
    just that point again."""
    return point_evidence(dash.ctx.triggered[0]["value"] if dash.ctx.triggered else None)


def point_evidence(click: dict | None) -> Any:
    """Evidence for a figure click (customdata: cv, run id, batch size); PreventUpdate otherwise."""
    data = ((click or {}).get("points") or [{}])[0].get("customdata")
    if not isinstance(data, list) or len(data) < 3 or not isinstance(data[1], str):
        raise dash.exceptions.PreventUpdate
    try:
        with open_store() as st:
            run = st.get_run(data[1][:200])
    except PerfbenchError as exc:
        return error_panel(str(exc))
    point = next((p for p in run["points"] if p["batch_size"] == data[2]), None)
    return evidence(run, point)


@callback(Output("runs-batch", "figure"), Output("runs-tokens", "figure"), Output("runs-samples", "figure"),
          Output("runs-evidence", "children"), Input("runs-selected", "data"), Input("refresh-tick", "n_intervals"))
def plot_selected(selected: list[str] | None, _tick: int):
    """Latency and tokens/s against batch size for the selected runs, and their raw samples."""
    if not selected:
        msg = "Select runs in the table to plot them against batch size."
        return style.empty_figure(msg), style.empty_figure(msg), style.empty_figure(msg), None
    try:
        with open_store() as st:
            runs = scoped_runs(st, selected)
            pts = points_frame(st, list(runs["run_id"]), _POINT_FIELDS)
            first = st.get_run(selected[0]) if selected[0] in set(runs["run_id"]) else None
    except PerfbenchError as exc:
        return style.empty_figure(str(exc)), style.empty_figure(str(exc)), style.empty_figure(str(exc)), error_panel(str(exc))
    return (batch_figure(runs, pts, "latency"), batch_figure(runs, pts, "tokens"), samples_figure(runs, pts),
            evidence(first) if first else None)


def batch_figure(runs: pd.DataFrame, pts: pd.DataFrame, metric: str = "latency") -> Any:
    """Median latency (or tokens/s) against batch size, one line per run with its p10-p90 band;
    noisy points as open diamonds, failed points as crosses."""
    ylab, yunit = ("latency (median)", "s") if metric == "latency" else ("throughput", "tokens/s")
    fig = style.figure(f"{ylab} against batch size")
    by_run = runs.set_index("run_id")
    traces: list[dict] = []
    seen: dict[str, int] = {}  # runs per hardware so far: same colour, told apart by dash and marker
    for run_id, group in pts.groupby("run_id", sort=False):
        run = by_run.loc[run_id]
        nth = seen[run["hardware_id"]] = seen.get(run["hardware_id"], -1) + 1
        traces += _run_traces(run_id, run, group, metric, yunit, nth)
    fig.add_traces(traces)  # one call: plotly validates the list once
    ok_pts = pts[pts["status"] == "ok"]
    fig.update_layout(xaxis=style.axis("batch size", "sequences", ok_pts["batch_size"]),
                      yaxis=style.axis(ylab, yunit, ok_pts["latency_median_s" if metric == "latency" else "tokens_per_s"]),
                      uirevision=f"runs-{metric}")
    return fig


_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
_MARKERS = ("circle", "square", "triangle-up", "diamond", "cross")


def _run_traces(run_id: str, run: pd.Series, group: pd.DataFrame, metric: str, yunit: str, nth: int = 0) -> list[dict]:
    """One run's band, line and failed-point marks, as plain trace dicts; `nth` run of its hardware."""
    name, col = label(run_label(run.to_dict() | {"run_id": run_id})), style.colour(run["hardware_id"])
    ok = group[group["status"] == "ok"].sort_values("batch_size")
    if metric == "latency":
        lo, hi, mid = ok["latency_p10_s"], ok["latency_p90_s"], ok["latency_median_s"]
    else:
        toks = ok["tokens_per_s"] * ok["latency_median_s"]  # tokens per step
        lo, hi, mid = toks / ok["latency_p90_s"], toks / ok["latency_p10_s"], ok["tokens_per_s"]
    xs = list(ok["batch_size"])
    noisy = ok["latency_cv"].fillna(0) > NOISY_CV
    out = [{"type": "scatter", "x": xs + xs[::-1], "y": list(hi) + list(lo)[::-1], "fill": "toself", "fillcolor": col,
            "opacity": 0.18, "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False, "legendgroup": run_id},
           {"type": "scatter", "x": xs, "y": list(mid), "mode": "lines+markers", "name": name, "legendgroup": run_id,
            "line": {"color": col, "dash": _DASHES[nth % len(_DASHES)]},
            "marker": {"symbol": ["diamond-open" if n else _MARKERS[nth % len(_MARKERS)] for n in noisy], "size": 9},
            "customdata": [[cv, run_id, int(b)] for cv, b in zip(ok["latency_cv"].fillna(0), ok["batch_size"])],
            "hovertemplate": "batch %{x}<br>%{y:.4g} " + yunit + "<br>cv %{customdata[0]:.1%}<extra></extra>"}]
    failed = group[group["status"] == "failed"]
    if not failed.empty:
        out.append({"type": "scatter", "x": list(failed["batch_size"]), "y": [mid.min() if len(mid) else 0] * len(failed),
                    "mode": "markers", "name": label(f"failed · {run['name']}"), "legendgroup": run_id,
                    "marker": {"symbol": "x", "size": 12, "color": "#D55E00"},
                    "text": [label(e) for e in failed["error"]],
                    "hovertemplate": "batch %{x}: failed<br>%{text}<extra></extra>"})
    return out


def samples_figure(runs: pd.DataFrame, pts: pd.DataFrame) -> Any:
    """Every measured step time of each point as box plots, one trace per run (grouped by point):
    a few traces, not one per point, so 25 selected runs still draw quickly."""
    box = style.figure("raw samples per point", boxmode="group")
    hw = dict(zip(runs["run_id"], runs["hardware_id"]))
    names = dict(zip(runs["run_id"], runs["name"]))
    traces = []
    for run_id, group in pts[pts["status"] == "ok"].sort_values("batch_size").groupby("run_id", sort=False):
        xs, ys = [], []
        for b, samples in zip(group["batch_size"], group["samples_s"]):
            samples = samples or []
            xs += [f"b{b}"] * len(samples)
            ys += samples
        traces.append({"type": "box", "x": xs, "y": ys, "name": label(f"{names.get(run_id)} · {str(run_id)[-6:]}"),
                       "marker": {"color": style.colour(hw.get(run_id)), "size": 3},
                       "boxpoints": "all" if len(ys) <= 2000 else "outliers", "jitter": 0.4})
    box.add_traces(traces)
    box.update_layout(xaxis={"title": {"text": "point (batch size)"}}, yaxis=style.axis("step time", "s"),
                      uirevision="runs-box")
    return box


def report_figures(st: Any, run_ids: list[str], sweep_ids: list[str]) -> list[tuple[str, Any]]:
    """The figures of this page for `perfbench report`: (title, figure) pairs."""
    runs = scoped_runs(st, run_ids)
    if runs.empty:
        return []
    pts = points_frame(st, list(runs["run_id"]), _POINT_FIELDS)
    return [("Latency against batch size", batch_figure(runs, pts, "latency")),
            ("Tokens/s against batch size", batch_figure(runs, pts, "tokens")), ("Raw samples", samples_figure(runs, pts))]

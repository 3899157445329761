"""Serving: a server under load, as its users see it. TTFT, TPOT, ITL or E2E percentiles (p50, p90,
p99) and throughput with goodput against the load (concurrency, or the achieved request rate of an
open loop), with the spec's SLO limit drawn and invalid load points (the client was the bottleneck)
marked with their reason. Definitions: docs/serving.md.

URL: ?runs=ID,ID&metric=ttft|tpot|itl|e2e&load=auto|concurrency|rate
"""

from __future__ import annotations

import json
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, callback, dcc, html

from perfbench.dashboard import style, urlstate
from perfbench.dashboard.components import controls, empty_state, error_panel, evidence, labelled, page_layout, url_mirror, watch_version
from perfbench.dashboard.data import MAX_SELECTED, points_frame, run_label, scoped_runs, store_version
from perfbench.dashboard.source import open_store
from perfbench.errors import PerfbenchError
from perfbench.textsafe import label, plain

PAGE = "serving"
#: metric key -> (what it is, the SLO key in the spec's `load.slo`, or None)
METRICS = {"ttft": ("time to first token", "ttft_ms"), "tpot": ("time per output token", "tpot_ms"),
           "itl": ("inter-token latency", None), "e2e": ("end-to-end latency", "e2e_ms")}
LOADS = ("auto", "concurrency", "rate")
PERCENTILES = (("p50", "solid"), ("p90", "dash"), ("p99", "dot"))
EMPTY_COMMAND = "perfbench run workloads/serving-llama-cpp-tiny.yaml"
INVALID_COLOUR = "#D55E00"
_FIELDS = ["load_point", "status", "error", "batch_size", "concurrency", "target_rate_rps", "achieved_rate_rps",
           "n_requests", "n_failed", *[f"{m}_{p}_s" for m in METRICS for p, _ in PERCENTILES],
           "requests_per_s", "output_tokens_per_s", "goodput_rps", "point_valid", "invalid_reason"]

urlstate.sync_url(f"{PAGE}-query")


def serving_runs(st: Any) -> pd.DataFrame:
    """The runs of phase `serve` in scope, newest first."""
    runs = scoped_runs(st)
    return runs[runs["phase"] == "serve"]


@page_layout(PAGE)
def layout(**query: Any) -> Any:
    with open_store() as st:
        runs = serving_runs(st)
        version = store_version(st)
    if runs.empty:
        return empty_state("No serving runs in this store yet.", EMPTY_COMMAND)
    known = set(runs["run_id"])
    selected = [r for r in urlstate.items(query, "runs", MAX_SELECTED) if r in known] or [runs["run_id"].iloc[0]]
    opts = [{"label": plain(run_label(r)), "value": r["run_id"]} for _, r in runs.iterrows()]
    return html.Div([
        *url_mirror(PAGE),
        dcc.Store(id="serving-version", data=version),
        controls(
            labelled("serving runs", dcc.Dropdown(id="serving-runs", options=opts, value=selected, multi=True,
                                                  style={"minWidth": "30rem"})),
            labelled("latency", dcc.RadioItems(id="serving-metric", value=urlstate.text(query, "metric", "ttft",
                                                                                         tuple(METRICS)),
                                               options=[{"label": f" {k.upper()}", "value": k} for k in METRICS],
                                               inline=True)),
            labelled("load axis", dcc.RadioItems(id="serving-load", value=urlstate.text(query, "load", "auto", LOADS),
                                                 options=[{"label": f" {v}", "value": v} for v in LOADS], inline=True))),
        html.Div([html.Div(dcc.Graph(id="serving-latency"), className="pb-card"),
                  html.Div(dcc.Graph(id="serving-throughput"), className="pb-card")], className="pb-grid"),
        html.Div(id="serving-invalid"),
        html.Div(id="serving-evidence"),
    ])


dash.register_page(__name__, path="/serving", name="Serving", order=6, title="perfbench · serving", layout=layout)


watch_version(PAGE)


@callback(Output("serving-latency", "figure"), Output("serving-throughput", "figure"),
          Output("serving-invalid", "children"), Output("serving-evidence", "children"),
          Output("serving-query", "data"), Input("serving-runs", "value"), Input("serving-metric", "value"),
          Input("serving-load", "value"), Input("serving-version", "data"))
def update(selected: list[str] | None, metric: str, load: str, _version: Any):
    """Both figures for the selected runs, the invalid load points, and the URL of this view."""
    selected = list(dict.fromkeys(selected or []))[:MAX_SELECTED]
    metric = metric if metric in METRICS else "ttft"
    load = load if load in LOADS else "auto"
    query = urlstate.query_string({"runs": selected, "metric": metric if metric != "ttft" else None,
                                   "load": load if load != "auto" else None})
    if not selected:
        msg = style.empty_figure("Pick serving runs to plot.")
        return msg, msg, None, None, query
    try:
        with open_store() as st:
            runs, pts, slos = load_data(st, selected)
            first = st.get_run(runs["run_id"].iloc[0]) if not runs.empty else None
    except PerfbenchError as exc:
        msg = style.empty_figure(str(exc))
        return msg, msg, error_panel(str(exc)), None, query
    lat, thr = serving_figures(runs, pts, slos, metric, load)
    return lat, thr, invalid_list(runs, pts), evidence(first) if first else None, query


def load_data(st: Any, run_ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, float]]]:
    """(the serving runs among `run_ids`, their load points, each run's SLO limits in ms)."""
    runs = serving_runs(st)
    runs = runs[runs["run_id"].isin(run_ids)]
    ids = list(runs["run_id"])
    pts = points_frame(st, ids, _FIELDS)
    slos: dict[str, dict[str, float]] = {}
    if ids:
        rows = st.query(f"SELECT run_id, json_extract(spec_json, '$.load.slo') FROM runs WHERE run_id IN "
                        f"({','.join('?' * len(ids))})", ids, what="read serving SLOs")
        slos = {r[0]: _slo(r[1]) for r in rows}
    return runs, pts, slos


def _slo(raw: Any) -> dict[str, float]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {k: float(v) for k, v in value.items() if isinstance(v, (int, float))} if isinstance(value, dict) else {}


def load_axis(pts: pd.DataFrame, load: str) -> tuple[str, str, str]:
    """(column, title, unit) of the load axis: concurrency for closed loops, achieved rate for open
    loops (`auto`: the rate where any point was open loop)."""
    open_loop = "target_rate_rps" in pts and pts["target_rate_rps"].notna().any()
    if load == "rate" or (load == "auto" and open_loop):
        return "achieved_rate_rps", "achieved request rate", "requests/s"
    return "concurrency", "concurrency (requests in flight)", "requests"


def _colours(runs: pd.DataFrame) -> dict[str, str]:
    """Hardware colours where every run has its own hardware, else one colour per run."""
    by_hw = runs["hardware_id"].nunique() == len(runs)
    return {r["run_id"]: style.colour(r["hardware_id"]) if by_hw else style.colour(r["run_id"], "run")
            for _, r in runs.iterrows()}


def serving_figures(runs: pd.DataFrame, pts: pd.DataFrame, slos: dict[str, dict[str, float]],
                    metric: str = "ttft", load: str = "auto") -> list[Any]:
    """[latency percentiles against load, requests/s and goodput against load]."""
    xcol, xtitle, xunit = load_axis(pts, load)
    what, slo_key = METRICS[metric]
    lat = style.figure(f"{metric.upper()} ({what}) p50 / p90 / p99 against load")
    thr = style.figure("throughput and goodput against load")
    colours, by_run = _colours(runs), runs.set_index("run_id")
    for run_id, group in pts.groupby("run_id", sort=False):
        name = label(run_label(by_run.loc[run_id].to_dict() | {"run_id": run_id}))
        group = group.sort_values(xcol)
        _latency_traces(lat, group, metric, xcol, name, run_id, colours[run_id])
        _throughput_traces(thr, group, xcol, name, run_id, colours[run_id])
    _slo_lines(lat, slos, slo_key)
    ys = pd.concat([pts[f"{metric}_{p}_s"] for p, _ in PERCENTILES]) if not pts.empty else []
    lat.update_layout(xaxis=style.axis(xtitle, xunit, pts[xcol]), yaxis=style.axis(what, "s", ys), uirevision=PAGE)
    thr.update_layout(xaxis=style.axis(xtitle, xunit, pts[xcol]),
                      yaxis=style.axis("requests", "requests/s", pd.concat([pts["requests_per_s"], pts["goodput_rps"]])),
                      uirevision=PAGE + "-thr")
    return [lat, thr]


def _slo_lines(fig: Any, slos: dict[str, dict[str, float]], slo_key: str | None) -> None:
    """One dashed line per distinct SLO limit of the metric (set at once: add_hline is slow)."""
    limits = sorted({v[slo_key] for v in slos.values() if slo_key and v.get(slo_key) is not None})
    shapes = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": ms / 1000, "y1": ms / 1000,
               "line": {"dash": "dashdot", "color": "#D55E00", "width": 1}} for ms in limits]
    notes = [{"xref": "paper", "x": 0, "yref": "y", "y": ms / 1000, "text": label(f"SLO {slo_key} {ms:g}"),
              "showarrow": False, "xanchor": "left", "yanchor": "bottom", "font": {"color": "#D55E00"}}
             for ms in limits]
    fig.update_layout(shapes=shapes, annotations=notes)


def _hover(group: pd.DataFrame) -> list[str]:
    return [label(f"{lp} · {'INVALID: ' + str(r) if v == False else 'valid'}")  # noqa: E712 (None: not checked)
            for lp, v, r in zip(group["load_point"], group["point_valid"], group["invalid_reason"])]


def _latency_traces(fig: Any, group: pd.DataFrame, metric: str, xcol: str, name: str, run_id: str, colour: str) -> None:
    import plotly.graph_objects as go

    ok = group[group["status"] == "ok"]
    for p, dash_style in PERCENTILES:
        fig.add_trace(go.Scatter(x=ok[xcol], y=ok[f"{metric}_{p}_s"], mode="lines+markers", name=f"{name} · {p}",
                                 legendgroup=run_id, line={"color": colour, "dash": dash_style},
                                 text=_hover(ok), hovertemplate="%{x}: %{y:.4g} s<br>%{text}<extra>" + p + "</extra>"))
    _mark_invalid(fig, ok, xcol, f"{metric}_p99_s", run_id)
    _mark_failed(fig, group, xcol, ok[f"{metric}_p50_s"], run_id)


def _throughput_traces(fig: Any, group: pd.DataFrame, xcol: str, name: str, run_id: str, colour: str) -> None:
    import plotly.graph_objects as go

    ok = group[group["status"] == "ok"]
    for col, what, dash_style in (("requests_per_s", "requests/s", "solid"), ("goodput_rps", "goodput", "dash")):
        fig.add_trace(go.Scatter(x=ok[xcol], y=ok[col], mode="lines+markers", name=f"{name} · {what}",
                                 legendgroup=run_id, line={"color": colour, "dash": dash_style}, text=_hover(ok),
                                 hovertemplate="%{x}: %{y:.4g} requests/s<br>%{text}<extra>" + what + "</extra>"))
    _mark_invalid(fig, ok, xcol, "requests_per_s", run_id)
    _mark_failed(fig, group, xcol, ok["requests_per_s"], run_id)


def _mark_invalid(fig: Any, ok: pd.DataFrame, xcol: str, ycol: str, run_id: str) -> None:
    """A ring around each invalid load point, its reason on hover."""
    import plotly.graph_objects as go

    bad = ok[ok["point_valid"] == False]  # noqa: E712 (None: not checked, not invalid)
    if bad.empty:
        return
    fig.add_trace(go.Scatter(x=bad[xcol], y=bad[ycol], mode="markers", name="invalid load point",
                             legendgroup=run_id, marker={"symbol": "circle-x-open", "size": 16, "color": INVALID_COLOUR,
                                                         "line": {"width": 2}},
                             text=[label(f"{lp}: {r}") for lp, r in zip(bad["load_point"], bad["invalid_reason"])],
                             hovertemplate="invalid: %{text}<extra></extra>"))


def _mark_failed(fig: Any, group: pd.DataFrame, xcol: str, ys: pd.Series, run_id: str) -> None:
    import plotly.graph_objects as go

    failed = group[group["status"] == "failed"]
    if failed.empty:
        return
    y = ys.min() if ys.notna().any() else 0
    fig.add_trace(go.Scatter(x=failed[xcol].fillna(failed["batch_size"]), y=[y] * len(failed), mode="markers",
                             name="failed load point", legendgroup=run_id,
                             marker={"symbol": "x", "size": 12, "color": INVALID_COLOUR},
                             text=[label(f"{lp}: {e}") for lp, e in zip(failed["load_point"], failed["error"])],
                             hovertemplate="failed: %{text}<extra></extra>"))


def invalid_list(runs: pd.DataFrame, pts: pd.DataFrame) -> Any:
    """The invalid and failed load points in words, each with its reason."""
    names = dict(zip(runs["run_id"], runs["name"]))
    bad = pts[(pts["point_valid"] == False) | (pts["status"] == "failed")]  # noqa: E712
    if bad.empty:
        return html.P("Every load point is valid (the client kept up with the load).", className="pb-muted")
    items = [html.Li(plain(f"{names.get(r['run_id'], r['run_id'])} · {r['load_point']}: "
                           + (f"failed: {r['error']}" if r["status"] == "failed" else f"invalid: {r['invalid_reason']}")))
             for _, r in bad.iterrows()]
    return html.Div([html.H4("Load points not to trust"), html.Ul(items, id="serving-invalid-list")])


def report_figures(st: Any, run_ids: list[str], sweep_ids: list[str]) -> list[tuple[str, Any]]:
    """The figures of this page for `perfbench report`: TTFT, TPOT and throughput for the serving
    runs among `run_ids` (none when there are none)."""
    runs, pts, slos = load_data(st, run_ids)
    if runs.empty:
        return []
    ttft, thr = serving_figures(runs, pts, slos, "ttft")
    tpot, _ = serving_figures(runs, pts, slos, "tpot")
    return [("Serving: TTFT against load", ttft), ("Serving: TPOT against load", tpot),
            ("Serving: throughput and goodput against load", thr)]

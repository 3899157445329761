"""Roofline: where each run (and, with a trace, each operator type and projection) sits against the
ceilings of the hardware it ran on, and its latency split per batch into the roofline floor, CPU
launch overhead and the rest.

Ceilings: auto (measured when that machine was calibrated, else the datasheet of its profile),
measured or datasheet, as `perfbench roofline place --ceilings`. Runs on different machines are each
placed on their own machine's ceilings: one roof per machine and dtype, labelled, in the machine's
colour, never a shared roof.

URL: ?runs=ID,ID&ceilings=auto|measured|datasheet&ops=1
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, callback, dash_table, dcc, html

from perfbench.dashboard import style, urlstate
from perfbench.dashboard.components import controls, empty_state, error_panel, labelled, page_layout, url_mirror
from perfbench.dashboard.data import run_label, scoped_runs
from perfbench.dashboard.components import watch_version
from perfbench.dashboard.data import store_version
from perfbench.dashboard.traces import trace_analysis
from perfbench.dashboard.source import open_store
from perfbench.errors import PerfbenchError
from perfbench.textsafe import label, plain

PAGE = "roofline"
CEILINGS = ("auto", "measured", "datasheet")
#: At most this many runs are placed at once (each may read its traces once, then cached).
MAX_RUNS = 8
DEFAULT_MACHINES = 3
#: Placements kept (key: run, ceilings, points and trace file versions).
_CACHE_SIZE = 32
_PLACED: OrderedDict[tuple, list[dict[str, Any]]] = OrderedDict()
_CEILINGS: OrderedDict[tuple, Any] = OrderedDict()
SPLIT_COLOURS = {"floor": "#0072B2", "launch": "#E69F00", "rest": "#BBBBBB"}
_OP_SYMBOLS = {"matmul": "square", "attention": "triangle-up", "embedding": "diamond", "elementwise": "x"}
_RUN_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "pentagon", "hexagon", "star", "cross")
TABLE_COLUMNS = [("run", "run"), ("batch_size", "batch"), ("median_ms", "median (ms)"), ("ai", "FLOP/B"),
                 ("achieved_tflops", "achieved (TFLOP/s)"), ("roof_pct", "% of roof"), ("bound", "bound"),
                 ("floor_ms", "floor (ms)"), ("launch_ms", "CPU launch (ms)"), ("rest_ms", "rest (ms)"),
                 ("ceilings", "ceilings"), ("note", "note")]

urlstate.sync_url(f"{PAGE}-query")


def placeable(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs a roofline can hold: measured ok points of a model forward (serving runs measure a
    server's requests, not a forward pass with known FLOPs)."""
    return runs[(runs["points_ok"] > 0) & (runs["phase"] != "serve")]


# -- placing runs (cached) -------------------------------------------------------------------------


def place(st: Any, run_id: str, choice: str) -> dict[str, Any]:
    """{"run", "ceilings", "rows"} for one run, or {"run", "error"}: the reason it has no ceilings
    (which profile, or `perfbench calibrate`) or cannot be placed."""
    run = st.get_run(run_id)
    try:
        ceil = ceilings_for(st, run, choice)
        rows = _placed_rows(run, ceil)
    except PerfbenchError as exc:
        return {"run": run, "error": str(exc)}
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:  # a damaged or foreign spec
        return {"run": run, "error": f"cannot place this run: {type(exc).__name__}: {exc}"}
    if not rows:
        return {"run": run, "error": "no successful points to place"}
    return {"run": run, "ceilings": ceil, "rows": rows}


def ceilings_for(st: Any, run: dict[str, Any], choice: str) -> dict[str, Any]:
    """`run_ceilings`, cached. Why: matching a fingerprint to a profile parses every profile's YAML
    (~170 ms); the answer changes only with the fingerprint, dtype, choice and the calibrations."""
    import json

    from perfbench.roofline.ceilings import run_ceilings

    cals = st.query("SELECT COUNT(*), MAX(created_at) FROM calibrations WHERE hardware_id=? AND device=?",
                    (run["hardware_id"], run["device"]), what="read calibrations")[0]
    key = (json.dumps(run["fingerprint"], sort_keys=True, default=str), run["hardware_id"], run["device"],
           run["spec"].get("dtype"), choice, tuple(cals))
    if key not in _CEILINGS:
        try:
            _CEILINGS[key] = run_ceilings(st, run, choice=choice)
        except PerfbenchError as exc:
            _CEILINGS[key] = exc
        while len(_CEILINGS) > _CACHE_SIZE:
            _CEILINGS.popitem(last=False)
    found = _CEILINGS[key]
    if isinstance(found, PerfbenchError):
        raise found
    return found


def _placed_rows(run: dict[str, Any], ceil: dict[str, Any]) -> list[dict[str, Any]]:
    """`place_run` over the run's points, its traces read bounded and cached (trace page) and handed
    over already parsed; one result per run, ceilings and trace file version."""
    from perfbench.roofline.place import place_run

    points, key, unreadable = [], [], {}
    for p in run["points"]:
        if p.get("status") != "ok":
            continue
        q = dict(p)
        if p.get("trace_path"):
            an, why, tkey = trace_analysis(p["trace_path"], run["run_id"])
            q["trace_path"] = an.trace if an is not None else None  # analyze() takes a parsed Trace
            if an is None:
                unreadable[p["batch_size"], p["seq_len"], p["new_tokens"]] = why
            key.append(tkey)
        points.append(q)
        key.append((p["batch_size"], p["seq_len"], p["new_tokens"], p["latency_median_s"]))
    cache_key = (run["run_id"], ceil["peak"], ceil["bandwidth"], tuple(key))
    if cache_key in _PLACED:
        _PLACED.move_to_end(cache_key)
        return _PLACED[cache_key]
    rows = place_run({**run, "points": points}, peak_flops=ceil["peak"], bandwidth=ceil["bandwidth"])
    for row in rows:
        if row.get("trace"):
            row["trace"]["path"] = str(getattr(row["trace"]["path"], "path", row["trace"]["path"]))
        why = unreadable.get((row["batch_size"], row["seq_len"], row["new_tokens"]))
        if why:  # place_run saw no trace; say why instead of "run with --trace"
            row["note"] = "; ".join([why] + [n for n in (row.get("note") or "").split("; ")
                                             if n and not n.startswith("no trace:")])
    _PLACED[cache_key] = rows
    while len(_PLACED) > _CACHE_SIZE:
        _PLACED.popitem(last=False)
    return rows


# -- figures ---------------------------------------------------------------------------------------


def _info(placed: dict[str, Any]) -> dict[str, Any]:
    run = placed["run"]
    return {"run_id": run["run_id"], "name": run["name"], "hardware_id": run["hardware_id"],
            "backend": (run["spec"].get("backend") or {}).get("name", "torch"), "dtype": run["spec"].get("dtype")}


def _roofs(ok: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """One roof per machine, dtype and kind of ceiling (datasheet dashed, measured solid)."""
    out: dict[tuple, dict[str, Any]] = {}
    for p in ok:
        info = _info(p)
        for kind in ("datasheet", "measured"):
            c = p["ceilings"].get(kind)
            if c:
                key = (info["hardware_id"], info["dtype"], kind, c["peak"], c["bandwidth"])
                out.setdefault(key, {"hardware_id": info["hardware_id"], "kind": kind, **c,
                                     "name": f"{names.get(info['hardware_id'], info['hardware_id'])} · "
                                             f"{info['dtype']} · {kind}: {c['peak'] / 1e12:.3g} TFLOP/s, "
                                             f"{c['bandwidth'] / 1e9:.4g} GB/s"})
    return list(out.values())


def roofline_figure(placed: list[dict[str, Any]], names: dict[str, str], ops: bool = False) -> Any:
    """Log-log roofline: each machine's roofs and each run's points (and, with `ops`, its operator
    types and projections) in the machine's colour."""
    import plotly.graph_objects as go

    from perfbench.roofline.plots import roof as roof_at, x_range

    ok = [p for p in placed if "rows" in p]
    if not ok:
        return style.empty_figure("No run could be placed: see the messages above.")
    fig = style.figure("Roofline: achieved FLOP/s against arithmetic intensity")
    roofs = _roofs(ok, names)
    xs = x_range([r for p in ok for r in p["rows"]], {i: c for i, c in enumerate(roofs)})
    for roof in roofs:
        fig.add_trace(go.Scatter(x=xs, y=roof_at(roof["peak"], roof["bandwidth"], xs), mode="lines",
                                 name=label(roof["name"]), hoverinfo="skip", legendgroup=roof["hardware_id"],
                                 line={"color": style.colour(roof["hardware_id"]),
                                       "dash": "dash" if roof["kind"] == "datasheet" else "solid"}))
    for i, p in enumerate(ok):
        _add_run_points(fig, p, _RUN_SYMBOLS[i % len(_RUN_SYMBOLS)], ops)
    fig.update_layout(xaxis=style.axis("arithmetic intensity", "FLOP/byte", log=True),
                      yaxis=style.axis("achieved", "FLOP/s", log=True), height=560, uirevision="roofline")
    return fig


def _add_run_points(fig: Any, p: dict[str, Any], symbol: str, ops: bool) -> None:
    import plotly.graph_objects as go

    info, rows, ceil = _info(p), p["rows"], p["ceilings"]
    colour, name = style.colour(info["hardware_id"]), label(run_label(info))
    hover = [label(f"b{r['batch_size']} s{r['seq_len']}: {r['roof_share']:.0%} of the {ceil['source']} roof, "
                   f"{r['bound']}-bound") + ("<br>note: " + label(r["note"]) if r.get("note") else "")
             for r in rows]
    fig.add_trace(go.Scatter(
        x=[r["arithmetic_intensity"] for r in rows], y=[r["achieved_flops_per_s"] for r in rows],
        mode="markers+text", text=[f"b{r['batch_size']}" for r in rows], textposition="top center", name=name,
        legendgroup=info["run_id"], marker={"size": 11, "color": colour, "symbol": symbol, "line": {"color": "black", "width": 1}},
        customdata=hover, hovertemplate="%{customdata}<br>%{x:.3g} FLOP/B, %{y:.3s}FLOP/s<extra>" + name + "</extra>"))
    if not ops:
        return
    kinds = [(r, o) for r in rows for o in r.get("ops", []) if o.get("achieved_flops_per_s")]
    projs = [(r, o) for r in rows for o in r.get("operators", []) if o.get("achieved_flops_per_s")]
    for what, pairs, text in (("op types", kinds, lambda o: o["op_type"]), ("projections", projs, lambda o: o["op"])):
        if pairs:
            fig.add_trace(go.Scatter(
                x=[o["arithmetic_intensity"] for _, o in pairs], y=[o["achieved_flops_per_s"] for _, o in pairs],
                mode="markers", name=f"{what} · {name}", legendgroup=info["run_id"], opacity=0.75,
                marker={"color": colour, "size": 8 if what == "op types" else 6,
                        "symbol": [_OP_SYMBOLS.get(o["op_type"], "x") if what == "op types" else "cross" for _, o in pairs]},
                customdata=[label(f"{text(o)} b{r['batch_size']}: {(o.get('roof_share') or 0):.0%} of roof") for r, o in pairs],
                hovertemplate="%{customdata}<br>%{x:.3g} FLOP/B, %{y:.3s}FLOP/s<extra></extra>"))


def split_figure(placed: list[dict[str, Any]]) -> Any:
    """Latency per batch, stacked: roofline floor, CPU launch overhead (needs a GPU trace), rest;
    one panel per run (runs on different machines differ by decades)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ok = [p for p in placed if "rows" in p]
    if not ok:
        return style.empty_figure("No run could be placed: see the messages above.")
    fig = make_subplots(rows=len(ok), cols=1, subplot_titles=[label(run_label(_info(p))) for p in ok],
                        vertical_spacing=min(0.12, 0.3 / len(ok)))
    for i, p in enumerate(ok, start=1):
        rows = p["rows"]
        x = [f"b{r['batch_size']} s{r['seq_len']}" for r in rows]
        parts = (("floor", "roofline floor", [r["floor_s"] for r in rows]),
                 ("launch", "CPU launch overhead", [r["cpu_overhead_s"] or 0.0 for r in rows]),
                 ("rest", "rest (below roof + other idle)", [r["remainder_s"] or 0.0 for r in rows]))
        for key, what, values in parts:
            fig.add_trace(go.Bar(x=x, y=[v * 1e3 for v in values], name=what, legendgroup=key, showlegend=i == 1,
                                 marker_color=SPLIT_COLOURS[key],
                                 hovertemplate=what + ": %{y:.4g} ms<extra></extra>"), row=i, col=1)
        fig.add_trace(go.Scatter(x=x, y=[r["latency_median_s"] * 1e3 for r in rows], name="measured median",
                                 mode="markers", marker={"color": "black", "symbol": "line-ew-open", "size": 18},
                                 legendgroup="median", showlegend=i == 1,
                                 hovertemplate="median %{y:.4g} ms<extra></extra>"), row=i, col=1)
        fig.update_yaxes(title=style.axis("latency", "ms")["title"], row=i, col=1)
        fig.update_xaxes(title=style.axis("batch size, sequence length", None)["title"] if i == len(ok) else None,
                         row=i, col=1)
    fig.update_layout(template=style.TEMPLATE, barmode="stack", height=max(360, 260 * len(ok)),
                      title={"text": "Latency split per batch: floor / CPU launch / rest"},
                      legend={"orientation": "h", "y": -0.15 / len(ok)}, uirevision="roofline-split",
                      margin={"l": 70, "r": 20, "t": 70, "b": 50})
    return fig


def table_rows(placed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in placed:
        if "rows" not in p:
            continue
        ceil, run = p["ceilings"], _info(p)
        for r in p["rows"]:
            out.append({"run": plain(f"{run['name']} · {run['run_id'][-6:]}"), "batch_size": r["batch_size"],
                        "median_ms": _n(r["latency_median_s"] * 1e3), "ai": _n(r["arithmetic_intensity"]),
                        "achieved_tflops": _n(r["achieved_flops_per_s"] / 1e12), "roof_pct": _n(r["roof_share"] * 100),
                        "bound": r["bound"], "floor_ms": _n(r["floor_s"] * 1e3),
                        "launch_ms": _n(r["cpu_overhead_s"] * 1e3) if r["cpu_overhead_s"] is not None else None,
                        "rest_ms": _n((r["remainder_s"] or 0.0) * 1e3),
                        "ceilings": plain(f"{ceil['source']} ({ceil['profile'] or 'no profile'})"),
                        "note": plain(r.get("note") or "")})
    return out


def _n(v: float) -> float:
    return float(f"{v:.4g}")


def messages(placed: list[dict[str, Any]]) -> list[Any]:
    """Why a selected run is not on the roofline, one line each."""
    return [html.P(f"{plain(run_label(_info_min(p['run'])))}: {plain(p['error'])}", className="pb-error-text",
                   role="alert") for p in placed if "error" in p]


def _info_min(run: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run["run_id"], "name": run["name"], "hardware_id": run["hardware_id"],
            "backend": ((run.get("spec") or {}).get("backend") or {}).get("name", "torch")}


# -- layout and callbacks ------------------------------------------------------------------------


@page_layout(PAGE)
def layout(**query: Any) -> Any:
    with open_store() as st:
        runs = placeable(scoped_runs(st))
        version = store_version(st)
    if runs.empty:
        return empty_state("No measured runs in this store yet.", "perfbench run workloads/tiny-llama-cpu.yaml")
    known = set(runs["run_id"])
    selected = [r for r in urlstate.items(query, "runs", MAX_RUNS) if r in known]
    selected = selected or list(runs.drop_duplicates("hardware_id")["run_id"][:DEFAULT_MACHINES])
    options = [{"label": plain(run_label(r)), "value": r["run_id"]} for _, r in runs.iterrows()]
    return html.Div([
        *url_mirror(PAGE),
        dcc.Store(id="roofline-version", data=version),
        controls(
            labelled("runs", dcc.Dropdown(id="roofline-runs", options=options, value=selected, multi=True,
                                          style={"minWidth": "36rem"})),
            labelled("ceilings", dcc.RadioItems(id="roofline-ceilings", inline=True,
                                                value=urlstate.text(query, "ceilings", "auto", CEILINGS),
                                                options=[{"label": f" {c}", "value": c} for c in CEILINGS])),
            labelled("operators", dcc.Checklist(id="roofline-ops", inline=True,
                                                value=["on"] if urlstate.flag(query, "ops") else [],
                                                options=[{"label": " per operator type (traced runs)", "value": "on"}]))),
        html.Div(id="roofline-messages"),
        html.Div(dcc.Graph(id="roofline-graph", figure=style.empty_figure("loading…")), className="pb-card"),
        html.Div(dcc.Graph(id="roofline-split", figure=style.empty_figure("loading…")), className="pb-card"),
        dash_table.DataTable(id="roofline-table", columns=[{"name": n, "id": c} for c, n in TABLE_COLUMNS],
                             page_size=25, style_table={"overflowX": "auto"},
                             style_cell={"fontSize": "0.8rem", "textAlign": "left", "whiteSpace": "normal"}),
    ])


dash.register_page(__name__, path="/roofline", name="Roofline", order=2, title="perfbench · roofline", layout=layout)
watch_version(PAGE)


def placements(run_ids: list[str], choice: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each selected run placed (or its reason why not), and machine names by hardware id."""
    with open_store() as st:
        runs = placeable(scoped_runs(st))
        runs = runs[runs["run_id"].isin(run_ids)]
        order = {r: i for i, r in enumerate(run_ids)}
        ids = sorted(runs["run_id"], key=order.get)[:MAX_RUNS]
        placed = [place(st, r, choice) for r in ids]
    return placed, dict(zip(runs["hardware_id"], runs["hardware_name"]))


@callback(Output("roofline-graph", "figure"), Output("roofline-split", "figure"), Output("roofline-table", "data"),
          Output("roofline-messages", "children"), Output("roofline-query", "data"),
          Input("roofline-runs", "value"), Input("roofline-ceilings", "value"), Input("roofline-ops", "value"),
          Input("roofline-version", "data"))
def update(selected: list[str] | None, choice: str | None, ops: list[str] | None, _version: Any):
    """Place the selected runs on their own machines' ceilings; draw the roofline and the split."""
    choice = choice if choice in CEILINGS else "auto"
    selected = list(selected or [])[:MAX_RUNS]
    query = urlstate.query_string({"runs": selected, "ceilings": None if choice == "auto" else choice,
                                   "ops": "on" in (ops or [])})
    if not selected:
        msg = "Pick runs above to place them on the roofline."
        return style.empty_figure(msg), style.empty_figure(msg), [], None, query
    try:
        placed, names = placements(selected, choice)
    except PerfbenchError as exc:
        return style.empty_figure(str(exc)), style.empty_figure(str(exc)), [], error_panel(str(exc)), query
    return (roofline_figure(placed, names, "on" in (ops or [])), split_figure(placed), table_rows(placed),
            messages(placed) or None, query)


def report_figures(st: Any, run_ids: list[str], sweep_ids: list[str]) -> list[tuple[str, Any]]:
    """The roofline (with operator types) and the latency split of `run_ids` and the sweeps' runs,
    on auto ceilings."""
    runs = placeable(scoped_runs(st))
    runs = runs[runs["run_id"].isin(run_ids) | runs["sweep_id"].isin(sweep_ids)].head(MAX_RUNS)
    if runs.empty:
        return []
    placed = [place(st, r, "auto") for r in runs["run_id"]]
    if not any("rows" in p for p in placed):
        return []
    names = dict(zip(runs["hardware_id"], runs["hardware_name"]))
    return [("Roofline", roofline_figure(placed, names, ops=True)), ("Latency split per batch", split_figure(placed))]

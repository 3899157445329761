"""Trace: SKIP's TKLQT (kernel launch + queue time), its launch and queue parts, GPU utilisation
and the timed latency against batch size, with the CPU->GPU-bound transition marked; for a chosen
point, its top kernels and fusion candidates.

Mode `split=hardware` draws one column per machine on shared axes, so two machines' sweeps can be
read side by side (the SKIP study's view). The sweep figures come from the trace figures stored
with each point (no trace is parsed for them); only the chosen point's trace file is read, bounded
and cached.

URL: ?runs=ID,ID&split=hardware&point=POINT_ID
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, callback, dash_table, dcc, html

from perfbench.dashboard import style, urlstate
from perfbench.dashboard.components import controls, empty_state, error_panel, evidence, labelled, page_layout, url_mirror, watch_version
from perfbench.dashboard.data import points_frame, run_label, scoped_runs, store_version
from perfbench.dashboard.traces import trace_analysis
from perfbench.dashboard.source import open_store
from perfbench.errors import PerfbenchError
from perfbench.textsafe import label, plain

PAGE = "trace"
#: At most this many runs are drawn at once (each is a line per figure).
MAX_RUNS = 12
#: Default selection: the newest traced run of each machine, up to this many machines.
DEFAULT_MACHINES = 4
#: Largest decompressed trace the dashboard reads for one point. The CLI allows 4 GiB; a page must
#: answer sooner, and `perfbench trace analyze --max-trace-bytes` reads bigger ones.
TOP_KERNELS = 15
TOP_FUSION = 10
TRACE_COMMAND = "perfbench run SPEC --trace"
_POINT_FIELDS = ["batch_size", "seq_len", "new_tokens", "status", "latency_median_s", "trace_path", "trace_error",
                 "trace_figures", "traced_span_us", "profiler_overhead_ratio"]
_ROWS = (("tklqt_us", "TKLQT", "us"), ("gpu_util", "GPU utilisation", "busy / span"),
         ("latency_ms", "latency (timed median)", "ms"))

urlstate.sync_url(f"{PAGE}-query")


# -- data ----------------------------------------------------------------------------------------


def traced_run_ids(st: Any) -> set[str]:
    """Runs with at least one point that has a trace (file or figures)."""
    rows = st.query("SELECT DISTINCT run_id FROM points WHERE trace_path IS NOT NULL OR trace_figures_json IS NOT NULL",
                    what="find traced runs")
    return {r[0] for r in rows}


def _default_runs(runs: pd.DataFrame) -> list[str]:
    """The newest run of each machine (runs are newest first), for a page opened without `runs=`."""
    return list(runs.drop_duplicates("hardware_id")["run_id"][:DEFAULT_MACHINES])


def sweep_series(runs: pd.DataFrame, pts: pd.DataFrame) -> list[dict[str, Any]]:
    """One series per run and shape (seq_len, new_tokens): batch sizes ascending, the stored trace
    figures of each traced point, the timed latency and the detected transition."""
    out = []
    by_run = runs.set_index("run_id")
    ok = pts[(pts["status"] == "ok") & pts["trace_figures"].map(lambda f: isinstance(f, dict))]
    for (run_id, seq, new), g in ok.groupby(["run_id", "seq_len", "new_tokens"], sort=False, dropna=False):
        g = g.sort_values("batch_size").drop_duplicates("batch_size")
        run = by_run.loc[run_id]
        figs = list(g["trace_figures"])
        shapes = ok[ok["run_id"] == run_id][["seq_len", "new_tokens"]].drop_duplicates()
        name = run_label(run.to_dict() | {"run_id": run_id}) + (f" · s{seq}" + (f" n{new}" if new else "")
                                                                if len(shapes) > 1 else "")
        out.append({"run_id": run_id, "name": name, "hardware_id": run["hardware_id"],
                    "hardware_name": run["hardware_name"], "batch": [int(b) for b in g["batch_size"]],
                    "point_id": [int(p) for p in g["point_id"]], "figures": figs,
                    "latency_ms": [None if v is None or pd.isna(v) else float(v) * 1e3 for v in g["latency_median_s"]],
                    "has_gpu": any(f.get("has_gpu") for f in figs),
                    "transition": _transition(g, figs)})
    return out


def _transition(g: pd.DataFrame, figs: list[dict]) -> dict[str, Any] | None:
    """detect_transition over the stored figures, latency from the timed medians; None when the
    sweep cannot support one (fewer than two points, no GPU)."""
    from perfbench.trace.transition import detect_transition

    if len(g) < 2 or not any(f.get("has_gpu") for f in figs):
        return None
    lat = [float(v) * 1e6 if v is not None and v > 0 else None for v in g["latency_median_s"]]
    try:
        return detect_transition(list(g["batch_size"]), figs, lat).as_full_dict()
    except PerfbenchError:
        return None


# -- figures ---------------------------------------------------------------------------------------


def sweep_figure(series: list[dict[str, Any]], split: bool) -> Any:
    """TKLQT (with its launch and queue parts), GPU utilisation and latency against batch size: one
    column, or one column per machine (`split`) on shared axes."""
    from plotly.subplots import make_subplots

    if not series:
        return style.empty_figure(f"No traced points in these runs: `{TRACE_COMMAND}` produces them.")
    cols = list(dict.fromkeys(s["hardware_id"] for s in series)) if split else ["all"]
    names = {s["hardware_id"]: s["hardware_name"] for s in series}
    titles = [label(f"{names[c]} · {c}") for c in cols] if split else None
    fig = make_subplots(rows=3, cols=len(cols), shared_xaxes=True, shared_yaxes=True, column_titles=titles,
                        vertical_spacing=0.06, horizontal_spacing=0.04)
    symbols = ("circle", "diamond", "square", "triangle-up", "x", "star-square")
    for i, s in enumerate(series):
        col = cols.index(s["hardware_id"]) + 1 if split else 1
        _add_series(fig, s, col, symbols[i % len(symbols)], show_legend=True)
    _layout_sweep(fig, series, len(cols))
    fig.update_yaxes(showticklabels=True)  # shared scales, but every column readable on its own
    if not any(s["has_gpu"] for s in series):
        fig.add_annotation(text="CPU-only traces: no GPU activity, so no TKLQT or GPU utilisation (latency shown)",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=1.0, yanchor="bottom")
    return fig


def _add_series(fig: Any, s: dict[str, Any], col: int, symbol: str, show_legend: bool) -> None:
    import plotly.graph_objects as go

    colour, name = style.colour(s["hardware_id"]), label(s["name"])
    figs, b = s["figures"], s["batch"]
    common = {"x": b, "customdata": s["point_id"], "legendgroup": s["run_id"] + name}
    parts = (("tklqt_us", "TKLQT", "solid"), ("launch_call_us", "launch part", "dot"), ("queue_us", "queue part", "dash"))
    for key, what, dash_style in parts:
        y = [f.get(key) for f in figs]
        if any(v is not None for v in y):
            fig.add_trace(go.Scatter(y=y, mode="lines+markers", name=f"{what} · {name}", showlegend=show_legend,
                                     line={"color": colour, "dash": dash_style}, marker={"symbol": symbol, "size": 8},
                                     hovertemplate=f"{what}<br>batch %{{x}}: %{{y:.4s}} us<extra>{name}</extra>",
                                     **common), row=1, col=col)
    util = [f.get("gpu_util") for f in figs]
    if any(v is not None for v in util):
        fig.add_trace(go.Scatter(y=util, mode="lines+markers", name=f"GPU utilisation · {name}", showlegend=False,
                                 line={"color": colour}, marker={"symbol": symbol, "size": 8},
                                 hovertemplate="batch %{x}: GPU busy %{y:.0%} of span<extra>" + name + "</extra>",
                                 **common), row=2, col=col)
    fig.add_trace(go.Scatter(y=s["latency_ms"], mode="lines+markers", name=f"latency · {name}", showlegend=False,
                             line={"color": colour}, marker={"symbol": symbol, "size": 8},
                             hovertemplate="batch %{x}: %{y:.4g} ms (timed median)<extra>" + name + "</extra>",
                             **common), row=3, col=col)
    _add_transition(fig, s, col, colour)


def _add_transition(fig: Any, s: dict[str, Any], col: int, colour: str) -> None:
    """A star on each row at the batch where the sweep turns GPU-bound (TKLQT method), with what the
    two cross-checks say in its hover."""
    import plotly.graph_objects as go

    tr = s["transition"]
    if not tr or tr.get("transition_batch") is None:
        return
    b = tr["transition_batch"]
    i = s["batch"].index(b)
    methods = ", ".join(f"{m}: {'b' + str(v) if v is not None else 'none in range'}" for m, v in tr["methods"].items())
    hover = label(f"CPU→GPU-bound at batch {b} ({methods}; methods {'agree' if tr['agree'] else 'disagree'})")
    values = (s["figures"][i].get("tklqt_us"), s["figures"][i].get("gpu_util"), s["latency_ms"][i])
    for row, y in enumerate(values, start=1):
        if y is None:
            continue
        fig.add_trace(go.Scatter(x=[b], y=[y], mode="markers+text" if row == 1 else "markers",
                                 text=["CPU→GPU-bound"] if row == 1 else None, textposition="top left",
                                 marker={"symbol": "star", "size": 17, "color": colour, "line": {"color": "black", "width": 1}},
                                 name=f"transition · {label(s['name'])}", showlegend=row == 1,
                                 legendgroup=s["run_id"] + "transition", hovertemplate=hover + "<extra></extra>"),
                      row=row, col=col)


def _layout_sweep(fig: Any, series: list[dict[str, Any]], n_cols: int) -> None:
    batches = [b for s in series for b in s["batch"]]
    x = style.axis("batch size", "sequences", batches)
    for c in range(1, n_cols + 1):
        fig.update_xaxes(type=x.get("type", "linear"), row=3, col=c, title=x["title"])
        fig.update_xaxes(type=x.get("type", "linear"), row=1, col=c)
        fig.update_xaxes(type=x.get("type", "linear"), row=2, col=c)
    tk = [f.get(k) for s in series for f in s["figures"] for k in ("tklqt_us", "launch_call_us", "queue_us")]
    lat = [v for s in series for v in s["latency_ms"]]
    for row, (key, what, unit) in enumerate(_ROWS, start=1):
        values = tk if key == "tklqt_us" else lat if key == "latency_ms" else []
        ax = style.axis(what, unit, values, log=None if row != 2 else False)
        fig.update_yaxes(type=ax.get("type", "linear"), row=row, col=1, title=ax["title"])
        if row != 2:
            fig.update_yaxes(type=ax.get("type", "linear"), row=row)
    fig.update_yaxes(range=[0, 1.05], row=2)
    fig.update_layout(template=style.TEMPLATE, height=820, margin={"l": 70, "r": 20, "t": 60, "b": 50},
                      legend={"orientation": "h", "y": -0.12}, uirevision="trace",
                      title={"text": "TKLQT, GPU utilisation and latency against batch size"})


# -- the chosen point: kernels and fusion candidates ----------------------------------------------


def point_tables(an: Any) -> tuple[list[dict], list[dict]]:
    """(top kernels, fusion candidates) of an analysis, as table rows with plain text."""
    from perfbench.trace.fusion import fusion_candidates
    from perfbench.trace.operators import top_kernels

    kernels = [{"name": plain(r["name"]), "count": _num(r["count"]), "total_us": _num(r["total_us"]),
                "mean_us": _num(r["mean_us"]), "share": _num(r["share"] * 100 if r["share"] is not None else None)}
               for _, r in top_kernels(an, TOP_KERNELS).iterrows()]
    fusion = [{"chain": " → ".join(plain(k) for k in r["chain"]), "length": int(r["length"]),
               "occurrences": _num(r["occurrences"]), "launches_saved": _num(r["launches_saved"]),
               "launch_saving_us": _num(r["launch_saving_us"])}
              for _, r in fusion_candidates(an, top=TOP_FUSION).iterrows()]
    return kernels, fusion


def _num(v: Any, digits: int = 4) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f or f in (float("inf"), float("-inf")) else float(f"{f:.{digits}g}")


_KERNEL_COLS = [("name", "kernel"), ("count", "launches / iter"), ("total_us", "GPU time / iter (us)"),
                ("mean_us", "mean (us)"), ("share", "share of kernel time (%)")]
_FUSION_COLS = [("chain", "kernel chain (launch order)"), ("length", "length"), ("occurrences", "occurrences / iter"),
                ("launches_saved", "launches saved / iter"), ("launch_saving_us", "launch time saved / iter (us)")]


def _table(table_id: str, columns: list[tuple[str, str]], rows: list[dict]) -> dash_table.DataTable:
    return dash_table.DataTable(
        id=table_id, columns=[{"name": n, "id": c} for c, n in columns], data=rows, page_size=TOP_KERNELS,
        style_table={"overflowX": "auto"},
        style_cell={"fontSize": "0.8rem", "textAlign": "left", "whiteSpace": "normal", "maxWidth": "40rem"})


def _point_summary(point: dict[str, Any], figures: dict[str, Any] | None) -> html.Div:
    f = figures or {}
    parts = [f"batch {point.get('batch_size')}, seq {point.get('seq_len')}"]
    for key, what, unit in (("tklqt_us", "TKLQT", "us"), ("launch_call_us", "launch part", "us"),
                            ("queue_us", "queue part", "us"), ("gpu_util", "GPU utilisation", "")):
        if f.get(key) is not None:
            parts.append(f"{what} {f[key]:.3g} {unit}".rstrip())
    if f.get("bound"):
        parts.append(f"bound: {plain(f['bound'])}")
    ratio = point.get("profiler_overhead_ratio")
    if ratio is not None and ratio == ratio:
        parts.append(f"traced span / timed median: {ratio:.2f}")
    out: list[Any] = [html.P("; ".join(parts))]
    if f.get("note"):
        out.append(html.P(f"note: {plain(f['note'])}", className="pb-muted"))
    return html.Div(out)


def point_panel(point_id: int | None) -> list[Any]:
    """What the chosen point's trace says: figures, top kernels, fusion candidates, evidence."""
    if point_id is None:
        return [empty_state("Pick a traced point (or click one in the figure) to see its kernels.")]
    try:
        with open_store() as st:
            rows = st.query("SELECT run_id FROM points WHERE point_id=?", (int(point_id),), what="find a point")
            if not rows:
                return [empty_state(f"No point {int(point_id)} in this store.")]
            run = st.get_run(rows[0][0])
            pts = points_frame(st, [run["run_id"]], _POINT_FIELDS)
    except PerfbenchError as exc:
        return [error_panel(str(exc))]
    point = pts[pts["point_id"] == int(point_id)].iloc[0].to_dict()
    return [html.H4(f"Point: {plain(run['name'])} · batch {point['batch_size']}"),
            _point_summary(point, point.get("trace_figures") if isinstance(point.get("trace_figures"), dict) else None),
            *_kernel_tables(point, run["run_id"]), evidence(run, point)]


def _kernel_tables(point: dict[str, Any], run_id: str) -> list[Any]:
    if not point.get("trace_path"):
        why = point.get("trace_error") or "this point has no trace"
        return [empty_state(plain(why), TRACE_COMMAND)]
    an, why, _ = trace_analysis(point["trace_path"], run_id)
    if an is None:
        return [html.P(why, className="pb-error-text", role="alert")]
    if not an.figures.has_gpu:
        return [empty_state("CPU-only trace: no GPU kernels, so no kernel or fusion tables. A GPU run traced "
                            "with --trace has them.", TRACE_COMMAND)]
    kernels, fusion = point_tables(an)
    return [html.H5("Top kernels by GPU time (per iteration)"), _table("trace-kernels", _KERNEL_COLS, kernels),
            html.H5("Fusion candidates: back-to-back kernel chains, launch time a fusion would save"),
            _table("trace-fusion", _FUSION_COLS, fusion) if fusion else html.P("No recurring kernel chains.")]


# -- layout and callbacks ------------------------------------------------------------------------


@page_layout(PAGE)
def layout(**query: Any) -> Any:
    with open_store() as st:
        runs = scoped_runs(st)
        runs = runs[runs["run_id"].isin(traced_run_ids(st))]
        version = store_version(st)
    if runs.empty:
        return empty_state("No traced runs in this store yet.", TRACE_COMMAND)
    selected = [r for r in urlstate.items(query, "runs", MAX_RUNS) if r in set(runs["run_id"])] or _default_runs(runs)
    # the picker's options come with the page: a value outside its options would be cleared
    chosen, pts = _selected_data(selected)
    points = point_options(chosen, pts)
    point = urlstate.number(query, "point", None, 0, 2**62)
    point = int(point) if point is not None and int(point) in {o["value"] for o in points} else None
    options = [{"label": plain(run_label(r)), "value": r["run_id"]} for _, r in runs.iterrows()]
    return html.Div([
        *url_mirror(PAGE),
        dcc.Store(id="trace-version", data=version),
        controls(
            labelled("traced runs", dcc.Dropdown(id="trace-runs", options=options, value=selected, multi=True,
                                                 style={"minWidth": "36rem"})),
            labelled("layout", dcc.RadioItems(id="trace-split", value="hardware" if urlstate.text(query, "split") ==
                                              "hardware" else "overlay", inline=True,
                                              options=[{"label": " overlay", "value": "overlay"},
                                                       {"label": " side by side (per machine)", "value": "hardware"}])),
            labelled("point", dcc.Dropdown(id="trace-point", value=point, options=points,
                                           placeholder="pick a traced point", style={"minWidth": "24rem"}))),
        html.Div(id="trace-notice", className="pb-muted"),
        html.Div(dcc.Graph(id="trace-sweep", figure=style.empty_figure("loading…")), className="pb-card"),
        dcc.Loading(html.Div(id="trace-point-panel")),
    ])


dash.register_page(__name__, path="/trace", name="Trace", order=3, title="perfbench · trace", layout=layout)
watch_version(PAGE)


def point_options(runs: pd.DataFrame, pts: pd.DataFrame) -> list[dict[str, Any]]:
    """The traced points of these runs, for the point picker."""
    names = dict(zip(runs["run_id"], runs["name"]))
    traced = pts[pts["trace_path"].notna()].sort_values(["run_id", "batch_size"])
    return [{"label": plain(f"{names.get(p['run_id'], '?')} · {p['run_id'][-6:]} · b{p['batch_size']} s{p['seq_len']}"),
             "value": int(p["point_id"])} for _, p in traced.iterrows()]


def _selected_data(selected: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    with open_store() as st:
        runs = scoped_runs(st)
        runs = runs[runs["run_id"].isin(selected[:MAX_RUNS])]
        return runs, points_frame(st, list(runs["run_id"]), _POINT_FIELDS)


@callback(Output("trace-sweep", "figure"), Output("trace-point", "options"), Output("trace-notice", "children"),
          Input("trace-runs", "value"), Input("trace-split", "value"), Input("trace-version", "data"))
def update_sweep(selected: list[str] | None, split: str | None, _version: Any):
    """The sweep figure of the selected runs, and their traced points for the point picker."""
    if not selected:
        return style.empty_figure("Pick traced runs above."), [], None
    try:
        runs, pts = _selected_data(list(selected))
    except PerfbenchError as exc:
        return style.empty_figure(str(exc)), [], error_panel(str(exc))
    series = sweep_series(runs, pts)
    options = point_options(runs, pts)
    notice = None
    missing = pts[(pts["status"] == "ok") & pts["trace_figures"].isna()]
    if len(missing):
        notice = empty_state(f"{len(missing)} point(s) of these runs have no trace figures.", TRACE_COMMAND)
    if len(selected) > MAX_RUNS:
        notice = f"Showing the first {MAX_RUNS} of {len(selected)} runs."
    return sweep_figure(series, split == "hardware"), options, notice


@callback(Output("trace-query", "data"), Input("trace-runs", "value"), Input("trace-split", "value"),
          Input("trace-point", "value"))
def remember_view(selected: list[str] | None, split: str | None, point: int | None) -> str:
    return urlstate.query_string({"runs": list(selected or [])[:MAX_RUNS],
                                  "split": "hardware" if split == "hardware" else None, "point": point})


@callback(Output("trace-point", "value"), Input("trace-sweep", "clickData"), State("trace-point", "value"),
          prevent_initial_call=True)
def pick_point(click: dict | None, current: int | None) -> int | None:
    """Clicking a point of the sweep picks it for the kernel tables."""
    try:
        return int(click["points"][0]["customdata"])
    except (TypeError, KeyError, IndexError, ValueError):
        return current


@callback(Output("trace-point-panel", "children"), Input("trace-point", "value"))
def show_point(point_id: int | None) -> list[Any]:
    return point_panel(point_id)


def report_figures(st: Any, run_ids: list[str], sweep_ids: list[str]) -> list[tuple[str, Any]]:
    """The sweep figure of the traced runs among `run_ids` (and of the sweeps), overlaid and, when
    they ran on several machines, side by side."""
    runs = scoped_runs(st)
    runs = runs[(runs["run_id"].isin(run_ids) | runs["sweep_id"].isin(sweep_ids))
                & runs["run_id"].isin(traced_run_ids(st))].head(MAX_RUNS)
    if runs.empty:
        return []
    series = sweep_series(runs, points_frame(st, list(runs["run_id"]), _POINT_FIELDS))
    if not series:
        return []
    out = [("TKLQT, GPU utilisation and latency against batch size", sweep_figure(series, False))]
    if len({s["hardware_id"] for s in series}) > 1:
        out.append(("The same, side by side per machine", sweep_figure(series, True)))
    return out

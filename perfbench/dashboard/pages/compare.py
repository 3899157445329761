"""Compare: two runs or sets of runs side by side, with the regression gate's own statistics.

Per point: ratio of medians (candidate / base) with its two-level bootstrap CI, Mann-Whitney p,
Cliff's delta and Hodges-Lehmann shift, and the verdict (same / faster / slower / ambiguous), all
from `perfbench.gate.compare` so the page and `perfbench compare` can never disagree. A forest plot
shows every ratio with its interval; the geomean covers the points on both sides and says which
were left out. Sides on different hardware or backends are a plain comparison, and say so.

URL: ?base=ID,ID&cand=ID,ID&metric=latency_median_s&threshold=5&paired=1
"""

from __future__ import annotations

import shlex
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, callback, dash_table, dcc, html
from dash.exceptions import PreventUpdate

from perfbench.dashboard import source, style, urlstate
from perfbench.dashboard.components import controls, empty_state, error_panel, evidence, labelled, page_layout, url_mirror
from perfbench.dashboard.data import scoped_runs, subject, warm_imports
from perfbench.dashboard.source import open_store
from perfbench.errors import InputError, PerfbenchError
from perfbench.schema import FIELDS
from perfbench.textsafe import label, plain

PAGE = "compare"
#: Runs per side at most: each is read whole (samples included) and bootstrapped.
MAX_SIDE = 20
#: Run options sent to a picker before anything is typed (the newest); typing searches them all.
OPTIONS_SHOWN = 100
METRICS = tuple(n for n, f in FIELDS.items() if f.is_metric)
DEFAULT_METRIC = "latency_median_s"
TABLE_COLUMNS = [("benchmark", "point"), ("base", "base median"), ("cand", "candidate median"),
                 ("ratio", "ratio"), ("ci", "CI"), ("p", "Mann-Whitney p"), ("delta", "Cliff's δ"),
                 ("shift", "HL shift"), ("min_effect", "min effect"), ("verdict", "verdict"), ("reason", "why")]

urlstate.sync_url(f"{PAGE}-query")


def run_option(run: dict | pd.Series) -> dict[str, str]:
    """A picker entry: what a reader recognises a run by (plain text; React escapes it)."""
    text = (f"{run['name']} · {run['hardware_name']} · {run['backend']} · "
            f"{str(run['created_at'])[:16]} · {run['run_id']}")
    return {"label": plain(text), "value": str(run["run_id"])}


def run_options(runs: pd.DataFrame, selected: list[str], search: str | None = None,
                limit: int = OPTIONS_SHOWN) -> list[dict[str, str]]:
    """The selected runs first (a picker drops values missing from its options), then the newest
    runs, or those whose name, id, hardware or backend holds `search`."""
    chosen = runs[runs["run_id"].isin(selected)]
    rest = runs[~runs["run_id"].isin(selected)]
    if search:
        t = search.lower()
        hay = (rest["name"].astype(str) + " " + rest["run_id"] + " " + rest["hardware_name"].astype(str) + " "
               + rest["backend"].astype(str)).str.lower()
        rest = rest[hay.str.contains(t, regex=False)]
    return [run_option(r) for _, r in pd.concat([chosen, rest.head(limit)]).iterrows()]


def _state(query: dict[str, Any]) -> dict[str, Any]:
    return {"base": urlstate.items(query, "base", MAX_SIDE), "cand": urlstate.items(query, "cand", MAX_SIDE),
            "metric": urlstate.text(query, "metric", DEFAULT_METRIC, METRICS),
            "threshold": urlstate.number(query, "threshold", 5.0, 0.0, 1000.0),
            "paired": urlstate.flag(query, "paired")}


@page_layout(PAGE)
def layout(**query: Any) -> Any:
    with open_store() as st:
        runs = scoped_runs(st)
    if runs.empty:
        return empty_state("No runs in this store yet.", "perfbench run workloads/tiny-llama-cpu.yaml")
    s = _state(query)
    metric_opts = [{"label": m, "value": m} for m in METRICS]
    return html.Div([
        *url_mirror(PAGE),
        controls(
            labelled("base runs", dcc.Dropdown(id="compare-base", options=run_options(runs, s["base"]), value=s["base"],
                                               multi=True, placeholder="type a name, id or hardware")),
            labelled("candidate runs", dcc.Dropdown(id="compare-cand", options=run_options(runs, s["cand"]),
                                                    value=s["cand"], multi=True,
                                                    placeholder="type a name, id or hardware")),
            labelled("metric", dcc.Dropdown(id="compare-metric", options=metric_opts, value=s["metric"],
                                            clearable=False)),
            labelled("min effect (%)", dcc.Input(id="compare-threshold", type="number", min=0, max=1000, step=0.5,
                                                 value=s["threshold"], debounce=True)),
            labelled("rounds", dcc.Checklist(id="compare-paired", value=["paired"] if s["paired"] else [],
                                             options=[{"label": " paired (interleaved)", "value": "paired"}]))),
        html.Div(id="compare-summary"),
        html.Div(dcc.Graph(id="compare-forest"), className="pb-card"),
        dash_table.DataTable(
            id="compare-table", columns=[{"name": n, "id": c} for c, n in TABLE_COLUMNS], data=[],
            style_table={"overflowX": "auto"}, style_cell={"fontSize": "0.85rem", "textAlign": "left"},
            style_data_conditional=[{"if": {"filter_query": f'{{verdict}} = "{v}"', "column_id": "verdict"},
                                     "color": c, "fontWeight": "bold"} for v, c in style.VERDICT_COLOURS.items()]),
        html.P("Click a row for its evidence and the command that measures the comparison again.",
               className="pb-muted"),
        html.Div(id="compare-evidence"),
    ])


dash.register_page(__name__, path="/compare", name="Compare", order=1, title="perfbench · compare", layout=layout)


def _search_callback(side: str) -> None:
    @callback(Output(f"compare-{side}", "options"), Input(f"compare-{side}", "search_value"),
              State(f"compare-{side}", "value"), prevent_initial_call=True)
    def search(text: str | None, value: list[str] | None):
        """Options matching what was typed, searched over every run (only a few reach the browser)."""
        if not text:
            raise PreventUpdate
        try:
            with open_store() as st:
                return run_options(scoped_runs(st), value or [], text[:200])
        except PerfbenchError:
            raise PreventUpdate from None

    search.__name__ = f"search_{side}"


_search_callback("base")
_search_callback("cand")


# -- the comparison itself --------------------------------------------------------------------------


def _version(st, ids: list[str]) -> tuple:
    """What the cache must see change: status and point count of each selected run (a live run)."""
    if not ids:
        return ()
    marks = ",".join("?" for _ in ids)
    rows = st.query(f"SELECT r.run_id, r.status, (SELECT COUNT(*) FROM points p WHERE p.run_id = r.run_id) "
                    f"FROM runs r WHERE r.run_id IN ({marks}) ORDER BY r.run_id", ids, what="check runs")
    return tuple(tuple(r) for r in rows)


def comparison(st, base: list[str], cand: list[str], metric: str, threshold_pct: float = 5.0,
               paired: bool = False) -> tuple[pd.DataFrame, dict, dict]:
    """(per-point DataFrame, summary, info) of `perfbench compare BASE CAND`; cached while the runs
    stay as they are, since a bootstrap over every point is the page's heaviest work."""
    from perfbench.gate import need_gate_extra
    from perfbench.gate.compare import check_metric

    check_metric(metric)
    if not base or not cand:
        raise InputError("pick at least one base run and one candidate run")
    need_gate_extra()
    base, cand = list(base)[:MAX_SIDE], list(cand)[:MAX_SIDE]
    key = (str(st.path), tuple(base), tuple(cand), metric, float(threshold_pct), bool(paired),
           _version(st, base + cand))
    return _cached(st, key)


#: Recent comparisons by (store, runs, metric, settings, the runs' state): a bounded FIFO.
_CACHE: dict[tuple, tuple] = {}


def _cached(st, key: tuple) -> tuple[pd.DataFrame, dict, dict]:
    if key in _CACHE:
        return _CACHE[key]
    from perfbench.gate.compare import compare_runs, select_runs, summary

    _, base, cand, metric, threshold_pct, paired, _v = key
    b, c = select_runs(st, ",".join(base), "base"), select_runs(st, ",".join(cand), "candidate")
    frac = threshold_pct / 100
    df = compare_runs(b, c, metrics=[metric], thresholds={metric: frac}, paired=paired)
    hw = {r["hardware_id"] for r in b + c}
    backends = {(r["spec"].get("backend") or {}).get("name") or "torch" for r in b + c}
    info = {"plain": len(hw) > 1 or len(backends) > 1, "hardware": sorted(hw), "backends": sorted(backends),
            "base": [r["run_id"] for r in b], "cand": [r["run_id"] for r in c],
            "runs": {r["run_id"]: {k: v for k, v in r.items() if k != "points"} for r in b + c}}
    out = (df, summary(df), info)
    if len(_CACHE) >= 32:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = out
    return out


def reproduce(base: list[str], cand: list[str], metric: str, threshold_pct: float, paired: bool,
              store: str | None = None) -> str:
    """The CLI command that prints this very comparison."""
    parts = ["perfbench", "compare", ",".join(base), ",".join(cand), "--metric", metric,
             "--threshold", f"{threshold_pct:g}%"]
    if paired:
        parts.append("--paired")
    if store:
        parts += ["--store", store]
    return " ".join(shlex.quote(p) for p in parts)


def _fmt(v: Any, unit: str) -> str:
    from perfbench.gate.report import fmt_value

    return fmt_value(None if v is None or pd.isna(v) else float(v), unit)


def _num(v: Any, spec: str) -> str:
    return "-" if v is None or pd.isna(v) else format(float(v), spec)


def table_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One table row per point: values with units, the CI as percentages, the verdict and why."""
    from perfbench.gate.report import fmt_ci

    rows = []
    for r in df.to_dict("records"):
        batch = str(r["point"]).split("-")[0].lstrip("b")
        rows.append({"benchmark": plain(r["benchmark"]), "base": _fmt(r["median_base"], r["unit"]),
                     "cand": _fmt(r["median_cand"], r["unit"]), "ratio": _num(r["ratio"], ".4f"),
                     "ci": fmt_ci({k: (None if pd.isna(v) else v) for k, v in r.items()
                                   if k in ("ci_low", "ci_high", "ratio")}),
                     "p": _num(r.get("mw_p_value"), ".3g"), "delta": _num(r["cliffs_delta"], "+.2f"),
                     "shift": _fmt(r["hl_shift"], r["unit"]),
                     "min_effect": f"{r['min_effect_pct']:.1f}% ({r['min_effect_source']})",
                     "verdict": r["verdict"], "reason": plain(r["reason"]), "point": r["point"],
                     "batch_size": int(batch) if batch.isdigit() else None,
                     "run_base": str(r["runs_base"]).split(",")[0], "run_cand": str(r["runs_candidate"]).split(",")[0]})
    return rows


def summary_lines(summ: dict, info: dict, metric: str) -> list[str]:
    """The geomean over the common points, the verdict counts, and what was left out."""
    m = summ["metrics"].get(metric)
    out = []
    if m and m["geomean_ratio"]:
        g = m["geomean_ratio"]
        counts = ", ".join(f"{n} {v}" for v, n in m["verdicts"].items() if n)
        out.append(f"geomean ratio {g:.4f} ({(g - 1) * 100:+.1f}%) over {m['points']} point(s) on both sides: "
                   f"{counts}")
    else:
        out.append("no point is measured on both sides: nothing to compare")
    for side, key in (("base", "only_base"), ("candidate", "only_candidate")):
        if summ.get(key):
            out.append(f"left out (only in {side}): {', '.join(summ[key][:20])}"
                       + (f" and {len(summ[key]) - 20} more" if len(summ[key]) > 20 else ""))
    if info.get("plain"):
        out.append(f"plain comparison: the sides differ in hardware ({', '.join(info['hardware'])}) or backend "
                   f"({', '.join(info['backends'])}): which setup is faster here, not a regression check")
    return out


def forest_figure(df: pd.DataFrame, summ: dict, metric: str, title: str = "") -> Any:
    """Ratio (candidate / base) with its CI per point, coloured by verdict, the geomean last."""
    import plotly.graph_objects as go

    if df.empty:
        return style.empty_figure("No point is measured on both sides.")
    f = FIELDS[metric]
    better = "higher" if f.higher_is_better else "lower"
    fig = style.figure(title or f"{metric}: candidate / base per point ({better} is better)")
    df = df.iloc[::-1]  # first point at the top
    names = [label(b) for b in df["benchmark"]]
    for verdict, colour in style.VERDICT_COLOURS.items():
        sub = df[df["verdict"] == verdict]
        if sub.empty:
            continue
        fig.add_trace(go.Scatter(
            x=sub["ratio"], y=[label(b) for b in sub["benchmark"]], mode="markers", name=verdict,
            marker={"color": colour, "size": 10},
            error_x={"type": "data", "symmetric": False, "array": (sub["ci_high"] - sub["ratio"]).tolist(),
                     "arrayminus": (sub["ratio"] - sub["ci_low"]).tolist(), "color": colour},
            customdata=list(zip(sub["ci_low"], sub["ci_high"], sub["mw_p_value"].fillna(1.0),
                                [label(r) for r in sub["reason"]])),
            hovertemplate="%{y}<br>ratio %{x:.4f} (CI %{customdata[0]:.4f} .. %{customdata[1]:.4f})"
                          "<br>Mann-Whitney p %{customdata[2]:.3g}<br>%{customdata[3]}<extra>" + verdict + "</extra>"))
    g = (summ["metrics"].get(metric) or {}).get("geomean_ratio")
    if g:
        fig.add_trace(go.Scatter(x=[g], y=[f"geomean ({len(df)} points)"], mode="markers", name="geomean",
                                 marker={"symbol": "diamond", "size": 13, "color": "#000000"},
                                 hovertemplate="geomean %{x:.4f}<extra></extra>"))
        names.insert(0, f"geomean ({len(df)} points)")
    fig.add_vline(x=1.0, line={"color": "#7F7F7F", "dash": "dash"})
    xs = pd.concat([df["ci_low"], df["ci_high"], df["ratio"]]).dropna()
    fig.update_layout(xaxis=style.axis("ratio candidate / base", "×", xs), height=160 + 32 * len(names),
                      yaxis={"title": {"text": "point"}, "type": "category", "categoryorder": "array",
                             "categoryarray": list(dict.fromkeys(names))},
                      uirevision="compare")
    return fig


@callback(Output("compare-forest", "figure"), Output("compare-summary", "children"), Output("compare-table", "data"),
          Output("compare-query", "data"),
          Input("compare-base", "value"), Input("compare-cand", "value"), Input("compare-metric", "value"),
          Input("compare-threshold", "value"), Input("compare-paired", "value"), Input("refresh-tick", "n_intervals"))
def update(base: list[str] | None, cand: list[str] | None, metric: str | None, threshold: float | None,
           paired: list[str] | None, _tick: int | None = None):
    """The comparison of the picked runs: forest plot, summary, table; the view into the URL."""
    state = _state({"base": ",".join(base or []), "cand": ",".join(cand or []), "metric": metric or DEFAULT_METRIC,
                    "threshold": "" if threshold is None else str(threshold),
                    "paired": "1" if paired else ""})
    query = urlstate.query_string({**state, "metric": state["metric"] if state["metric"] != DEFAULT_METRIC else None,
                                   "threshold": state["threshold"] if state["threshold"] != 5.0 else None})
    if not state["base"] or not state["cand"]:
        msg = "Pick base runs and candidate runs to compare them point by point."
        return style.empty_figure(msg), html.P(msg, className="pb-muted"), [], query
    try:
        with open_store() as st:
            df, summ, info = comparison(st, state["base"], state["cand"], state["metric"], state["threshold"],
                                        state["paired"])
    except PerfbenchError as exc:
        return style.empty_figure(str(exc)), error_panel(str(exc), "Cannot compare these runs"), [], query
    lines = summary_lines(summ, info, state["metric"])
    cmd = reproduce(info["base"], info["cand"], state["metric"], state["threshold"], state["paired"],
                    str(source.store_path()))
    summary = html.Div([*[html.P(line) for line in lines],
                        html.P(["Reproduce: ", html.Code(cmd, className="pb-repro")])], className="pb-summary")
    return forest_figure(df, summ, state["metric"]), summary, table_rows(df), query


@callback(Output("compare-evidence", "children"), Input("compare-table", "active_cell"),
          State("compare-table", "data"), prevent_initial_call=True)
def show_evidence(cell: dict | None, rows: list[dict] | None):
    """The evidence behind one row: both runs' specs and provenance, and how to measure each again."""
    if not cell or not rows or not 0 <= int(cell.get("row", -1)) < len(rows):
        raise PreventUpdate
    row = rows[int(cell["row"])]
    point = {"batch_size": row.get("batch_size")}
    try:
        with open_store() as st:
            base, cand = st.get_run(str(row["run_base"])), st.get_run(str(row["run_cand"]))
    except PerfbenchError as exc:
        return error_panel(str(exc))
    return html.Div([html.H4(f"{row['benchmark']}: {row['verdict']}"), html.P(row["reason"]),
                     html.H5("Base"), evidence(base, point), html.H5("Candidate"), evidence(cand, point)])


def report_figures(st: Any, run_ids: list[str], sweep_ids: list[str]) -> list[tuple[str, Any]]:
    """For `perfbench report`: the forest plot of exactly two runs (older as base), or of runs
    with subjects (gate `base` runs against the others, else the newest commit against the rest).
    Any other set has no meaningful base, so nothing."""
    runs = scoped_runs(st)
    runs = runs[runs["run_id"].isin(run_ids) & (runs["status"] == "completed")].sort_values("created_at")
    sides = _report_sides(runs)
    if sides is None:
        return []
    try:
        df, summ, _ = comparison(st, sides[0], sides[1], DEFAULT_METRIC)
    except PerfbenchError:
        return []
    return [(f"Compare: {DEFAULT_METRIC}, candidate / base", forest_figure(df, summ, DEFAULT_METRIC))]


def _report_sides(runs: pd.DataFrame) -> tuple[list[str], list[str]] | None:
    if len(runs) == 2:
        return [runs["run_id"].iloc[0]], [runs["run_id"].iloc[1]]
    subj = [subject(s) for s in runs["subject_json"]]
    if len(runs) < 2 or not all(subj):
        return None
    roles = [s.get("role") for s in subj]
    ids = list(runs["run_id"])
    if "base" in roles:
        base = [i for i, r in zip(ids, roles) if r == "base"]
        cand = [i for i, r in zip(ids, roles) if r != "base"]
    else:
        newest = subj[-1].get("commit")
        base = [i for i, s in zip(ids, subj) if s.get("commit") != newest]
        cand = [i for i, s in zip(ids, subj) if s.get("commit") == newest]
    return (base[-MAX_SIDE:], cand[-MAX_SIDE:]) if base and cand else None


warm_imports("scipy.stats")  # the first comparison would otherwise pay half a second for them

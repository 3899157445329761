"""Energy: joules per token and average power across runs (coloured by hardware or backend), and an
ML.ENERGY-leaderboard view: the fastest configuration whose latency meets a deadline and whose
energy per token fits a budget, both set with sliders. Points without energy say why (their
`energy_note`), and the page says how energy is measured (`measure.energy`, docs/backends.md).

Why one trace per colour and not per run: a store of 2,000 runs would be 2,000 traces, which no
browser draws quickly; a run's points are joined by a line inside its colour's trace instead.

URL: ?runs=ID,ID&colour=hardware|backend&deadline_s=SECONDS&budget_j=JOULES_PER_TOKEN
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import dash
import numpy as np
import pandas as pd
from dash import Input, Output, State, callback, dash_table, dcc, html

from perfbench.dashboard import source, style, urlstate
from perfbench.dashboard.components import controls, empty_state, error_panel, labelled, page_layout, url_mirror, watch_version
from perfbench.dashboard.data import MAX_SELECTED, run_label, scoped_runs, store_version
from perfbench.dashboard.source import open_store
from perfbench.errors import PerfbenchError
from perfbench.textsafe import label, plain

PAGE = "energy"
COLOUR_BY = {"hardware": "hardware_id", "backend": "backend"}
EMPTY_COMMAND = "perfbench run workloads/tiny-llama-cpu.yaml"
LEADERBOARD_ROWS = 10
_ENERGY_COLUMNS = ("run_id", "point_id", "batch_size", "load_point", "latency_median_s", "tokens_per_s", "energy_j",
                   "power_avg_w", "energy_per_token_j", "idle_power_w", "energy_method", "energy_note")
HOW_MEASURED = (
    "How energy is measured: the spec's measure.energy (auto | off | nvml | rapl | pi5-pmic; auto tries NVML "
    "on a CUDA device, then RAPL, then the Raspberry Pi 5 PMIC) reads joules over the measured iterations only. "
    "nvml-counter: the difference of NVML's total-energy counter, summed over the visible GPUs "
    "(nvml-power-sampled where a GPU has no counter); rapl: /sys/class/powercap package zones (usually needs "
    "root); pi5-pmic: board rails, which under-read wall power. Joules per token = energy / tokens processed "
    "or produced; idle power is measured before each point (measure.idle_seconds). See docs/backends.md.")

urlstate.sync_url(f"{PAGE}-query")


# -- reading -------------------------------------------------------------------------------------


def energy_points(st: Any, runs: pd.DataFrame) -> pd.DataFrame:
    """Every ok point with a joules-per-token value, of the runs in `runs`, with run columns."""
    present = {r[1] for r in st.query("PRAGMA table_info(points)", what="read the points table")}
    cols = [c for c in _ENERGY_COLUMNS if c in present]
    if "energy_per_token_j" not in present:
        return pd.DataFrame(columns=[*_ENERGY_COLUMNS, "name", "hardware_id", "hardware_name", "backend", "config"])
    rows = st.query(f"SELECT {', '.join(cols)} FROM points WHERE status='ok' AND energy_per_token_j IS NOT NULL"
                    " ORDER BY run_id, point_id", what="read energy points")
    pts = pd.DataFrame([tuple(r) for r in rows], columns=cols).reindex(columns=list(_ENERGY_COLUMNS))
    keep = runs[["run_id", "name", "hardware_id", "hardware_name", "backend"]]
    pts = pts.merge(keep, on="run_id", how="inner")
    # hover text, escaped once per run and per load (not once per point: a store may hold 50,000)
    per_run = {r: label(f"{n} · {h} · {b} · ") for r, n, h, b in
               zip(keep["run_id"], keep["name"], keep["hardware_name"], keep["backend"])}
    load = pts["load_point"].where(pts["load_point"].fillna("") != "", "batch " + pts["batch_size"].astype(str))
    pts["config"] = pts["run_id"].map(per_run) + load.map({v: label(v) for v in load.unique()})
    return pts


def missing_energy(st: Any, runs: pd.DataFrame) -> pd.DataFrame:
    """Points without energy, counted by why (`energy_note`), with the runs they belong to."""
    present = {r[1] for r in st.query("PRAGMA table_info(points)", what="read the points table")}
    if "energy_per_token_j" not in present:
        return pd.DataFrame(columns=["note", "points", "runs", "examples"])
    rows = st.query("SELECT run_id, energy_note, COUNT(*) FROM points WHERE status='ok' AND energy_per_token_j IS NULL"
                    " GROUP BY run_id, energy_note", what="read points without energy")
    df = pd.DataFrame([tuple(r) for r in rows], columns=["run_id", "note", "n"])
    df = df[df["run_id"].isin(set(runs["run_id"]))]
    df["note"] = df["note"].fillna("no energy recorded (measure.energy: off, or a perfbench too old to measure it)")
    names = dict(zip(runs["run_id"], runs["name"]))
    out = [{"note": note, "points": int(g["n"].sum()), "runs": len(g),
            "examples": ", ".join(sorted({str(names.get(r, r)) for r in g["run_id"]})[:3])}
           for note, g in df.groupby("note")]
    return pd.DataFrame(out, columns=["note", "points", "runs", "examples"]).sort_values("points", ascending=False) \
        if out else pd.DataFrame(columns=["note", "points", "runs", "examples"])


# -- sliders: log10 scale, the top of the range meaning "no limit" -------------------------------


def slider_range(values: pd.Series) -> tuple[float, float]:
    """(min, max) of log10(values), padded a little; a tiny span is widened to a decade."""
    v = pd.to_numeric(values, errors="coerce")
    v = v[(v > 0) & v.notna()]
    if v.empty:
        return -3.0, 0.0
    lo, hi = math.log10(float(v.min())), math.log10(float(v.max()))
    if hi - lo < 0.5:
        lo, hi = lo - 0.5, hi + 0.5
    return round(lo - 0.05, 2), round(hi + 0.05, 2)


def slider_value(limit: float | None, rng: tuple[float, float]) -> float:
    if limit is None or limit <= 0:
        return rng[1]
    return min(max(math.log10(limit), rng[0]), rng[1])


def limit_of(value: float | None, top: float | None) -> float | None:
    """The limit a slider sets: None (no limit) at the top of its range."""
    if value is None or (top is not None and value >= top - 1e-9):
        return None
    return float(f"{10 ** value:.3g}")


def _marks(rng: tuple[float, float], unit: str) -> dict[float, str]:
    marks = {float(d): _si(10.0 ** d, unit) for d in range(math.ceil(rng[0]), math.floor(rng[1]) + 1)}
    marks[rng[1]] = "no limit"
    return marks


def _si(x: float, unit: str) -> str:
    for scale, prefix in ((1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")):
        if x >= scale:
            return f"{x / scale:g} {prefix}{unit}"
    return f"{x:g} {unit}"


# -- layout --------------------------------------------------------------------------------------


@page_layout(PAGE)
def layout(**query: Any) -> Any:
    with open_store() as st:
        runs = scoped_runs(st)
        version = store_version(st)
        missing = missing_energy(st, runs)
    pts = cached_points(str(source.store_path()), json.dumps(version, default=str))
    if pts.empty:
        return html.Div([empty_state("No points with energy in this store yet.", EMPTY_COMMAND),
                         missing_panel(missing), html.P(HOW_MEASURED, className="pb-muted")])
    with_energy = runs[runs["run_id"].isin(set(pts["run_id"]))]
    known = set(with_energy["run_id"])
    selected = [r for r in urlstate.items(query, "runs", MAX_SELECTED) if r in known]
    lat_rng, en_rng = slider_range(pts["latency_median_s"]), slider_range(pts["energy_per_token_j"])
    deadline = urlstate.number(query, "deadline_s", None, 0, 1e6)
    budget = urlstate.number(query, "budget_j", None, 0, 1e9)
    return html.Div([
        *url_mirror(PAGE),
        dcc.Store(id="energy-version", data=version),
        controls(
            labelled("runs (none: all with energy)", dcc.Dropdown(
                id="energy-runs", multi=True, value=selected, placeholder="all", style={"minWidth": "30rem"},
                options=[{"label": plain(run_label(r)), "value": r["run_id"]} for _, r in with_energy.iterrows()])),
            labelled("colour by", dcc.RadioItems(id="energy-colour", inline=True,
                                                 value=urlstate.text(query, "colour", "hardware", tuple(COLOUR_BY)),
                                                 options=[{"label": f" {k}", "value": k} for k in COLOUR_BY]))),
        controls(
            labelled("latency deadline (median step / request)", dcc.Slider(
                id="energy-deadline", min=lat_rng[0], max=lat_rng[1], step=0.01, marks=_marks(lat_rng, "s"),
                value=slider_value(deadline, lat_rng), updatemode="mouseup")),
            labelled("energy budget (per token)", dcc.Slider(
                id="energy-budget", min=en_rng[0], max=en_rng[1], step=0.01, marks=_marks(en_rng, "J"),
                value=slider_value(budget, en_rng), updatemode="mouseup"))),
        html.Div(id="energy-best"),
        html.Div([html.Div(dcc.Graph(id="energy-leaderboard"), className="pb-card"),
                  html.Div(dcc.Graph(id="energy-per-token"), className="pb-card"),
                  html.Div(dcc.Graph(id="energy-power"), className="pb-card")], className="pb-grid"),
        dash_table.DataTable(id="energy-table", columns=[{"name": n, "id": c} for c, n in TABLE_COLUMNS],
                             style_cell={"fontSize": "0.85rem", "textAlign": "left"}, style_table={"overflowX": "auto"}),
        missing_panel(missing),
        html.P(HOW_MEASURED, className="pb-muted", id="energy-how"),
    ])


dash.register_page(__name__, path="/energy", name="Energy", order=7, title="perfbench · energy", layout=layout)

TABLE_COLUMNS = [("rank", "#"), ("name", "run"), ("hardware_name", "hardware"), ("backend", "backend"),
                 ("batch", "batch / load"), ("latency_median_s", "latency (s)"), ("energy_per_token_j", "J/token"),
                 ("tokens_per_s", "tokens/s"), ("power_avg_w", "power (W)"), ("energy_method", "method"),
                 ("run_id", "run id")]


def missing_panel(missing: pd.DataFrame) -> Any:
    """Why some points have no energy: each energy_note with how many points and runs carry it."""
    if missing.empty:
        return None
    items = [html.Li(plain(f"{r['points']} point(s) in {r['runs']} run(s) (e.g. {r['examples']}): {r['note']}"))
             for _, r in missing.iterrows()]
    return html.Div([html.H4("Points without energy"), html.Ul(items, id="energy-missing")])


# -- callbacks -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def cached_points(path: str, _version: str) -> pd.DataFrame:
    """Every energy point in scope, kept while the store's stamp stands: moving a slider or picking
    runs filters these instead of reading 50,000 points again. Callers must not change it."""
    with open_store() as st:
        return energy_points(st, scoped_runs(st))


watch_version(PAGE)


@callback(Output("energy-leaderboard", "figure"), Output("energy-per-token", "figure"), Output("energy-power", "figure"),
          Output("energy-best", "children"), Output("energy-table", "data"), Output("energy-query", "data"),
          Input("energy-runs", "value"), Input("energy-colour", "value"), Input("energy-deadline", "value"),
          Input("energy-budget", "value"), Input("energy-version", "data"),
          State("energy-deadline", "max"), State("energy-budget", "max"))
def update(selected: list[str] | None, colour_by: str, deadline_v: float | None, budget_v: float | None, _version: Any,
           deadline_top: float | None, budget_top: float | None):
    """Every figure for the chosen runs and limits, the best configuration, and this view's URL."""
    selected = list(dict.fromkeys(selected or []))[:MAX_SELECTED]
    colour_by = colour_by if colour_by in COLOUR_BY else "hardware"
    deadline, budget = limit_of(deadline_v, deadline_top), limit_of(budget_v, budget_top)
    query = urlstate.query_string({"runs": selected, "colour": colour_by if colour_by != "hardware" else None,
                                   "deadline_s": deadline, "budget_j": budget})
    try:
        pts = cached_points(str(source.store_path()), json.dumps(_version, default=str))
        pts = pts[pts["run_id"].isin(selected)] if selected else pts
    except PerfbenchError as exc:
        msg = style.empty_figure(str(exc))
        return msg, msg, msg, error_panel(str(exc)), [], query
    figs = energy_figures(pts, colour_by, deadline, budget)
    best = best_configuration(pts, deadline, budget)
    return (*figs, best_panel(best, deadline, budget), table_rows(pts, deadline, budget), query)


# -- pure figures --------------------------------------------------------------------------------


def feasible(pts: pd.DataFrame, deadline: float | None, budget: float | None) -> pd.Series:
    """Which points meet the latency deadline and fit the energy budget (None: no limit)."""
    ok = pts["energy_per_token_j"].notna()
    if deadline is not None:
        ok &= pts["latency_median_s"] <= deadline
    if budget is not None:
        ok &= pts["energy_per_token_j"] <= budget
    return ok


def ranked(pts: pd.DataFrame, deadline: float | None, budget: float | None) -> pd.DataFrame:
    """Feasible points, fastest first (tokens/s; ties: fewer joules per token)."""
    f = pts[feasible(pts, deadline, budget)]
    return f.sort_values(["tokens_per_s", "energy_per_token_j"], ascending=[False, True], na_position="last")


def best_configuration(pts: pd.DataFrame, deadline: float | None, budget: float | None) -> dict[str, Any] | None:
    r = ranked(pts, deadline, budget)
    return None if r.empty else r.iloc[0].to_dict()


def config_label(p: dict[str, Any] | pd.Series) -> str:
    load = p.get("load_point") or f"batch {p.get('batch_size')}"
    return f"{p['name']} · {p['hardware_name']} · {p['backend']} · {load}"


def best_panel(best: dict[str, Any] | None, deadline: float | None, budget: float | None) -> Any:
    limits = (f"latency ≤ {deadline:g} s" if deadline is not None else "no latency deadline") + ", " + \
             (f"≤ {budget:g} J/token" if budget is not None else "no energy budget")
    if best is None:
        return html.P(plain(f"No configuration meets {limits}: relax a slider."), className="pb-muted", id="energy-best-text")
    return html.P(plain(f"Best under {limits}: {config_label(best)} — {best['tokens_per_s']:.4g} tokens/s, "
                        f"{best['energy_per_token_j']:.3g} J/token, {best['latency_median_s']:.3g} s"
                        f" (run {best['run_id']})"), id="energy-best-text")


def table_rows(pts: pd.DataFrame, deadline: float | None, budget: float | None) -> list[dict[str, Any]]:
    r = ranked(pts, deadline, budget).head(LEADERBOARD_ROWS)
    out = []
    for i, (_, p) in enumerate(r.iterrows(), 1):
        out.append({"rank": i, "name": plain(p["name"]), "hardware_name": plain(p["hardware_name"]),
                    "backend": plain(p["backend"]), "batch": plain(p["load_point"] or p["batch_size"]),
                    "latency_median_s": _num(p["latency_median_s"]), "energy_per_token_j": _num(p["energy_per_token_j"]),
                    "tokens_per_s": _num(p["tokens_per_s"]), "power_avg_w": _num(p["power_avg_w"]),
                    "energy_method": plain(p["energy_method"] or ""), "run_id": plain(p["run_id"])})
    return out


def _num(v: Any) -> Any:
    return None if v is None or pd.isna(v) else float(f"{float(v):.4g}")


def energy_figures(pts: pd.DataFrame, colour_by: str = "hardware", deadline: float | None = None,
                   budget: float | None = None) -> list[Any]:
    """[leaderboard: J/token against latency with the limits, J/token against batch, power against batch]."""
    if pts.empty:
        msg = style.empty_figure("No points with energy among these runs.")
        return [msg, msg, msg]
    return [leaderboard_figure(pts, colour_by, deadline, budget),
            by_batch_figure(pts, colour_by, "energy_per_token_j", "energy per token", "J/token"),
            by_batch_figure(pts, colour_by, "power_avg_w", "average power", "W", idle=True)]


def _groups(pts: pd.DataFrame, colour_by: str):
    """(group value, its colour, its points) per hardware or backend."""
    col = COLOUR_BY[colour_by]
    kind = "backend" if colour_by == "backend" else "hardware"
    for value, g in pts.groupby(col, sort=True):
        yield value, style.colour(value, kind), g


def _group_name(g: pd.DataFrame, value: Any, colour_by: str) -> str:
    return label(g["hardware_name"].iloc[0] if colour_by == "hardware" else value)


def _hover(g: pd.DataFrame) -> np.ndarray:
    return g["config"].to_numpy(str)  # escaped once, in energy_points


def _arr(values: Any) -> np.ndarray:
    """Numbers as a float array (NaN: a gap): plotly checks arrays fast, long lists slowly."""
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)


def leaderboard_figure(pts: pd.DataFrame, colour_by: str, deadline: float | None, budget: float | None) -> Any:
    """Every point as J/token against latency: outside the limits faded, the best a star."""
    import plotly.graph_objects as go

    ok = feasible(pts, deadline, budget)
    kind = style.scatter_kind(len(pts))
    fig = style.figure("energy per token against latency (ML.ENERGY-style)")
    for value, colour, g in _groups(pts, colour_by):
        fig.add_trace(getattr(go, "Scattergl" if kind == "scattergl" else "Scatter")(
            x=_arr(g["latency_median_s"]), y=_arr(g["energy_per_token_j"]), mode="markers",
            name=_group_name(g, value, colour_by),
            marker={"color": colour, "size": 8, "opacity": np.where(ok[g.index].to_numpy(bool), 1.0, 0.2)},
            text=_hover(g), hovertemplate="%{text}<br>%{x:.3g} s · %{y:.3g} J/token<extra></extra>"))
    best = best_configuration(pts, deadline, budget)
    if best is not None:
        fig.add_trace(go.Scatter(x=[best["latency_median_s"]], y=[best["energy_per_token_j"]], mode="markers",
                                 name="best under the limits", hovertext=[label(config_label(best))], hoverinfo="text",
                                 marker={"symbol": "star", "size": 18, "color": "#F0E442", "line": {"color": "#000", "width": 1}}))
    if deadline is not None:
        fig.add_vline(x=deadline, line={"dash": "dash", "color": "#D55E00"}, annotation_text=f"deadline {deadline:g} s")
    if budget is not None:
        fig.add_hline(y=budget, line={"dash": "dash", "color": "#D55E00"}, annotation_text=f"budget {budget:g} J/token")
    fig.update_layout(xaxis=style.axis("latency (median step; serving: E2E)", "s", extent(pts["latency_median_s"])),
                      yaxis=style.axis("energy per token", "J/token", extent(pts["energy_per_token_j"])),
                      uirevision=PAGE)
    return fig


def by_batch_figure(pts: pd.DataFrame, colour_by: str, col: str, title: str, unit: str, idle: bool = False) -> Any:
    """A metric against batch size, one line per run inside one trace per colour."""
    import plotly.graph_objects as go

    trace = getattr(go, "Scattergl" if style.scatter_kind(len(pts)) == "scattergl" else "Scatter")
    fig = style.figure(f"{title} against batch size")
    for value, colour, g in _groups(pts, colour_by):
        xs, ys, texts = _joined(g, col)
        fig.add_trace(trace(x=_arr(xs), y=_arr(ys), mode="lines+markers", name=_group_name(g, value, colour_by), text=texts,
                            line={"color": colour}, marker={"color": colour}, connectgaps=False,
                            hovertemplate="%{text}<br>batch %{x}: %{y:.3g} " + unit + "<extra></extra>"))
        if idle and g["idle_power_w"].notna().any():
            fig.add_trace(trace(x=_arr(g["batch_size"]), y=_arr(g["idle_power_w"]), mode="markers", name=label(f"idle · {value}"),
                                marker={"color": colour, "symbol": "circle-open"}, text=_hover(g),
                                hovertemplate="%{text}<br>idle %{y:.3g} W<extra></extra>"))
    ys = pd.concat([pts[col], pts["idle_power_w"]]) if idle else pts[col]
    fig.update_layout(xaxis=style.axis("batch size (serving: requests in flight)", "sequences", extent(pts["batch_size"])),
                      yaxis=style.axis(title, unit, extent(ys)), uirevision=f"{PAGE}-{col}")
    return fig


def extent(values: Any) -> list[float]:
    """The smallest and largest positive value: all style.axis needs to choose a log axis, without
    a Python loop over 50,000 values."""
    v = pd.to_numeric(pd.Series(values), errors="coerce")
    v = v[(v > 0) & np.isfinite(v)]
    return [] if v.empty else [float(v.min()), float(v.max())]


def _joined(g: pd.DataFrame, col: str) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """The points of each run in batch order, runs separated by a gap (NaN), without a loop
    over runs (a store may hold thousands)."""
    s = g.sort_values(["run_id", "batch_size"])[["run_id", "batch_size", col, "config"]].assign(_gap=0)
    gaps = pd.DataFrame({"run_id": s["run_id"].unique(), "_gap": 1})
    both = pd.concat([s, gaps], ignore_index=True).sort_values(["run_id", "_gap"], kind="stable")
    return both["batch_size"], both[col], both["config"].fillna("").to_numpy(str)


def report_figures(st: Any, run_ids: list[str], sweep_ids: list[str]) -> list[tuple[str, Any]]:
    """The figures of this page for `perfbench report` over `run_ids` (none without energy)."""
    runs = scoped_runs(st)
    pts = energy_points(st, runs[runs["run_id"].isin(run_ids)])
    if pts.empty:
        return []
    lead, per_token, power = energy_figures(pts, "hardware")
    return [("Energy per token against latency", lead), ("Energy per token against batch size", per_token),
            ("Average power against batch size", power)]

"""History: one metric of one benchmark on one machine over commits, with its steps.

The runs are those `perfbench history` follows (completed runs of a workload on one hardware id,
gate `base` runs left out: they measured another binary), the newest MAX_RUNS of them. Each run's
value is drawn as a raw point, with a rolling median and p10-p90 band; change points come from
`perfbench.gate.changepoint.detect` (ruptures PELT + a t-test), each marked at its commit with its
size and confidence. Where the runs carry gate roles, a `confirm` run means the gate suspected the
run before it of being slower; the page re-computes the confirmation's verdict as the gate did.
Clicking a run compares it with the runs before it, as `perfbench gate` would, with the command.

URL: ?name=WORKLOAD&hardware=ID&spec=HASH&branch=main&metric=latency_median_s&point=b1-s16-n0&minseg=5
"""

from __future__ import annotations

import shlex
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from perfbench.dashboard import source, style, urlstate
from perfbench.dashboard.components import controls, empty_state, error_panel, labelled, page_layout, url_mirror
from perfbench.dashboard.data import MAX_SELECTED, points_frame, scoped_runs, subject, warm_imports
from perfbench.dashboard.source import open_store
from perfbench.errors import PerfbenchError
from perfbench.schema import FIELDS
from perfbench.textsafe import label, plain

PAGE = "history"
#: The newest this many runs are drawn (the points query and change-point search stay bounded).
MAX_RUNS = MAX_SELECTED
METRICS = tuple(n for n, f in FIELDS.items() if f.is_metric)
DEFAULT_METRIC = "latency_median_s"
#: Like `perfbench gate`: the history baseline is the last BASELINE_RUNS runs of BASELINE_BRANCH.
BASELINE_BRANCH = "main"
BASELINE_RUNS = 5
THRESHOLD = 0.05
#: Confirmation verdicts re-computed at most for this many newest `confirm` runs.
MAX_VERDICTS = 5
ROLLING = 9
GATE_COMMAND = "perfbench gate workloads/suites/tiny-cpu.yaml --commit SHA --branch main"
#: Gate roles that make up a history (`base` runs measured another binary; see gate/flow.py).
HISTORY_ROLES = (None, "candidate", "confirm")
#: The spec picker's "every spec of this name" (the CLI's selection by name); default: the newest spec.
ALL_SPECS = "*"

urlstate.sync_url(f"{PAGE}-query")


def history_runs(st, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Completed runs that can be part of a history, oldest first, with subject, role and commit.
    Runs started in the same millisecond keep the order they were stored in (rowid), not their ids'."""
    runs = scoped_runs(st) if runs is None else runs
    df = runs[runs["status"] == "completed"].copy()
    subj = [subject(s) for s in df["subject_json"]]
    df["subject"] = subj
    df["role"] = [s.get("role") for s in subj]
    df["subject_commit"] = [s.get("commit") for s in subj]
    df["has_subject"] = [bool(s) for s in subj]
    df = df[df["role"].isin([r for r in HISTORY_ROLES if r]) | df["role"].isna()]
    order = {r[0]: r[1] for r in st.query("SELECT run_id, rowid FROM runs", what="order runs")}
    df["seq"] = [order.get(r, 0) for r in df["run_id"]]
    return df.sort_values(["created_at", "seq"], kind="stable").reset_index(drop=True)


def _opts(values: Any, labels: dict | None = None) -> list[dict[str, str]]:
    vals = sorted({str(v) for v in values if v is not None and not (isinstance(v, float) and pd.isna(v))})
    return [{"label": plain((labels or {}).get(v, v)), "value": v} for v in vals]


def choices(hist: pd.DataFrame, state: dict[str, Any]) -> dict[str, Any]:
    """Picker options and the values to show: what the URL asked for where it exists, else the
    workload with the newest subject-tagged run, its busiest hardware, every branch and spec."""
    with_subject = hist[hist["has_subject"]]
    names = _opts(with_subject["name"]) or _opts(hist["name"])
    name = state["name"] if state["name"] in {o["value"] for o in names} else (
        str(with_subject["name"].iloc[-1]) if len(with_subject) else None)
    of = hist[hist["name"] == name]
    hw_names = dict(zip(of["hardware_id"].astype(str), of["hardware_name"].astype(str)))
    hardware = _opts(of["hardware_id"], {k: f"{v} · {k}" for k, v in hw_names.items()})
    hw = state["hardware"] if state["hardware"] in hw_names else (
        str(of["hardware_id"].value_counts().idxmax()) if len(of) else None)
    on = of[of["hardware_id"] == hw]
    counts = on["spec_hash"].astype(str).value_counts()
    specs = [{"label": "every spec of this name", "value": ALL_SPECS}] + _opts(
        on["spec_hash"], {k: f"{k} · {n} runs" for k, n in counts.items()})
    branches = _opts(on["branch"])
    newest = str(on["spec_hash"].iloc[-1]) if len(on) else None
    return {"names": names, "name": name, "hardware": hardware, "hw": hw, "specs": specs, "branches": branches,
            "spec": state["spec"] if state["spec"] in {o["value"] for o in specs} else newest,
            "branch": state["branch"] if state["branch"] in {o["value"] for o in branches} else None}


def _state(query: dict[str, Any]) -> dict[str, Any]:
    return {"name": urlstate.text(query, "name"), "hardware": urlstate.text(query, "hardware"),
            "spec": urlstate.text(query, "spec"), "branch": urlstate.text(query, "branch"),
            "metric": urlstate.text(query, "metric", DEFAULT_METRIC, METRICS), "point": urlstate.text(query, "point"),
            "minseg": int(urlstate.number(query, "minseg", 5, 2, 50))}


def selected(hist: pd.DataFrame, name: str | None, hw: str | None, spec: str | None, branch: str | None) -> pd.DataFrame:
    """The runs of the series: one workload on one machine (never mixed), optionally one spec and branch."""
    keep = (hist["name"] == name) & (hist["hardware_id"] == hw)
    if spec and spec != ALL_SPECS:
        keep &= hist["spec_hash"] == spec
    if branch:
        keep &= hist["branch"] == branch
    return hist[keep].tail(MAX_RUNS)


def run_points(st, runs: pd.DataFrame, metric: str, point: str | None = None) -> list[dict]:
    """The runs as `changepoint.series` reads them: only the fields it needs (no samples), and
    only `point`'s rows when given (a history of 200 runs x 25 points would otherwise be read whole)."""
    shape = _shape(point)
    ids = list(runs["run_id"])[-MAX_RUNS:]
    column = FIELDS[metric].column
    if shape is None or not ids or column not in _point_columns(st):
        rows = points_frame(st, ids, ["batch_size", "seq_len", "new_tokens", "status", metric]).to_dict("records")
    else:
        marks = ",".join("?" for _ in ids)
        found = st.query(f"SELECT run_id, batch_size, seq_len, new_tokens, status, {column} AS value FROM points "
                         f"WHERE run_id IN ({marks}) AND batch_size = ? AND seq_len = ? AND new_tokens = ? "
                         "ORDER BY run_id, point_id", [*ids, *shape], what="read a history")
        rows = [{**{k: r[k] for k in ("run_id", "batch_size", "seq_len", "new_tokens", "status")},
                 metric: _number(r["value"])} for r in found]
    by_run: dict[str, list[dict]] = {}
    for p in rows:
        by_run.setdefault(p["run_id"], []).append({k: (None if _missing(v) else v) for k, v in p.items()})
    return [{"run_id": r["run_id"], "created_at": r["created_at"], "commit": r["commit_sha"],
             "subject": r["subject"], "points": by_run.get(r["run_id"], [])} for r in runs.to_dict("records")]


def _shape(point: str | None) -> tuple[int, int, int] | None:
    """`b1-s64-n0` as (batch, seq_len, new_tokens), or None when it is not one."""
    import re

    m = re.fullmatch(r"b(\d+)-s(\d+)-n(\d+)", point or "")
    return tuple(int(g) for g in m.groups()) if m else None  # type: ignore[return-value]


def _number(v: Any) -> float | None:
    """A stored metric as a float; text or damage reads as None (a gap, never a crash)."""
    try:
        return float(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None


def _point_columns(st) -> set[str]:
    return {r[1] for r in st.query("PRAGMA table_info(points)", what="read the points table")}


def point_keys(st, runs: pd.DataFrame) -> list[str]:
    """The shapes measured (ok) in these runs, e.g. `b1-s64-n0`, in batch order."""
    ids = list(runs["run_id"])[-MAX_RUNS:]
    if not ids:
        return []
    marks = ",".join("?" for _ in ids)
    rows = st.query(f"SELECT DISTINCT batch_size, seq_len, new_tokens FROM points WHERE run_id IN ({marks}) "
                    "AND status = 'ok' ORDER BY batch_size, seq_len, new_tokens", ids, what="list points")
    return [f"b{r[0]}-s{r[1]}-n{r[2]}" for r in rows]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and pd.isna(v))


def _txt(v: Any) -> str:
    """A stored value as text, `-` when absent (None, or NaN where pandas filled a gap)."""
    return "-" if _missing(v) or v == "" else str(v)


@page_layout(PAGE)
def layout(**query: Any) -> Any:
    with open_store() as st:
        hist = history_runs(st)
        if not hist["has_subject"].any():
            return empty_state("No runs with a subject (commit, branch) in this store yet: a history follows the "
                               "runs the CI gate tags with their commit.", GATE_COMMAND)
        s = _state(query)
        c = choices(hist, s)
        keys = point_keys(st, selected(hist, c["name"], c["hw"], c["spec"], c["branch"]).tail(20))
    point = s["point"] if s["point"] in keys else (keys[0] if keys else None)
    return html.Div([
        *url_mirror(PAGE),
        controls(
            labelled("benchmark", dcc.Dropdown(id="history-name", options=c["names"], value=c["name"], clearable=False)),
            labelled("hardware", dcc.Dropdown(id="history-hardware", options=c["hardware"], value=c["hw"],
                                              clearable=False)),
            labelled("spec", dcc.Dropdown(id="history-spec", options=c["specs"], value=c["spec"],
                                          clearable=False)),
            labelled("branch", dcc.Dropdown(id="history-branch", options=c["branches"], value=c["branch"],
                                            placeholder="every branch")),
            labelled("metric", dcc.Dropdown(id="history-metric", options=[{"label": m, "value": m} for m in METRICS],
                                            value=s["metric"], clearable=False)),
            labelled("point", dcc.Dropdown(id="history-point", options=[{"label": k, "value": k} for k in keys],
                                           value=point, clearable=False)),
            labelled("min segment (runs)", dcc.Input(id="history-minseg", type="number", min=2, max=50, step=1,
                                                     value=s["minseg"], debounce=True))),
        html.Div(id="history-summary"),
        html.Div(dcc.Graph(id="history-series"), className="pb-card"),
        html.P("Click a run to compare it with the runs before it, as the gate does.", className="pb-muted"),
        html.Div(id="history-evidence"),
    ])


dash.register_page(__name__, path="/history", name="History", order=5, title="perfbench · history", layout=layout)


@callback(Output("history-hardware", "options"), Output("history-hardware", "value"),
          Output("history-spec", "options"), Output("history-spec", "value"),
          Output("history-branch", "options"), Output("history-branch", "value"),
          Input("history-name", "value"), Input("history-hardware", "value"),
          State("history-spec", "value"), State("history-branch", "value"), prevent_initial_call=True)
def narrow(name: str | None, hardware: str | None, spec: str | None, branch: str | None):
    """The hardware, specs and branches this benchmark was measured on (kept where still valid)."""
    try:
        with open_store() as st:
            hist = history_runs(st)
    except PerfbenchError:
        raise PreventUpdate from None
    c = choices(hist, {"name": name, "hardware": hardware, "spec": spec, "branch": branch})
    return c["hardware"], c["hw"], c["specs"], c["spec"], c["branches"], c["branch"]


@callback(Output("history-point", "options"), Output("history-point", "value"),
          Input("history-hardware", "value"), Input("history-spec", "value"), Input("history-branch", "value"),
          State("history-name", "value"), State("history-point", "value"), prevent_initial_call=True)
def points_of(hardware: str | None, spec: str | None, branch: str | None, name: str | None, point: str | None):
    """The points (shapes) measured in the newest runs of the series."""
    try:
        with open_store() as st:
            runs = selected(history_runs(st), name, hardware, spec, branch).tail(20)
            keys = point_keys(st, runs)
    except PerfbenchError:
        raise PreventUpdate from None
    return [{"label": k, "value": k} for k in keys], point if point in keys else (keys[0] if keys else None)


# -- the series ---------------------------------------------------------------------------------------


def history_data(st, state: dict[str, Any]) -> dict[str, Any]:
    """Series, steps and gate markers of one benchmark x hardware x point x metric."""
    from perfbench.gate import need_gate_extra
    from perfbench.gate.changepoint import detect, series
    from perfbench.gate.compare import check_metric

    check_metric(state["metric"])
    need_gate_extra()
    hist = history_runs(st)
    c = choices(hist, state)
    runs = selected(hist, c["name"], c["hw"], c["spec"], c["branch"])
    point = state["point"] or next(iter(point_keys(st, runs.tail(20))), None)
    light = run_points(st, runs, state["metric"], point)
    df = series(light, state["metric"], point) if point else pd.DataFrame(columns=["run_id", "value"])
    meta = runs.set_index("run_id")
    df["role"] = [meta.at[r, "role"] for r in df["run_id"]]
    df["spec_hash"] = [meta.at[r, "spec_hash"] for r in df["run_id"]]
    df = df[df["value"] > 0].reset_index(drop=True) if len(df) else df
    steps = detect(df["value"].tolist(), min_segment=state["minseg"]) if len(df) else []
    return {"choices": c, "point": point, "series": df, "steps": steps, "metric": state["metric"],
            "verdicts": confirm_verdicts(st, hist, df, state["metric"], point) if len(df) else {}}


def suspected(df: pd.DataFrame) -> set[str]:
    """Runs the gate suspected of being slower: the run of a commit just before its `confirm` run."""
    out = set()
    for i in df.index[df["role"] == "confirm"]:
        if i > 0 and df.at[i - 1, "role"] != "confirm" and df.at[i - 1, "commit"] == df.at[i, "commit"]:
            out.add(df.at[i - 1, "run_id"])
    return out


def confirm_verdicts(st, hist: pd.DataFrame, df: pd.DataFrame, metric: str, point: str) -> dict[str, dict]:
    """The newest `confirm` runs' verdicts, re-computed as the gate computes them (bounded)."""
    ids = list(df.loc[df["role"] == "confirm", "run_id"])[-MAX_VERDICTS:]
    out = {}
    for run_id in ids:
        row = gate_row(st, hist, run_id, metric, point)
        if row is not None:
            out[run_id] = row
    return out


def baseline_ids(hist: pd.DataFrame, run_id: str) -> list[str]:
    """Like `perfbench gate`: the last BASELINE_RUNS runs of this spec and hardware on the baseline
    branch before this run, other runs of its commit left out (they are the same gate call)."""
    pos = hist.index[hist["run_id"] == run_id][0]
    me = hist.loc[pos]
    before = hist.loc[:pos - 1]
    before = before[(before["spec_hash"] == me["spec_hash"]) & (before["hardware_id"] == me["hardware_id"])]
    if me["subject_commit"]:
        before = before[before["subject_commit"] != me["subject_commit"]]
    on_branch = before[before["branch"] == BASELINE_BRANCH]
    return list((on_branch if len(on_branch) else before)["run_id"])[-BASELINE_RUNS:]


def gate_row(st, hist: pd.DataFrame, run_id: str, metric: str, point: str | None) -> dict | None:
    """One run against its history baseline at one point, with the gate's statistics (or None)."""
    from perfbench.gate.compare import compare_runs
    from perfbench.gate.report import records

    base = baseline_ids(hist, run_id)
    if not base or not point:
        return None
    b, c = [_at_point(st.get_run(r), point) for r in base], [_at_point(st.get_run(run_id), point)]
    rows = [r for r in records(compare_runs(b, c, metrics=[metric], thresholds={metric: THRESHOLD},
                                            history_floor=True)) if r["point"] == point]
    if not rows:
        return None
    cmd = ["perfbench", "compare", ",".join(base), run_id, "--metric", metric,
           "--threshold", f"{rows[0]['min_effect_pct']:.1f}%", "--store", str(source.store_path())]
    return {**rows[0], "base_ids": base, "reproduce": " ".join(shlex.quote(x) for x in cmd)}


def _at_point(run: dict, point: str) -> dict:
    """The run with only the point asked about (the bootstrap is the cost; other points are unused)."""
    from perfbench.gate.compare import point_key

    return {**run, "points": [p for p in run["points"] if point_key(p) == point]}


def history_figure(data: dict[str, Any]) -> Any:
    """Raw points, rolling median with its p10-p90 band, steps at their commits, gate markers."""
    import plotly.graph_objects as go

    df, metric = data["series"], data["metric"]
    if df.empty:
        return style.empty_figure("No completed run of this benchmark measures this point and metric.")
    unit = FIELDS[metric].unit
    c = data["choices"]
    fig = style.figure(f"{metric} at {data['point']} · {c['name']} on {c['hw']}")
    x = pd.Series(range(len(df)), index=df.index)  # run order: commits evenly spaced, however far apart in time
    lo, hi, mid = _rolling(df["value"], data["steps"])
    fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=list(hi) + list(lo)[::-1], fill="toself",
                             fillcolor="#0072B2", opacity=0.15, line={"width": 0}, hoverinfo="skip",
                             name=f"rolling p10-p90 ({ROLLING} runs)"))
    fig.add_trace(go.Scatter(x=x, y=mid, mode="lines", line={"color": "#0072B2"},
                             name=f"rolling median ({ROLLING} runs)", hoverinfo="skip"))
    _add_levels(fig, df, data["steps"])
    _add_runs(fig, df, x, data, unit)
    _add_steps(fig, df, data["steps"])
    every = max(1, len(df) // 25)
    ticks = list(range(0, len(df), every))
    xaxis = {**style.axis("commit, oldest first", "one run each", log=False), "tickmode": "array", "tickvals": ticks,
             "ticktext": [label(_txt(df.at[i, "commit"])[:7]) for i in ticks], "tickangle": -45}
    fig.update_layout(xaxis=xaxis, yaxis=style.axis(metric, unit, df["value"]), uirevision="history",
                      legend={"orientation": "h", "y": -0.4}, margin={"b": 120})
    return fig


def _rolling(values: pd.Series, steps: list) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Rolling p10, p90 and median, restarted at each step so a band never smears across one."""
    segment = pd.Series(0, index=values.index)
    for s in steps:
        segment.iloc[s.index:] += 1
    parts = [values[segment == k].rolling(ROLLING, center=True, min_periods=1) for k in sorted(set(segment))]
    return (pd.concat([r.quantile(0.1) for r in parts]), pd.concat([r.quantile(0.9) for r in parts]),
            pd.concat([r.median() for r in parts]))


def _add_levels(fig, df: pd.DataFrame, steps: list) -> None:
    """The level of each segment between steps (its median), so a step reads as a jump."""
    import plotly.graph_objects as go

    if not steps:
        return
    edges = [0, *[s.index for s in steps], len(df)]
    xs, ys = [], []
    for a, b in zip(edges, edges[1:]):
        level = float(df["value"].iloc[a:b].median())
        xs += [a - 0.4, b - 0.6, None]
        ys += [level, level, None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#D55E00", "width": 2}, hoverinfo="skip",
                             name="level between steps"))


def _add_runs(fig, df: pd.DataFrame, x, data: dict, unit: str | None) -> None:
    """The raw points, one trace per kind so the legend explains the markers."""
    import plotly.graph_objects as go

    sus, verdicts = suspected(df), data["verdicts"]
    kinds = []
    for i, r in df.iterrows():
        if r["run_id"] in verdicts:
            kinds.append(f"confirm run: {verdicts[r['run_id']]['verdict']}")
        elif r["run_id"] in sus:
            kinds.append("gate suspected slower")
        else:
            kinds.append("run" if r["role"] != "confirm" else "confirm run")
    kinds_s = pd.Series(kinds, index=df.index)
    for kind in dict.fromkeys(kinds):
        m = kinds_s == kind
        sub = df[m]
        verdict = kind.rsplit(": ", 1)[-1] if kind.startswith("confirm run:") else (
            "slower" if kind == "gate suspected slower" else None)
        colour = style.VERDICT_COLOURS.get(verdict, "#000000") if verdict else "#333333"
        fig.add_trace(go.Scatter(
            x=x[m], y=sub["value"], mode="markers", name=kind,
            marker={"color": colour, "size": 9 if verdict else 6,
                    "symbol": "diamond" if kind.startswith("confirm") else ("x" if verdict else "circle")},
            customdata=list(zip([label(v) for v in sub["run_id"]], [label(_txt(v)[:12]) for v in sub["commit"]],
                                [label(_txt(v)) for v in sub["branch"]], [label(_txt(v)) for v in sub["role"]],
                                [label(str(v)[:19]) for v in sub["created_at"]], sub["run_id"])),  # [5]: the id itself
            hovertemplate="%{y:.4g} " + (unit or "") + "<br>commit %{customdata[1]} · %{customdata[2]}"
                          "<br>run %{customdata[0]} · role %{customdata[3]}<br>%{customdata[4]} UTC<extra></extra>"))


def _add_steps(fig, df: pd.DataFrame, steps: list) -> None:
    """Each step: a line just before its first run, labelled with commit, size and confidence."""
    for k, s in enumerate(steps):
        commit = _txt(df.at[s.index, "commit"])[:10]
        fig.add_vline(x=s.index - 0.5, line={"color": "#D55E00", "dash": "dot"})
        fig.add_annotation(x=s.index - 0.5, y=1.0 + 0.06 * (k % 2), yref="paper", showarrow=False, yanchor="bottom",
                           text=label(f"step at {commit}: {s.change_pct:+.1f}% (confidence {s.confidence:.4f})"),
                           font={"color": "#D55E00"})


def summary_children(data: dict[str, Any]) -> list[Any]:
    """What the figure says in words: runs drawn, steps with their commits, gate verdicts."""
    df, unit = data["series"], FIELDS[data["metric"]].unit or ""
    from perfbench.gate.report import fmt_value

    out: list[Any] = [html.P(f"{len(df)} run(s) drawn (at most the newest {MAX_RUNS}); "
                             f"{len(data['steps'])} step(s) found (minimum segment, t-test p < 0.001).")]
    for s in data["steps"]:
        out.append(html.P(f"step at commit {plain(_txt(df.at[s.index, 'commit']))} (run {df.at[s.index, 'run_id']}): "
                          f"{s.change_pct:+.1f}%, {fmt_value(s.before, unit)} -> {fmt_value(s.after, unit)}, "
                          f"confidence {s.confidence:.4f} (p = {s.p_value:.2g})"))
    for run_id, v in data["verdicts"].items():
        out.append(html.P(f"gate confirmation run {run_id}: {v['verdict']} ({plain(v['reason'])})"))
    return out


@callback(Output("history-series", "figure"), Output("history-summary", "children"), Output("history-query", "data"),
          Input("history-name", "value"), Input("history-hardware", "value"), Input("history-spec", "value"),
          Input("history-branch", "value"), Input("history-metric", "value"), Input("history-point", "value"),
          Input("history-minseg", "value"), Input("refresh-tick", "n_intervals"))
def update(name, hardware, spec, branch, metric, point, minseg, _tick=None):
    """The series for the picked benchmark, hardware, point and metric; the view into the URL."""
    s = _state({"name": name, "hardware": hardware, "spec": spec, "branch": branch, "metric": metric,
                "point": point, "minseg": "" if minseg is None else str(minseg)})
    query = urlstate.query_string({**s, "metric": s["metric"] if s["metric"] != DEFAULT_METRIC else None,
                                   "minseg": s["minseg"] if s["minseg"] != 5 else None})
    try:
        with open_store() as st:
            data = history_data(st, s)
    except PerfbenchError as exc:
        return style.empty_figure(str(exc)), error_panel(str(exc), "Cannot draw this history"), query
    return history_figure(data), summary_children(data), query


@callback(Output("history-evidence", "children"), Input("history-series", "clickData"),
          State("history-metric", "value"), State("history-point", "value"), prevent_initial_call=True)
def compare_clicked(click: dict | None, metric: str | None, point: str | None):
    """The clicked run against its history baseline, as the gate compares it, with the command."""
    try:
        run_id = str(click["points"][0]["customdata"][-1])
    except (TypeError, KeyError, IndexError):
        raise PreventUpdate from None
    metric = metric if metric in METRICS else DEFAULT_METRIC
    try:
        with open_store() as st:
            hist = history_runs(st)
            if run_id not in set(hist["run_id"]):
                raise PreventUpdate
            row = gate_row(st, hist, run_id, metric, point)
    except PerfbenchError as exc:
        return error_panel(str(exc))
    if row is None:
        return html.P(f"Run {run_id} has no earlier run to compare with.", className="pb-muted")
    return html.Div([
        html.H4(f"Run {run_id} against the {len(row['base_ids'])} run(s) before it: {row['verdict']}"),
        html.P(f"ratio {row['ratio']:.4f} (CI {row['ci_low']:.4f} .. {row['ci_high']:.4f}), "
               f"minimum effect {row['min_effect_pct']:.1f}% ({row['min_effect_source']}); {plain(row['reason'])}"
               if row.get("ratio") else plain(row["reason"])),
        html.P(["Reproduce: ", html.Code(row["reproduce"], className="pb-repro")]),
    ], className="pb-evidence")


def report_figures(st: Any, run_ids: list[str], sweep_ids: list[str]) -> list[tuple[str, Any]]:
    """For `perfbench report`: the history of the given runs' benchmark (the first run's workload
    and hardware), every point, latency."""
    runs = scoped_runs(st)
    given = runs[runs["run_id"].isin(run_ids)]
    if given.empty:
        return []
    first = given.sort_values("created_at").iloc[-1]
    base = {"name": first["name"], "hardware": first["hardware_id"], "spec": None, "branch": None,
            "metric": DEFAULT_METRIC, "point": None, "minseg": 5}
    out = []
    try:
        hist = history_runs(st, runs)
        keys = point_keys(st, selected(hist, first["name"], first["hardware_id"], None, None).tail(20))
        for key in keys[:6]:
            data = history_data(st, {**base, "point": key})
            if len(data["series"]) >= 2:
                out.append((f"History: {first['name']} {key} on {first['hardware_id']}", history_figure(data)))
    except PerfbenchError:
        return []
    return out


warm_imports("ruptures", "scipy.stats")  # the first history would otherwise pay half a second for them

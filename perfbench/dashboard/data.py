"""The dashboard's shared data layer: runs, their filters and their points, as pandas DataFrames.

Why SQL with `json_extract` and no full spec parsing: the runs page lists thousands of runs on every
filter change, and only a handful of spec fields are shown. Every value that comes from the URL
reaches SQL only as a bound parameter; column names come from the result schema, never from input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

from perfbench.schema import FIELDS, from_row
from perfbench.store import ResultsStore, process_gone

#: The run filters, in the order the runs page shows them: URL key -> column of `runs_frame`.
FILTERS = {"model": "model", "backend": "backend", "hardware": "hardware_id", "phase": "phase",
           "dtype": "dtype", "status": "status"}
#: At most this many runs may be selected at once (URLs and SQL stay bounded).
MAX_SELECTED = 200

_RUN_COLUMNS = """
SELECT r.run_id, r.name, r.status, r.reason, r.hardware_id, r.device, r.commit_sha, r.created_at,
       r.ended_at, r.sweep_id, r.spec_hash, r.spec_path, r.host, r.pid, r.proc_start, r.subject_json,
       json_extract(r.spec_json, '$.phase') AS phase,
       json_extract(r.spec_json, '$.dtype') AS dtype,
       json_extract(r.spec_json, '$.backend.name') AS backend,
       json_extract(r.spec_json, '$.model') AS model_raw,
       COALESCE(json_extract(r.fingerprint_json, '$.gpus[0].name'),
                json_extract(r.fingerprint_json, '$.board_model'),
                json_extract(r.fingerprint_json, '$.cpu_model')) AS hardware_name,
       (SELECT COUNT(*) FROM points p WHERE p.run_id = r.run_id AND p.status = 'ok') AS points_ok,
       (SELECT COUNT(*) FROM points p WHERE p.run_id = r.run_id AND p.status = 'failed') AS points_failed
FROM runs r
"""


def model_label(raw: Any) -> str:
    """`llama-3.2-1b`, `llama-3.2-1b+custom`, `custom-llama`, or the file name of a local model."""
    if raw is None:
        return "?"
    try:
        model = json.loads(raw) if isinstance(raw, str) and raw[:1] in "{[" else raw
    except ValueError:
        return str(raw)
    if isinstance(model, dict):
        if model.get("preset"):
            return f"{model['preset']}+custom" if len(model) > 1 else str(model["preset"])
        if model.get("path"):
            return str(model["path"]).rstrip("/").rsplit("/", 1)[-1]
        return f"custom-{model.get('family', 'model')}"
    return str(model)


def runs_frame(store: ResultsStore, run_ids: list[str] | None = None) -> pd.DataFrame:
    """Every run (or those of `run_ids`), newest first, one row each: id, name, status, model,
    backend, hardware, phase, dtype, dates, point counts and the subject (commit, branch) it measured."""
    where, args = "", []
    if run_ids is not None:
        args = list(dict.fromkeys(run_ids))[:MAX_SELECTED]
        where = f" WHERE r.run_id IN ({_placeholders(args) or 'NULL'})"
    rows = store.query(_RUN_COLUMNS + where + " ORDER BY r.created_at DESC, r.run_id DESC", args, what="list runs")
    df = pd.DataFrame([dict(r) for r in rows], columns=[
        "run_id", "name", "status", "reason", "hardware_id", "device", "commit_sha", "created_at",
        "ended_at", "sweep_id", "spec_hash", "spec_path", "host", "pid", "proc_start", "subject_json",
        "phase", "dtype", "backend", "model_raw", "hardware_name", "points_ok", "points_failed"])
    df["model"] = [model_label(m) for m in df["model_raw"]]
    df["backend"] = df["backend"].fillna("torch")
    df["hardware_name"] = df["hardware_name"].fillna(df["hardware_id"]).astype(str)
    running = df["status"] == "running"
    for i in df.index[running]:
        if process_gone(df.at[i, "host"], df.at[i, "pid"], df.at[i, "proc_start"]):
            df.at[i, "status"] = "interrupted"
    df["branch"] = [subject(s).get("branch") for s in df["subject_json"]]
    df["date"] = df["created_at"].str.slice(0, 10)
    return df.drop(columns=["model_raw", "host", "pid", "proc_start"])


def scoped_runs(store: ResultsStore, run_ids: list[str] | None = None) -> pd.DataFrame:
    """`runs_frame`, limited to the saved dashboard's run filter when one is in use."""
    from perfbench.dashboard import source

    df = runs_frame(store, run_ids)
    scope = source.scope()
    return scope.apply(df) if scope is not None else df


def subject(raw: Any) -> dict[str, Any]:
    """A run's stored subject (commit, branch, role); {} when absent or damaged."""
    if not isinstance(raw, str) or not raw:  # None reads as NaN in a pandas column
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class RunFilter:
    """A selection of runs by the runs page's filters (each a set of allowed values, empty = all)."""

    values: dict[str, list[str]] = field(default_factory=dict)
    since: str | None = None  # YYYY-MM-DD, inclusive
    until: str | None = None
    text: str | None = None  # a substring of the name or id

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        keep = pd.Series(True, index=df.index)
        for key, allowed in self.values.items():
            if allowed and key in FILTERS:
                keep &= df[FILTERS[key]].astype(str).isin([str(a) for a in allowed])
        if self.since:
            keep &= df["date"] >= self.since
        if self.until:
            keep &= df["date"] <= self.until
        if self.text:
            t = self.text.lower()
            keep &= df["name"].str.lower().str.contains(t, regex=False) | df["run_id"].str.contains(t, regex=False)
        return df[keep]


def filter_options(df: pd.DataFrame) -> dict[str, list[dict[str, str]]]:
    """The values each filter can take in this store, sorted, as dropdown options (hardware ids
    labelled with the machine's name)."""
    names = dict(zip(df["hardware_id"], df["hardware_name"]))
    out = {}
    for key, col in FILTERS.items():
        values = sorted({str(v) for v in df[col].dropna()})
        out[key] = [{"label": f"{names.get(v, v)} · {v}" if key == "hardware" else v, "value": v} for v in values]
    return out


def _placeholders(values: Iterable[Any]) -> str:
    return ",".join("?" for _ in values)


def points_frame(store: ResultsStore, run_ids: list[str], fields: Iterable[str] | None = None) -> pd.DataFrame:
    """Points of the given runs, one row each, with `run_id` and `point_id`. `fields` limits the
    schema fields read (default: every scalar field); `samples_s` is parsed when asked for."""
    run_ids = list(dict.fromkeys(run_ids))[:MAX_SELECTED]
    wanted = [FIELDS[f] for f in (fields or [f for f in FIELDS if FIELDS[f].kind != "json"]) if f in FIELDS]
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "point_id", *[f.name for f in wanted]])
    present = _point_columns(store)
    cols = [f.column for f in wanted if f.column in present]
    sql = (f"SELECT run_id, point_id, {', '.join(cols) or 'status'} FROM points "
           f"WHERE run_id IN ({_placeholders(run_ids)}) ORDER BY run_id, point_id")
    rows = store.query(sql, run_ids, what="read points")
    out = []
    for r in rows:
        d = from_row(r, set(cols))
        out.append({"run_id": r["run_id"], "point_id": r["point_id"],
                    **{f.name: d.get(f.name) for f in wanted}, "damaged": d.get("damaged")})
    return pd.DataFrame(out, columns=["run_id", "point_id", *[f.name for f in wanted], "damaged"])


def _point_columns(store: ResultsStore) -> set[str]:
    return {r[1] for r in store.query("PRAGMA table_info(points)", what="read the points table")}


def run_label(run: pd.Series | dict) -> str:
    """A short, readable name for a run in legends: `name · hardware · backend · id-suffix`."""
    return f"{run['name']} · {run['hardware_id']} · {run['backend']} · {str(run['run_id'])[-6:]}"


def repro_command(run: dict[str, Any], point: dict[str, Any] | None = None, store_flag: str | None = None) -> str:
    """The `perfbench` command that measures this run (or one point of it) again: the spec file it
    came from, with the point's batch size. Where the file is gone, `perfbench results show RUN
    --format json` holds the full spec."""
    spec = run.get("spec_path") or "SPEC.yaml"
    parts = ["perfbench", "run", _shell_word(spec)]
    if point is not None and point.get("batch_size") is not None:
        parts += ["--set", f"batch_size={int(point['batch_size'])}"]
    if store_flag:
        parts += ["--store", _shell_word(store_flag)]
    return " ".join(parts)


def _shell_word(text: str) -> str:
    import shlex

    return shlex.quote(str(text))


def warm_imports(*modules: str) -> None:
    """Import slow optional modules (scipy, ruptures) in a background thread at app start, so the
    first callback that needs them does not pay for the import. Missing ones are left to the page,
    which says what to install."""
    import importlib
    import threading

    def _load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                pass

    threading.Thread(target=_load, name="perfbench-warm-imports", daemon=True).start()


def store_version(st: Any) -> list[Any]:
    """A stamp that changes when a point is added, a run ends or a machine is calibrated: live
    refresh redraws (and re-places, re-reads) only then."""
    points = st.query("SELECT COUNT(*), MAX(point_id) FROM points", what="read the store's progress")[0]
    runs = st.query("SELECT COUNT(*), MAX(ended_at), SUM(status='running') FROM runs", what="read the store's progress")[0]
    cals = st.query("SELECT COUNT(*) FROM calibrations", what="read the store's progress")[0]
    return [*points, *runs, *cals]

"""Numbered upgrades of the results store, each a step that runs inside one transaction.

Why steps and not "add whatever column is missing": a store is a record of measurements that
people keep for years. Every change to its layout is written down once, in order, and tested on a
store that the older release really wrote (tests/fixtures/stores/). A store newer than this code
is refused and left untouched.

To add a result field: one line in `perfbench.schema.POINT_FIELDS`, and a new step here that adds
its column (tests check that a migrated store and a fresh one have the same columns).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Callable

#: Columns that release 2 of the store adds to `points` (release 1 kept some of these in extra_json).
_V2_POINT_COLUMNS = (
    ("traceback", "TEXT"), ("capped", "TEXT"), ("tokens_per_step", "INTEGER"), ("tokens_source", "TEXT"),
    ("prompt_tokens", "INTEGER"), ("reference_median_s", "REAL"),
    ("pp_tokens_per_s", "REAL"), ("tg_tokens_per_s", "REAL"), ("pp_median_s", "REAL"),
    ("tg_median_s", "REAL"), ("engine_pp_tokens_per_s", "REAL"), ("engine_tg_tokens_per_s", "REAL"),
    ("engine_timings_json", "TEXT"), ("overhead_ratio", "REAL"), ("energy_j", "REAL"),
    ("power_avg_w", "REAL"), ("energy_per_token_j", "REAL"), ("idle_power_w", "REAL"),
    ("energy_method", "TEXT"), ("energy_resolution_j", "REAL"), ("energy_note", "TEXT"),
    ("context_len", "INTEGER"), ("kv_cache", "TEXT"), ("trace_error", "TEXT"),
    ("trace_figures_json", "TEXT"), ("traced_span_us", "REAL"), ("timed_median_us", "REAL"),
    ("profiler_overhead_ratio", "REAL"),
)
#: Keys release 1 kept in points.extra_json that now have columns (JSON ones re-serialised).
_V1_EXTRA_KEYS = ("traceback", "capped", "tokens_per_step", "context_len", "kv_cache", "trace_error",
                  "trace_figures", "traced_span_us", "timed_median_us", "profiler_overhead_ratio")


def _tables(c: sqlite3.Connection) -> set[str]:
    return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(c: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in c.execute(f"PRAGMA table_info({table})")}


def _v2_typed_columns(c: sqlite3.Connection) -> None:
    """Release 2: one typed column per known point field; the engine under test per run; the
    identity of the writing process (runs, sweeps)."""
    if "engine_json" not in _columns(c, "runs"):
        c.execute("ALTER TABLE runs ADD COLUMN engine_json TEXT")
    if "proc_start" not in _columns(c, "runs"):  # tells a writer from a later process with its pid
        c.execute("ALTER TABLE runs ADD COLUMN proc_start TEXT")
    if "sweeps" in _tables(c) and "proc_start" not in _columns(c, "sweeps"):
        c.execute("ALTER TABLE sweeps ADD COLUMN proc_start TEXT")
    have = _columns(c, "points")
    for name, sql_type in _V2_POINT_COLUMNS:
        if name not in have:
            c.execute(f"ALTER TABLE points ADD COLUMN {name} {sql_type}")
    _move_extra_keys(c)
    _backfill_engine(c)


def _move_extra_keys(c: sqlite3.Connection) -> None:
    rows = c.execute("SELECT point_id, extra_json FROM points WHERE extra_json IS NOT NULL").fetchall()
    for point_id, extra_json in rows:
        try:
            extra = json.loads(extra_json)
        except ValueError:
            continue  # a damaged row stays as it was: readers show what they can
        if not isinstance(extra, dict):
            continue
        moved = {k: extra.pop(k) for k in _V1_EXTRA_KEYS if k in extra}
        if not moved:
            continue
        sets = {(f"{k}_json" if k == "trace_figures" else k):
                (json.dumps(v) if k == "trace_figures" else v) for k, v in moved.items()}
        assigns = ", ".join(f"{k}=?" for k in sets)
        c.execute(f"UPDATE points SET {assigns}, extra_json=? WHERE point_id=?",
                  (*sets.values(), json.dumps(extra) if extra else None, point_id))


def _backfill_engine(c: sqlite3.Connection) -> None:
    """Release 1 ran torch only: its engine is torch at the version the run recorded."""
    rows = c.execute("SELECT run_id, spec_json, versions_json FROM runs WHERE engine_json IS NULL").fetchall()
    for run_id, spec_json, versions_json in rows:
        try:
            backend = json.loads(spec_json).get("backend", {})
            versions = json.loads(versions_json)
        except (ValueError, AttributeError):
            continue
        engine = {"name": backend.get("name", "torch"), "version": versions.get("torch"),
                  "transformers": versions.get("transformers"), "compile": backend.get("compile")}
        c.execute("UPDATE runs SET engine_json=? WHERE run_id=?", (json.dumps(engine), run_id))


#: The CI gate's noise floors (perfbench gate calibrate): one row per benchmark point, metric and
#: hardware. Shared with the fresh-store schema in perfbench/store.py.
NOISE_FLOORS_DDL = """CREATE TABLE IF NOT EXISTS noise_floors (
    hardware_id    TEXT NOT NULL,
    spec_hash      TEXT NOT NULL,
    point_key      TEXT NOT NULL,
    metric         TEXT NOT NULL,
    mode           TEXT NOT NULL CHECK (mode IN ('separate','interleaved')),
    floor          REAL NOT NULL,
    pairs          INTEGER NOT NULL,
    detail_json    TEXT,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (hardware_id, spec_hash, point_key, metric, mode)
)"""


def _v3_gate(c: sqlite3.Connection) -> None:
    """Release 3: who the run measured (`subject_json`: commit, branch, CI run id, engine version)
    so the gate can find a branch's history; the per-hardware noise floors of the gate."""
    if "subject_json" not in _columns(c, "runs"):
        c.execute("ALTER TABLE runs ADD COLUMN subject_json TEXT")
    c.execute(NOISE_FLOORS_DDL)


#: Serving (phase serve): one row per request of a load point. Shared with the fresh-store schema
#: in perfbench/store.py. Times are seconds from the load point's start (perf_counter origin).
REQUESTS_DDL = """CREATE TABLE IF NOT EXISTS requests (
    request_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    point_id              INTEGER NOT NULL REFERENCES points(point_id) ON DELETE CASCADE,
    run_id                TEXT NOT NULL,
    idx                   INTEGER NOT NULL,
    role                  TEXT NOT NULL CHECK (role IN ('warmup','measured','cooldown')),
    prompt_id             TEXT,
    scheduled_s           REAL,
    ready_s               REAL,
    sent_s                REAL,
    first_token_s         REAL,
    done_s                REAL,
    token_times_json      TEXT,
    input_tokens          INTEGER,
    output_tokens         INTEGER,
    input_tokens_source   TEXT,
    output_tokens_source  TEXT,
    status                TEXT NOT NULL CHECK (status IN ('ok','failed')),
    error                 TEXT,
    http_status           INTEGER,
    server_timings_json   TEXT
)"""
REQUESTS_INDEX = "CREATE INDEX IF NOT EXISTS requests_point ON requests(point_id)"

#: Columns that release 4 adds to `points` (serving load points).
_V4_POINT_COLUMNS = (
    ("concurrency", "INTEGER"), ("target_rate_rps", "REAL"), ("achieved_rate_rps", "REAL"),
    ("n_requests", "INTEGER"), ("n_failed", "INTEGER"),
    *((f"{m}_{q}_s", "REAL") for m in ("ttft", "tpot", "itl", "e2e") for q in ("p50", "p90", "p99")),
    ("requests_per_s", "REAL"), ("output_tokens_per_s", "REAL"), ("goodput_rps", "REAL"),
    ("send_lag_p99_s", "REAL"), ("client_cpu_share", "REAL"), ("point_valid", "INTEGER"),
    ("invalid_reason", "TEXT"), ("input_tokens_mean", "REAL"), ("output_tokens_mean", "REAL"),
    ("token_source", "TEXT"),
)


def _v4_serving(c: sqlite3.Connection) -> None:
    """Release 4: serving load points. A point's identity gains `load_point` (c8, r2.5): the points
    table is rebuilt with UNIQUE (run_id, batch_size, seq_len, new_tokens, load_point), every row
    and point_id kept ('' for points that are not load points); per-request rows in `requests`."""
    have = _columns(c, "points")
    for name, sql_type in _V4_POINT_COLUMNS:
        if name not in have:
            c.execute(f"ALTER TABLE points ADD COLUMN {name} {sql_type}")
    info = c.execute("PRAGMA table_info(points)").fetchall()  # cid, name, type, notnull, default, pk
    fixed = {"point_id", "run_id", "load_point"}
    cols = [f"    {name} {typ}" + (" NOT NULL" if notnull else "") for _cid, name, typ, notnull, _d, _pk in info
            if name not in fixed]
    c.execute("CREATE TABLE points_v4 (\n"
              "    point_id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
              "    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,\n"
              + ",\n".join(cols) + ",\n"
              "    load_point TEXT NOT NULL DEFAULT '',\n"
              "    CHECK (status IN ('ok','failed')),\n"
              "    UNIQUE (run_id, batch_size, seq_len, new_tokens, load_point)\n)")
    names = ", ".join(["point_id", "run_id", *(r[1] for r in info if r[1] not in fixed)])
    c.execute(f"INSERT INTO points_v4 ({names}) SELECT {names} FROM points")
    c.execute("DROP TABLE points")
    c.execute("ALTER TABLE points_v4 RENAME TO points")
    c.execute("CREATE INDEX IF NOT EXISTS points_run ON points(run_id)")
    c.execute(REQUESTS_DDL)
    c.execute(REQUESTS_INDEX)


#: (version it produces, what it does, the step). The store's version is its last step's.
MIGRATIONS: tuple[tuple[int, str, Callable[[sqlite3.Connection], None]], ...] = (
    (2, "typed columns for every known point field; engine under test per run", _v2_typed_columns),
    (3, "the subject under test per run (commit, branch, CI run); noise floors of the CI gate",
     _v3_gate),
    (4, "serving: load points (load_point in a point's identity, latency percentiles, goodput, "
        "client self-check) and one row per request", _v4_serving),
)
STORE_SCHEMA_VERSION = MIGRATIONS[-1][0]


def upgrade(c: sqlite3.Connection, from_version: int) -> list[int]:
    """Apply every step above `from_version`, in order, inside the caller's transaction."""
    done = []
    for version, _what, step in MIGRATIONS:
        if version > from_version:
            step(c)
            done.append(version)
    if done:
        c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(done[-1]),))
    return done

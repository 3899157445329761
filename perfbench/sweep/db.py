"""Sweep bookkeeping: two tables of our own in the results store's SQLite file.

Why separate tables: every trial is a normal run in `runs`/`points` (so every other reader sees it),
while what only a sweep needs (its spec, which assignments were tried, their final status and
metric) lives in `sweeps` and `sweep_trials`. Writes go through `ResultsStore.transaction`, so a
trial's outcome is committed atomically the moment it is known: an interrupted sweep loses no
completed trial, and a re-run finds them and skips them.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from perfbench.errors import InputError
from perfbench.store import (ResultsStore, like_prefix, pick_by_prefix, pid_alive, process_gone,
                             process_identity, utcnow)

SWEEP_SCHEMA_VERSION = 1
SWEEP_STATUSES = ("running", "completed", "interrupted", "failed")
#: pending: planned, not run yet (or interrupted mid-run); the other three are final.
TRIAL_STATUSES = ("pending", "running", "completed", "failed", "infeasible")
FINAL = ("completed", "failed", "infeasible")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    method       TEXT NOT NULL,
    metric_name  TEXT NOT NULL,
    metric_goal  TEXT NOT NULL,
    spec_hash    TEXT NOT NULL,
    hardware_id  TEXT NOT NULL,
    spec_json    TEXT NOT NULL,
    spec_path    TEXT,
    executor     TEXT,
    status       TEXT NOT NULL CHECK (status IN ('running','completed','interrupted','failed')),
    reason       TEXT,
    host         TEXT,
    pid          INTEGER,
    proc_start   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_trials (
    sweep_id          TEXT NOT NULL REFERENCES sweeps(sweep_id) ON DELETE CASCADE,
    trial_key         TEXT NOT NULL,
    trial_index       INTEGER NOT NULL,
    params_json       TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending','running','completed','failed','infeasible')),
    run_id            TEXT,
    metric            REAL,
    peak_memory_bytes INTEGER,
    reason            TEXT,
    wall_s            REAL,
    measure_s         REAL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    result_json       TEXT,
    started_at        TEXT,
    ended_at          TEXT,
    PRIMARY KEY (sweep_id, trial_key)
);
CREATE INDEX IF NOT EXISTS sweep_trials_run ON sweep_trials(run_id);
"""


def _planned(spec_json: str) -> int | None:
    """The trial count a finished sweep holds, from its stored spec (None if it cannot be read)."""
    from perfbench.sweep.spec import sweep_from_json

    try:
        return sweep_from_json(json.loads(spec_json)).planned_trials()
    except Exception:  # noqa: BLE001 - a sweep stored by another version still lists
        return None


class SweepDB:
    """Sweep tables over an open ResultsStore (created on first write, never on a read)."""

    def __init__(self, store: ResultsStore):
        self.store = store

    # -- plumbing ----------------------------------------------------------------------------

    def _query(self, sql: str, args: tuple = (), what: str = "read sweeps") -> list[Any]:
        return self.store.query(sql, args, what=what)

    def exists(self) -> bool:
        rows = self._query("SELECT name FROM sqlite_master WHERE type='table' AND name='sweeps'")
        return bool(rows)

    def ensure_schema(self) -> None:
        if self.exists():
            return
        with self.store.transaction("create the sweep tables") as c:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('sweep_schema_version', ?)",
                      (str(SWEEP_SCHEMA_VERSION),))

    # -- sweeps ------------------------------------------------------------------------------

    def begin_sweep(self, *, sweep_id: str, sweep_json: dict, name: str, method: str, metric: str,
                    goal: str, spec_hash: str, hardware_id: str, spec_path: str | None,
                    executor: str) -> bool:
        """Create the sweep, or mark an existing one running again. True when it is a resume.
        Trials left `running` by a killed sweep go back to `pending` (their runs stay stored)."""
        self.ensure_schema()
        now = utcnow()
        with self.store.transaction("start a sweep") as c:
            row = c.execute("SELECT sweep_id FROM sweeps WHERE sweep_id=?", (sweep_id,)).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO sweeps(sweep_id, name, method, metric_name, metric_goal, spec_hash,"
                    " hardware_id, spec_json, spec_path, executor, status, host, pid, proc_start,"
                    " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (sweep_id, name, method, metric, goal, spec_hash, hardware_id,
                     json.dumps(sweep_json), spec_path, executor, "running",  # key order = axis order
                     socket.gethostname(), os.getpid(), process_identity(), now, now))
                return False
            owner = c.execute("SELECT status, host, pid, proc_start FROM sweeps WHERE sweep_id=?",
                              (sweep_id,)).fetchone()
            if (owner["status"] == "running" and owner["host"] == socket.gethostname() and owner["pid"]
                    and owner["pid"] != os.getpid() and pid_alive(owner["pid"])
                    and not process_gone(owner["host"], owner["pid"], owner["proc_start"])):
                # Two processes on one sweep would both measure every trial left.
                raise InputError(f"sweep {sweep_id} ({name}) is already running in process {owner['pid']} "
                                 f"on this host; wait for it, or stop it (kill {owner['pid']}) and run "
                                 "again to resume")
            c.execute("UPDATE sweeps SET status='running', reason=NULL, host=?, pid=?, proc_start=?,"
                      " updated_at=?, spec_path=COALESCE(?, spec_path), executor=? WHERE sweep_id=?",
                      (socket.gethostname(), os.getpid(), process_identity(), now, spec_path, executor,
                       sweep_id))
            c.execute("UPDATE sweep_trials SET status='pending', reason='interrupted before it finished'"
                      " WHERE sweep_id=? AND status='running'", (sweep_id,))
            return True

    def finish_sweep(self, sweep_id: str, status: str, reason: str | None = None) -> None:
        if status not in SWEEP_STATUSES[1:]:
            raise ValueError(f"bad final sweep status {status!r}")
        with self.store.transaction("close the sweep") as c:
            c.execute("UPDATE sweeps SET status=?, reason=?, updated_at=? WHERE sweep_id=?",
                      (status, reason, utcnow(), sweep_id))

    def _sweep_dict(self, r: Any) -> dict[str, Any]:
        status, reason = r["status"], r["reason"]
        identity = r["proc_start"] if "proc_start" in r.keys() else None
        if status == "running" and process_gone(r["host"], r["pid"], identity):
            status, reason = "interrupted", "sweep process ended without closing the sweep (killed?)"
        return {
            "sweep_id": r["sweep_id"], "name": r["name"], "method": r["method"],
            "metric": {"name": r["metric_name"], "goal": r["metric_goal"]},
            "status": status, "reason": reason, "spec_hash": r["spec_hash"],
            "hardware_id": r["hardware_id"], "spec_path": r["spec_path"], "executor": r["executor"],
            "created_at": r["created_at"], "updated_at": r["updated_at"],
        }

    def list_sweeps(self) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        rows = self._query(
            "SELECT s.*, (SELECT COUNT(*) FROM sweep_trials t WHERE t.sweep_id=s.sweep_id) AS n,"
            " (SELECT COUNT(*) FROM sweep_trials t WHERE t.sweep_id=s.sweep_id AND t.status='completed') AS n_ok,"
            " (SELECT COUNT(*) FROM sweep_trials t WHERE t.sweep_id=s.sweep_id"
            "   AND t.status IN ('failed','infeasible')) AS n_failed,"
            " (SELECT CASE WHEN s.metric_goal='maximize' THEN MAX(t.metric) ELSE MIN(t.metric) END"
            "   FROM sweep_trials t WHERE t.sweep_id=s.sweep_id AND t.status='completed') AS best"
            " FROM sweeps s ORDER BY s.created_at DESC, s.sweep_id")
        out = []
        for r in rows:
            d = self._sweep_dict(r)
            d.update(trials=r["n"], completed=r["n_ok"], failed=r["n_failed"],
                     pending=r["n"] - r["n_ok"] - r["n_failed"], best_metric=r["best"],
                     planned=_planned(r["spec_json"]))
            out.append(d)
        return out

    def resolve_sweep_id(self, sweep_id: str) -> str:
        """A sweep's exact name (when one sweep has it), or a unique prefix of its id, as for runs."""
        if not self.exists():
            raise InputError(f"no sweeps in {self.store.path} (run `perfbench sweep run SPEC` first)")
        named = self._query("SELECT sweep_id FROM sweeps WHERE name=? ORDER BY sweep_id", (sweep_id,))
        if len(named) == 1:  # an exact name wins over longer names that share its prefix
            return named[0][0]
        rows = self._query("SELECT sweep_id FROM sweeps WHERE sweep_id LIKE ? ESCAPE '\\' ORDER BY sweep_id",
                           (like_prefix(sweep_id),))
        return pick_by_prefix(sweep_id, [r[0] for r in rows], "sweep", str(self.store.path),
                              "see `perfbench sweep list`")

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """The sweep with its stored spec and every trial."""
        sweep_id = self.resolve_sweep_id(sweep_id)
        r = self._query("SELECT * FROM sweeps WHERE sweep_id=?", (sweep_id,))[0]
        d = self._sweep_dict(r)
        d["spec"] = json.loads(r["spec_json"])
        d["trials"] = self.trials(sweep_id)
        return d

    # -- trials ------------------------------------------------------------------------------

    def trials(self, sweep_id: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT t.*, r.hardware_id AS run_hardware_id FROM sweep_trials t"
            " LEFT JOIN runs r ON r.run_id=t.run_id WHERE t.sweep_id=? ORDER BY t.trial_index",
            (sweep_id,))
        return [self._trial_dict(r) for r in rows]

    @staticmethod
    def _trial_dict(r: Any) -> dict[str, Any]:
        return {
            "trial_index": r["trial_index"], "trial_key": r["trial_key"],
            "params": json.loads(r["params_json"]), "status": r["status"], "run_id": r["run_id"],
            "metric": r["metric"], "peak_memory_bytes": r["peak_memory_bytes"], "reason": r["reason"],
            "wall_s": r["wall_s"], "measure_s": r["measure_s"], "attempts": r["attempts"],
            "result": json.loads(r["result_json"]) if r["result_json"] else None,
            "hardware_id": r["run_hardware_id"], "started_at": r["started_at"], "ended_at": r["ended_at"],
        }

    def start_trial(self, sweep_id: str, key: str, index: int, params: dict[str, Any]) -> None:
        with self.store.transaction("start a trial") as c:
            c.execute(
                "INSERT INTO sweep_trials(sweep_id, trial_key, trial_index, params_json, status, attempts,"
                " started_at) VALUES (?,?,?,?,'running',1,?) ON CONFLICT(sweep_id, trial_key) DO UPDATE"
                " SET status='running', attempts=attempts+1, started_at=excluded.started_at,"
                " reason=NULL, ended_at=NULL",
                (sweep_id, key, index, json.dumps(params), utcnow()))

    def finish_trial(self, sweep_id: str, key: str, *, status: str, run_id: str | None,
                     metric: float | None, peak_memory_bytes: int | None, reason: str | None,
                     wall_s: float | None, measure_s: float | None, result: dict | None) -> None:
        if status not in TRIAL_STATUSES:
            raise ValueError(f"bad trial status {status!r}")
        with self.store.transaction("record a trial") as c:
            c.execute(
                "UPDATE sweep_trials SET status=?, run_id=?, metric=?, peak_memory_bytes=?, reason=?,"
                " wall_s=?, measure_s=?, result_json=?, ended_at=? WHERE sweep_id=? AND trial_key=?",
                (status, run_id, metric, peak_memory_bytes, reason, wall_s, measure_s,
                 json.dumps(result, default=str) if result is not None else None, utcnow(),
                 sweep_id, key))

    def running_trial_run_id(self, sweep_id: str, pid: int) -> str | None:
        """The run a (dead) trial process with this pid had created, to close it as failed."""
        rows = self._query("SELECT run_id FROM runs WHERE sweep_id=? AND pid=? AND status='running'"
                           " ORDER BY created_at DESC LIMIT 1", (sweep_id, pid))
        return rows[0][0] if rows else None

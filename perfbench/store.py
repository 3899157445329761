"""The results store: an embedded SQLite database (default `results/perfbench.sqlite`).

One row per run (spec, provenance, status) and one flat row per measurement point with its raw
samples, in the spirit of llama-bench's result rows. Rules that the rest of perfbench relies on:

* every write is one `BEGIN IMMEDIATE` transaction, so a point appears whole or not at all;
* WAL journaling plus a busy timeout lets several processes write to one store at once;
* a run that dies keeps its completed points; readers report a `running` run whose process is gone
  as `interrupted`;
* a locked or corrupt database raises `StoreError` with a message that says what to do.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import urllib.parse
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from perfbench.errors import InputError, StoreError
from perfbench.migrations import NOISE_FLOORS_DDL, REQUESTS_DDL, REQUESTS_INDEX, STORE_SCHEMA_VERSION, upgrade
from perfbench.schema import FIELDS, POINT_FIELDS, RESULT_SCHEMA_VERSION, from_row, to_columns

DEFAULT_STORE = Path("results") / "perfbench.sqlite"
RUN_STATUSES = ("running", "completed", "interrupted", "failed")

_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id            TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('running','completed','interrupted','failed')),
    reason            TEXT,
    spec_json         TEXT NOT NULL,
    spec_hash         TEXT NOT NULL,
    spec_path         TEXT,
    hardware_id       TEXT NOT NULL,
    fingerprint_json  TEXT NOT NULL,
    versions_json     TEXT NOT NULL,
    commit_sha        TEXT,
    device            TEXT,
    backend_info_json TEXT,
    engine_json       TEXT,
    sweep_id          TEXT,
    host              TEXT,
    pid               INTEGER,
    proc_start        TEXT,
    created_at        TEXT NOT NULL,
    ended_at          TEXT,
    subject_json      TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs(sweep_id);
{points}
CREATE INDEX IF NOT EXISTS points_run ON points(run_id);
CREATE TABLE IF NOT EXISTS calibrations (
    calibration_id    TEXT PRIMARY KEY,
    hardware_id       TEXT NOT NULL,
    device            TEXT NOT NULL,
    fingerprint_json  TEXT NOT NULL,
    versions_json     TEXT NOT NULL,
    commit_sha        TEXT,
    results_json      TEXT NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calibrations_hw ON calibrations(hardware_id, device, created_at);
"""
_TABLES = {"meta", "runs", "points", "calibrations"}


def _points_table() -> str:
    """The points table, one column per field of the result schema (perfbench.schema)."""
    # load_point: part of a point's identity, '' for points that are not serving load points
    cols = ",\n".join(f"    {f.column} {f.sql_type}" + (" NOT NULL DEFAULT ''" if f.name == "load_point" else "")
                      for f in POINT_FIELDS)
    return ("CREATE TABLE IF NOT EXISTS points (\n"
            "    point_id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
            "    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,\n"
            "    schema_version INTEGER NOT NULL,\n"
            f"{cols},\n"
            "    extra_json TEXT,\n"  # keys a store of an older release kept there, none of ours
            "    created_at TEXT NOT NULL,\n"
            "    CHECK (status IN ('ok','failed')),\n"
            "    UNIQUE (run_id, batch_size, seq_len, new_tokens, load_point)\n);")


_SCHEMA = (_SCHEMA_TEMPLATE.format(points=_points_table()) + NOISE_FLOORS_DDL + ";\n" + REQUESTS_DDL + ";\n"
           + REQUESTS_INDEX + ";\n")


def db_timeout() -> float:
    """PERFBENCH_DB_TIMEOUT, checked: how long a write waits for a store another process holds."""
    raw = os.environ.get("PERFBENCH_DB_TIMEOUT")
    if raw is None or not raw.strip():
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 86400:  # also refuses nan and inf
        raise InputError(f"PERFBENCH_DB_TIMEOUT must be a number of seconds from 0 to 86400, got {raw!r}")
    return value


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """Sortable by start time, unique across processes: 20261122-161530-3fa9c1."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _model_label(model: Any) -> str:
    """`llama-3.2-1b`, `llama-3.2-1b+custom` (a preset with fields changed) or `custom-llama`."""
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        if model.get("preset"):
            return f"{model['preset']}+custom" if len(model) > 1 else str(model["preset"])
        return f"custom-{model.get('family', 'model')}"
    return "custom"


def _json_field(raw: Any, column: str, kind: type) -> tuple[Any, str | None]:
    """Parse a JSON column; (empty value, what is wrong) when the row is damaged."""
    if raw is None:
        return kind(), None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return kind(), f"{column} is not valid JSON"
    if not isinstance(value, kind):
        return kind(), f"{column} holds a {type(value).__name__}, not a {kind.__name__}"
    return value, None


def like_prefix(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching strings that start with `text` literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def pick_by_prefix(given: str, ids: list[str], kind: str, where: str, hint: str) -> str:
    """Accept a unique prefix of an id, like git does for commits; say what to do otherwise."""
    if given in ids:
        return given
    if not ids:
        raise InputError(f"no {kind} {given!r} in {where} ({hint})")
    if len(ids) > 1:
        raise InputError(f"{kind} id prefix {given!r} is ambiguous: {', '.join(ids[:5])}")
    return ids[0]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_identity(pid: int | None = None) -> str | None:
    """`boot_id:start_ticks` of a process (Linux): tells the process that wrote a run apart from a
    later one that reused its pid, and from one of an earlier boot. None where /proc has no say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
        start = stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name
    except (OSError, IndexError):
        return None
    return f"{boot}:{start}"


def process_gone(host: str | None, pid: int | None, identity: str | None) -> bool:
    """Whether the process recorded as (host, pid, identity) has certainly ended. Another host's
    process cannot be checked from here: it is never declared gone."""
    if host != socket.gethostname() or not pid:
        return False
    if not pid_alive(pid):
        return True
    now = process_identity(pid)
    return identity is not None and now is not None and now != identity


class ResultsStore:
    """Open (creating if needed) a perfbench results database."""

    def __init__(self, path: str | Path = DEFAULT_STORE, *, timeout_s: float | None = None,
                 create: bool = True):
        """`create=False` opens read-only: the store must exist and is never changed (no journal
        switch, no upgrade, no write), so readers work on a store in a read-only folder and on a
        store of an older release alike."""
        self.path = Path(path)
        self.readonly = not create
        self.timeout_s = db_timeout() if timeout_s is None else timeout_s
        if not self.path.exists() and not create:
            raise StoreError(f"no results store at {self.path} (run `perfbench run SPEC` first, "
                             "or pass --store PATH)")
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a results store file")
        try:
            self._conn = self._connect()
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._translate_errors("open"):
                self._retry_busy(self._open_schema)
        except sqlite3.Error as exc:  # connect itself failed
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StoreError(f"results store {self.path} is corrupt or not a SQLite database ({exc}); "
                                 "move it aside or pass another --store") from None
            raise StoreError(f"cannot open results store {self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        kw = dict(timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
        if not self.readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of results store {self.path}: "
                                 f"{exc.strerror or exc} ({exc.filename or self.path.parent})") from None
            return sqlite3.connect(self.path, **kw)
        uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, **kw)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # A WAL store in a folder we may not write to: SQLite cannot create its shared-memory
            # file there. Nobody can be writing to it then, so read it as an immutable file.
            conn.close()
            conn = sqlite3.connect(uri + "&immutable=1", uri=True, **kw)
        return conn

    # -- plumbing ----------------------------------------------------------------------------

    def _open_schema(self) -> None:
        # Ours (or empty) before anything changes: switching journal mode rewrites the header of
        # somebody else's database. WAL is persistent: switch only if needed. The switch needs an
        # exclusive lock; under contention it may answer the old mode, which is still correct.
        self._check_ours()
        if self.readonly:
            if not _TABLES <= self._tables():
                raise StoreError(f"{self.path} holds no perfbench results (an empty or unfinished store)")
            self._point_columns = self._columns("points")
            self._run_columns = self._columns("runs")
            return
        if self._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._init_schema()

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}

    def _tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _check_ours(self) -> None:
        tables = self._tables()
        if tables and "runs" not in tables:
            raise StoreError(f"{self.path} is a SQLite database but not a perfbench results store "
                             f"(tables: {', '.join(sorted(tables))}); it was left untouched")
        if _TABLES <= tables:
            version = self._version()
            if version > STORE_SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer perfbench (store schema "
                                 f"{version} > {STORE_SCHEMA_VERSION}); upgrade perfbench. The store "
                                 "was left untouched")

    def _version(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        try:
            return int(row[0]) if row else 1
        except ValueError:
            raise StoreError(f"{self.path}: unreadable schema_version {row[0]!r} in table meta") from None

    def _retry_busy(self, fn) -> None:
        """Run `fn`, retrying while the database is busy, up to the timeout.

        Opening a store that other processes are creating or recovering can answer SQLITE_BUSY at
        once, without SQLite's busy handler waiting (journal-mode switch, WAL recovery).
        """
        import random
        import time

        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                msg = str(exc)
                if ("locked" not in msg and "busy" not in msg) or time.monotonic() > deadline:
                    raise
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                time.sleep(random.uniform(0.01, 0.05))

    @contextmanager
    def _translate_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            msg = str(exc)
            if "locked" in msg or "busy" in msg:
                raise StoreError(
                    f"results store {self.path} is locked by another process (waited "
                    f"{self.timeout_s:g} s while trying to {what}); retry, or raise "
                    "PERFBENCH_DB_TIMEOUT") from None
            if "malformed" in msg or "not a database" in msg:
                raise StoreError(f"results store {self.path} is corrupt ({msg}); move it aside and "
                                 "start a new one with --store") from None
            raise StoreError(f"results store {self.path}: {msg} (while trying to {what})") from None
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"results store {self.path}: {exc} (while trying to {what})") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"results store {self.path} is corrupt or not a SQLite database "
                             f"({exc}); move it aside or pass another --store") from None

    @contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One atomic write: BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlock)."""
        with self._translate_errors(what):
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # Whatever stopped us (an error, Ctrl-C between BEGIN and the first write, a failed
                # COMMIT), leave no transaction open for the next write.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _init_schema(self) -> None:
        """Create a new store, or upgrade an older one (numbered steps, one transaction)."""
        tables = self._tables()
        if _TABLES <= tables and self._version() == STORE_SCHEMA_VERSION:
            self._point_columns, self._run_columns = self._columns("points"), self._columns("runs")
            return
        # Raw transaction (not `transaction()`): a busy error must reach `_retry_busy` untranslated.
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if _TABLES <= self._tables():  # another process may have upgraded it meanwhile
                upgrade(c, self._version())
            else:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                          (str(STORE_SCHEMA_VERSION),))
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
        self._point_columns, self._run_columns = self._columns("points"), self._columns("runs")

    def query(self, sql: str, args: tuple | list = (), *, what: str = "read") -> list[sqlite3.Row]:
        """A read-only query for modules that keep their own tables in the store (sweeps)."""
        with self._translate_errors(what):
            return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------------

    def create_run(self, *, name: str, spec: dict, spec_hash: str, fingerprint: dict,
                   versions: dict, commit: str | None, device: str, spec_path: str | None = None,
                   sweep_id: str | None = None, run_id: str | None = None,
                   subject: dict | None = None) -> str:
        run_id = run_id or new_run_id()
        with self.transaction("create a run") as c:
            c.execute(
                "INSERT INTO runs(run_id, name, status, spec_json, spec_hash, spec_path, hardware_id,"
                " fingerprint_json, versions_json, commit_sha, device, sweep_id, host, pid, proc_start,"
                " created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, name, "running", json.dumps(spec, sort_keys=True), spec_hash, spec_path,
                 fingerprint.get("hardware_id", "unknown"), json.dumps(fingerprint, sort_keys=True),
                 json.dumps(versions, sort_keys=True), commit, device, sweep_id,
                 socket.gethostname(), os.getpid(), process_identity(), utcnow()),
            )
            if subject:  # who was measured: commit, branch, CI run id (perfbench gate)
                c.execute("UPDATE runs SET subject_json=? WHERE run_id=?",
                          (json.dumps(subject, sort_keys=True), run_id))
        return run_id

    def set_backend_info(self, run_id: str, info: dict, engine: dict | None = None,
                         versions: dict | None = None) -> None:
        """What the backend loaded, the engine under test (name, version, build) and, read again
        once the engine is loaded, the software versions."""
        with self.transaction("record backend info") as c:
            c.execute("UPDATE runs SET backend_info_json=?, engine_json=? WHERE run_id=?",
                      (json.dumps(info, default=str), json.dumps(engine, default=str) if engine else None,
                       run_id))
            if versions:
                c.execute("UPDATE runs SET versions_json=? WHERE run_id=?",
                          (json.dumps(versions, sort_keys=True), run_id))

    def add_point(self, run_id: str, point: dict[str, Any], requests: list[dict[str, Any]] | None = None) -> None:
        """Commit one finished point atomically. Every key must be a field of perfbench.schema
        (SchemaError otherwise: a field nobody declared would vanish from every output).
        `requests`: a serving load point's per-request rows, committed with it (columns of the
        `requests` table), so a point and its requests appear together or not at all."""
        cols = to_columns({"status": "ok", **point})
        if cols.get("samples_json") is None:
            cols["samples_json"] = "[]"
        if cols.get("load_point", "") is None:
            cols["load_point"] = ""
        with self.transaction("store a measurement point") as c:
            cur = c.execute(
                f"INSERT INTO points(run_id, schema_version, {', '.join(cols)}, created_at)"
                f" VALUES (?, ?, {', '.join('?' * len(cols))}, ?)",
                (run_id, RESULT_SCHEMA_VERSION, *cols.values(), utcnow()),
            )
            if requests:
                _insert_requests(c, run_id, cur.lastrowid, requests)

    def get_requests(self, run_id: str, *, point_id: int | None = None) -> list[dict[str, Any]]:
        """A run's per-request rows (serving), in load-point then send order; [] for a store of an
        older release or a run that is not a serving run."""
        run_id = self.resolve_run_id(run_id)
        if "requests" not in self._tables():
            return []
        q, args = ("SELECT r.*, p.load_point FROM requests r JOIN points p USING (point_id) WHERE r.run_id=?",
                   [run_id])
        if point_id is not None:
            q += " AND r.point_id=?"
            args.append(point_id)
        with self._translate_errors("read requests"):
            rows = self._conn.execute(q + " ORDER BY r.point_id, r.idx", args).fetchall()
        out = []
        for r in rows:
            d = {k: r[k] for k in r.keys() if not k.endswith("_json")}
            d["token_times_s"] = _json_field(r["token_times_json"], "token_times_json", list)[0]
            d["server_timings"] = _json_field(r["server_timings_json"], "server_timings_json", dict)[0] or None
            out.append(d)
        return out

    def finish_run(self, run_id: str, status: str, reason: str | None = None) -> None:
        if status not in RUN_STATUSES[1:]:
            raise ValueError(f"bad final status {status!r}")
        with self.transaction("close the run") as c:
            c.execute("UPDATE runs SET status=?, reason=?, ended_at=? WHERE run_id=?",
                      (status, reason, utcnow(), run_id))

    # -- reads --------------------------------------------------------------------------------

    def _col(self, r: sqlite3.Row, name: str) -> Any:
        """A runs column that an older store may not have (read-only opens do not upgrade)."""
        return r[name] if name in self._run_columns else None

    def _run_dict(self, r: sqlite3.Row) -> dict[str, Any]:
        status, reason = r["status"], r["reason"]
        if status == "running" and process_gone(r["host"], r["pid"], self._col(r, "proc_start")):
            status, reason = "interrupted", "process ended without closing the run (killed?)"
        return {
            "run_id": r["run_id"], "name": r["name"], "status": status, "reason": reason,
            "created_at": r["created_at"], "started_at": r["created_at"], "ended_at": r["ended_at"],
            "spec_hash": r["spec_hash"], "spec_path": r["spec_path"], "hardware_id": r["hardware_id"],
            "device": r["device"], "commit": r["commit_sha"], "sweep_id": r["sweep_id"],
            "subject": _json_field(self._col(r, "subject_json"), "subject_json", dict)[0] or None,
        }

    def list_runs(self, *, limit: int | None = None, sweep_id: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first. A run whose stored spec is damaged is listed with `damaged` saying
        what, so one bad row never hides the rest of the store."""
        q = ("SELECT r.*, (SELECT COUNT(*) FROM points p WHERE p.run_id=r.run_id AND p.status='ok') AS n_ok,"
             " (SELECT COUNT(*) FROM points p WHERE p.run_id=r.run_id AND p.status='failed') AS n_failed"
             " FROM runs r")
        args: list[Any] = []
        if sweep_id:
            q += " WHERE r.sweep_id=?"
            args.append(sweep_id)
        q += " ORDER BY r.created_at DESC, r.run_id DESC"
        if limit:
            q += f" LIMIT {int(limit)}"
        with self._translate_errors("list runs"):
            rows = self._conn.execute(q, args).fetchall()
        out = []
        for r in rows:
            d = self._run_dict(r)
            spec, damage = _json_field(r["spec_json"], "spec_json", dict)
            backend = spec.get("backend") if isinstance(spec.get("backend"), dict) else {}
            d.update(points_ok=r["n_ok"], points_failed=r["n_failed"], phase=spec.get("phase"),
                     model=_model_label(spec.get("model")), dtype=spec.get("dtype"),
                     backend=backend.get("name"), damaged=damage)
            out.append(d)
        return out

    def resolve_run_id(self, run_id: str) -> str:
        """Accept a unique prefix of a run id, like git does for commits."""
        with self._translate_errors("look up a run"):
            rows = self._conn.execute("SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY run_id",
                                      (like_prefix(run_id),)).fetchall()
        return pick_by_prefix(run_id, [r[0] for r in rows], "run", str(self.path),
                              "see `perfbench results list`")

    def get_run(self, run_id: str) -> dict[str, Any]:
        """A run with its spec, provenance and points (samples included)."""
        run_id = self.resolve_run_id(run_id)
        with self._translate_errors("read a run"):
            r = self._conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            pts = self._conn.execute("SELECT * FROM points WHERE run_id=? ORDER BY point_id",
                                     (run_id,)).fetchall()
        d = self._run_dict(r)
        fields = {}
        for key, col, kind in (("spec", "spec_json", dict), ("fingerprint", "fingerprint_json", dict),
                               ("versions", "versions_json", dict)):
            fields[key], damage = _json_field(r[col], col, kind)
            if damage:
                raise StoreError(f"run {run_id} in {self.path} is damaged: {damage}; other runs are "
                                 "unaffected (`perfbench results list`)")
        d.update(
            **fields,
            backend_info=_json_field(r["backend_info_json"], "backend_info_json", dict)[0] or None,
            engine=_json_field(self._col(r, "engine_json"), "engine_json", dict)[0] or None,
            points=[self._point_dict(p) for p in pts],
        )
        return d

    def _point_dict(self, p: sqlite3.Row) -> dict[str, Any]:
        d = from_row(p, self._point_columns)
        extra, _ = _json_field(p["extra_json"], "extra_json", dict)
        for key in [k for k in extra if k in FIELDS and d.get(k) is None]:
            d[key] = extra.pop(key)  # an older store read as it is (read-only opens do not upgrade)
        d["extra"] = extra
        d["schema_version"] = p["schema_version"]
        d["created_at"] = p["created_at"]
        return d

    # -- calibrations (measured ceilings, keyed by hardware fingerprint) ------------------------

    def add_calibration(self, *, fingerprint: dict, versions: dict, commit: str | None, device: str,
                        results: dict) -> str:
        cid = "cal-" + new_run_id()
        with self.transaction("store a calibration") as c:
            c.execute("INSERT INTO calibrations(calibration_id, hardware_id, device, fingerprint_json,"
                      " versions_json, commit_sha, results_json, created_at) VALUES (?,?,?,?,?,?,?,?)",
                      (cid, fingerprint.get("hardware_id", "unknown"), device,
                       json.dumps(fingerprint, sort_keys=True), json.dumps(versions, sort_keys=True),
                       commit, json.dumps(results), utcnow()))
        return cid

    def calibrations(self, *, hardware_id: str | None = None, device: str | None = None) -> list[dict]:
        """Calibrations, newest first, optionally for one hardware id and device."""
        q, args = "SELECT * FROM calibrations WHERE 1=1", []
        if hardware_id:
            q += " AND hardware_id=?"
            args.append(hardware_id)
        if device:
            q += " AND device=?"
            args.append(device)
        with self._translate_errors("read calibrations"):
            rows = self._conn.execute(q + " ORDER BY created_at DESC", args).fetchall()
        return [{"calibration_id": r["calibration_id"], "hardware_id": r["hardware_id"],
                 "device": r["device"], "fingerprint": json.loads(r["fingerprint_json"]),
                 "versions": json.loads(r["versions_json"]), "commit": r["commit_sha"],
                 "results": json.loads(r["results_json"]), "created_at": r["created_at"]} for r in rows]

    # -- the CI gate (perfbench.gate): subjects, history, noise floors, export and import -------

    def set_subject(self, run_id: str, subject: dict) -> None:
        """Tag a run with the subject it measured (commit, branch, CI run id, role)."""
        with self.transaction("tag a run with its subject") as c:
            c.execute("UPDATE runs SET subject_json=? WHERE run_id=?", (json.dumps(subject, sort_keys=True), run_id))

    def find_runs(self, *, spec_hash: str | None = None, hardware_id: str | None = None,
                  name: str | None = None, status: str | None = "completed") -> list[dict[str, Any]]:
        """Runs (no points), oldest first, with their subject: the history the gate and
        `perfbench history` select from."""
        q, args = "SELECT * FROM runs WHERE 1=1", []
        for col, val in (("spec_hash", spec_hash), ("hardware_id", hardware_id), ("name", name),
                         ("status", status)):
            if val is not None:
                q += f" AND {col}=?"
                args.append(val)
        with self._translate_errors("find runs"):
            rows = self._conn.execute(q + " ORDER BY created_at, run_id", args).fetchall()
        return [self._run_dict(r) for r in rows]

    def put_noise_floors(self, rows: list[dict[str, Any]]) -> None:
        """Store (replace) noise floors measured by `perfbench gate calibrate`, all at once."""
        cols = ("hardware_id", "spec_hash", "point_key", "metric", "mode", "floor", "pairs", "detail_json",
                "created_at")
        with self.transaction("store noise floors") as c:
            for r in rows:
                vals = {**r, "detail_json": json.dumps(r.get("detail"), default=str), "created_at": utcnow()}
                c.execute(f"INSERT OR REPLACE INTO noise_floors({', '.join(cols)}) VALUES "
                          f"({', '.join('?' * len(cols))})", tuple(vals[k] for k in cols))

    def noise_floors(self, *, hardware_id: str, spec_hash: str | None = None) -> list[dict[str, Any]]:
        """Noise floors of one hardware (optionally one spec); none in a store of an older release."""
        if "noise_floors" not in self._tables():
            return []
        q, args = "SELECT * FROM noise_floors WHERE hardware_id=?", [hardware_id]
        if spec_hash:
            q += " AND spec_hash=?"
            args.append(spec_hash)
        with self._translate_errors("read noise floors"):
            rows = self._conn.execute(q, args).fetchall()
        return [{**{k: r[k] for k in r.keys() if k != "detail_json"},
                 "detail": _json_field(r["detail_json"], "detail_json", dict)[0]} for r in rows]

    def export_run(self, run_id: str) -> dict[str, Any]:
        """A run exactly as stored: every column of its row and of its points' rows (JSON columns
        parsed), for `perfbench results export`. Nothing is recomputed or dropped."""
        run_id = self.resolve_run_id(run_id)
        with self._translate_errors("export a run"):
            r = self._conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            pts = self._conn.execute("SELECT * FROM points WHERE run_id=? ORDER BY point_id", (run_id,)).fetchall()
        skip = {"point_id", "run_id"}
        out = {"run": {k: _export_value(k, r[k]) for k in r.keys()},
               "points": [{k: _export_value(k, p[k]) for k in p.keys() if k not in skip} for p in pts]}
        if "requests" in self._tables():  # serving load points: their per-request rows, by point index
            index = {p["point_id"]: i for i, p in enumerate(pts)}
            with self._translate_errors("export a run"):
                reqs = self._conn.execute("SELECT * FROM requests WHERE run_id=? ORDER BY request_id",
                                          (run_id,)).fetchall()
            if reqs:
                out["requests"] = [{"point": index[q["point_id"]], **{k: _export_value(k, q[k]) for k in q.keys()
                                   if k not in ("request_id", "point_id", "run_id")}} for q in reqs]
        return out

    def import_runs(self, runs: list[dict[str, Any]], *, source: str) -> tuple[list[str], list[str]]:
        """Add exported runs in one transaction: (added, already present). A run id already here
        with other content refuses the whole import (InputError, nothing written)."""
        run_cols, point_cols = self._columns("runs"), self._columns("points") - {"point_id", "run_id"}
        added, present = [], []
        with self.transaction("import runs") as c:
            for i, item in enumerate(runs):
                run, points = item["run"], item["points"]
                _check_columns(source, f"runs[{i}].run", run, run_cols)
                for j, p in enumerate(points):
                    _check_columns(source, f"runs[{i}].points[{j}]", p, point_cols)
                if item.get("requests"):
                    req_cols = self._columns("requests") - {"request_id", "point_id", "run_id"} | {"point"}
                    for j, q in enumerate(item["requests"]):
                        _check_columns(source, f"runs[{i}].requests[{j}]", q, req_cols)
                rid = run["run_id"]
                if c.execute("SELECT 1 FROM runs WHERE run_id=?", (rid,)).fetchone():
                    if self.export_run(rid) != item:
                        raise InputError(f"{source}: runs[{i}]: run {rid} is already in {self.path} with "
                                         "different content; import refused, nothing written")
                    present.append(rid)
                    continue
                _insert_row(c, "runs", {k: _import_value(k, v) for k, v in run.items()})
                ids = [_insert_row(c, "points", {"run_id": rid, **{k: _import_value(k, v) for k, v in p.items()}})
                       for p in points]
                for q in item.get("requests", []):
                    _insert_row(c, "requests", {"run_id": rid, "point_id": ids[q["point"]],
                                                **{k: _import_value(k, v) for k, v in q.items() if k != "point"}})
                added.append(rid)
        return added, present


_REQUEST_COLUMNS = ("idx", "role", "prompt_id", "scheduled_s", "ready_s", "sent_s", "first_token_s", "done_s",
                    "token_times_json", "input_tokens", "output_tokens", "input_tokens_source",
                    "output_tokens_source", "status", "error", "http_status", "server_timings_json")


def _insert_requests(c: sqlite3.Connection, run_id: str, point_id: int, requests: list[dict[str, Any]]) -> None:
    cols = ("point_id", "run_id", *_REQUEST_COLUMNS)
    rows = []
    for r in requests:
        vals = {**r, "token_times_json": json.dumps(r.get("token_times_s") or []),
                "server_timings_json": json.dumps(r["server_timings"]) if r.get("server_timings") else None}
        rows.append((point_id, run_id, *(vals.get(k) for k in _REQUEST_COLUMNS)))
    c.executemany(f"INSERT INTO requests({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)


#: JSON columns the store writes with sorted keys; re-serialised the same way on import.
_SORTED_JSON = {"spec_json", "fingerprint_json", "versions_json", "subject_json"}


def _export_value(column: str, value: Any) -> Any:
    """A column's value for an export file: JSON text parsed (kept as text if it is damaged)."""
    if not column.endswith("_json") or value is None:
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return {"__unparsed_json__": value}


def _import_value(column: str, value: Any) -> Any:
    """The inverse of `_export_value`: the JSON text the store itself would have written."""
    if not column.endswith("_json") or value is None:
        return value
    if isinstance(value, dict) and set(value) == {"__unparsed_json__"}:
        return value["__unparsed_json__"]
    return json.dumps(value, sort_keys=column in _SORTED_JSON, default=str)


def _check_columns(source: str, where: str, row: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise InputError(f"{source}: {where}: unknown field(s) {', '.join(unknown)} (this store has no such "
                         "column: a file from a newer perfbench?); import refused, nothing written")


def _insert_row(c: sqlite3.Connection, table: str, row: dict[str, Any]) -> int:
    cols = list(row)
    cur = c.execute(f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [row[k] for k in cols])
    return int(cur.lastrowid)

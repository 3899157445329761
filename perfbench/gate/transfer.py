"""Moving results between machines: `perfbench results export` and `perfbench results import`.

The file holds every column of each run and of its points, as stored (raw samples, provenance,
the subject under test), so an import is lossless. Import is idempotent (a run already present
with the same content is skipped) and all-or-nothing: a malformed or foreign file is refused
whole, with the file, the field and what is allowed, before anything is written (exit 2).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from perfbench.errors import InputError

FORMAT = "perfbench-results"
VERSION = 1
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
#: Run columns an export must carry, with their JSON types.
_RUN_REQUIRED = {"run_id": str, "name": str, "status": str, "spec_json": dict, "spec_hash": str,
                 "hardware_id": str, "fingerprint_json": dict, "versions_json": dict, "created_at": str}
_RUN_OPTIONAL = {"reason": str, "spec_path": str, "commit_sha": str, "device": str, "backend_info_json": dict,
                 "engine_json": dict, "sweep_id": str, "host": str, "pid": int, "proc_start": str,
                 "ended_at": str, "subject_json": dict}


def export_runs(store, run_ids: list[str]) -> dict[str, Any]:
    """The export document for these runs (ids already resolved)."""
    import perfbench
    from perfbench.migrations import STORE_SCHEMA_VERSION
    from perfbench.store import utcnow

    return {"format": FORMAT, "version": VERSION, "perfbench": perfbench.__version__,
            "store_schema_version": STORE_SCHEMA_VERSION, "exported_at": utcnow(),
            "runs": [store.export_run(r) for r in dict.fromkeys(run_ids)]}


def write_export(doc: dict, out: Path) -> None:
    """Write atomically: a half-written artifact is never left behind."""
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        tmp.replace(out)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write: {exc.strerror or exc}") from None


def read_export(path: Path) -> list[dict[str, Any]]:
    """The runs of an export file, validated whole; InputError (exit 2) on the first problem."""
    src = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_no_constant)
    except FileNotFoundError:
        raise InputError(f"{src}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{src}: not a perfbench results export (not UTF-8 JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{src}: format: expected {FORMAT!r} (a file written by `perfbench results export`), "
                         f"got {doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}")
    if doc.get("version") != VERSION:
        raise InputError(f"{src}: version: this perfbench reads version {VERSION}, got {doc.get('version')!r}")
    runs = doc.get("runs")
    if not isinstance(runs, list):
        raise InputError(f"{src}: runs: expected a list of runs")
    seen: set[str] = set()
    for i, item in enumerate(runs):
        _check_run(src, i, item)
        if item["run"]["run_id"] in seen:
            raise InputError(f"{src}: runs[{i}].run.run_id: {item['run']['run_id']} appears twice")
        seen.add(item["run"]["run_id"])
    return runs


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _type_ok(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_run(src: str, i: int, item: Any) -> None:
    from perfbench.store import RUN_STATUSES

    where = f"runs[{i}]"
    if not isinstance(item, dict) or not {"run", "points"} <= set(item) <= {"run", "points", "requests"} \
            or not isinstance(item["run"], dict) or not isinstance(item["points"], list):
        raise InputError(f"{src}: {where}: expected {{run: {{...}}, points: [...], requests: [...] (optional)}}")
    reqs = item.get("requests", [])
    if not isinstance(reqs, list) or not all(
            isinstance(q, dict) and _type_ok(q.get("point"), int) and 0 <= q["point"] < len(item["points"])
            for q in reqs):
        raise InputError(f"{src}: {where}.requests: expected a list of request rows, each with `point`, the index "
                         "of its point in points")
    run = item["run"]
    unknown = sorted(set(run) - set(_RUN_REQUIRED) - set(_RUN_OPTIONAL))
    if unknown:
        raise InputError(f"{src}: {where}.run: unknown field(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join([*_RUN_REQUIRED, *_RUN_OPTIONAL])} (a file from a newer perfbench?)")
    for key, kind in _RUN_REQUIRED.items():
        if not _type_ok(run.get(key), kind):
            raise InputError(f"{src}: {where}.run.{key}: required, a {kind.__name__}; got {run.get(key)!r:.80}")
    for key, kind in _RUN_OPTIONAL.items():
        if run.get(key) is not None and not _type_ok(run[key], kind):
            raise InputError(f"{src}: {where}.run.{key}: expected a {kind.__name__} or null, got {run[key]!r:.80}")
    if not _RUN_ID.match(run["run_id"]):
        raise InputError(f"{src}: {where}.run.run_id: letters, digits and . _ : - only, got {run['run_id']!r:.80}")
    if run["status"] not in RUN_STATUSES:
        raise InputError(f"{src}: {where}.run.status: one of {', '.join(RUN_STATUSES)}, got {run['status']!r}")
    for j, p in enumerate(item["points"]):
        _check_point(src, f"{where}.points[{j}]", p)


def _check_point(src: str, where: str, p: Any) -> None:
    from perfbench.schema import POINT_FIELDS, SchemaError, coerce_value

    if not isinstance(p, dict):
        raise InputError(f"{src}: {where}: expected a mapping of point columns")
    by_col = {f.column: f for f in POINT_FIELDS}
    unknown = sorted(set(p) - set(by_col) - {"schema_version", "created_at", "extra_json"})
    if unknown:
        raise InputError(f"{src}: {where}: unknown field(s) {', '.join(unknown)}; allowed: the point columns of "
                         "perfbench/schema.py plus schema_version, created_at, extra_json (a file from a newer perfbench?)")
    if not _type_ok(p.get("schema_version"), int) or not _type_ok(p.get("created_at"), str):
        raise InputError(f"{src}: {where}: schema_version (a whole number) and created_at (text) are required")
    if p.get("status") not in ("ok", "failed"):
        raise InputError(f"{src}: {where}.status: one of ok, failed; got {p.get('status')!r}")
    samples = p.get("samples_json")
    if not isinstance(samples, list) or not all(_type_ok(x, float) or _type_ok(x, int) for x in samples) \
            or not all(math.isfinite(x) for x in samples):
        raise InputError(f"{src}: {where}.samples_json: expected a list of finite numbers (seconds)")
    for col, value in p.items():
        f = by_col.get(col)
        if f is None or value is None or f.kind == "json":
            continue
        try:
            if coerce_value(f, value) != value and not (f.kind == "bool" and value in (0, 1)):
                raise SchemaError(f"{f.name}: expected {f.kind}")
        except SchemaError as exc:
            raise InputError(f"{src}: {where}.{col}: expected a {f.kind} value, got {value!r:.80} ({exc})") from None
